"""The job process: one JobRequest (a row x profile x seed, trained or evaluated) run by
mmengine's Runner.

``python -m harness.launch.job REQUEST_FILE`` (the request the launcher wrote into the job
folder) is what every launcher starts (alone, under torchrun or in a SLURM task). Rank 0 owns
the job folder: its lock, its state and the W&B run (``harness.core.layout`` names the files);
``harness.launch.job_records`` binds the job to its recipe.
"""
from __future__ import annotations

import dataclasses
import os
import secrets
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

from filelock import FileLock, Timeout

from ..core.atomic import remove_stale
from ..core.layout import CHECKPOINT_STAGING, CONFIG_FILE, LOCK_FILE, REPO_ROOT
from ..core.errors import DriftError, StateError
from ..core.state import FAILURE_PREFIX, UNREADABLE, read_state, write_state

EXIT_LOCKED = 75  # EX_TEMPFAIL: the job is running in another process


def job_command(request_file: Path, processes: int = 1) -> list[str]:
    """The job as one process, or as ``processes`` processes under torchrun on this machine."""
    job = ['-m', 'harness.launch.job', str(request_file)]
    if processes == 1:
        return [sys.executable, *job]
    # --standalone: a rendezvous on a free local port, so jobs never collide
    return [sys.executable, '-m', 'torch.distributed.run', '--standalone',
            f'--nproc-per-node={processes}', *job]


def job_env(request) -> dict:
    """The environment of a job process: offline W&B unless asked, the harness importable,
    smoke jobs on the CPU."""
    env = dict(os.environ)
    env.setdefault('WANDB_MODE', 'offline')
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get('PYTHONPATH')]))
    if request.profile == 'smoke':
        env['CUDA_VISIBLE_DEVICES'] = ''
    return env


def slurm_job_id() -> str:
    """This SLURM job's id as squeue and submitit name it: ``<array>_<index>`` in an array."""
    if 'SLURM_ARRAY_JOB_ID' in os.environ and 'SLURM_ARRAY_TASK_ID' in os.environ:
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ['SLURM_JOB_ID']


def error_summary(err: BaseException) -> str:
    """One line for the job's state: the line of the message that names the problem."""
    if isinstance(err, OSError) and err.filename2 is not None and err.strerror:
        # a copy or move (W&B's media into the run folder): where it was going is the place
        # that failed; the source (a temporary file elsewhere) only hides it
        err = type(err)(err.errno, err.strerror, err.filename2)
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if 'Unsupported global' in line]  # torch's safe loader
    if isinstance(err, KeyboardInterrupt):
        return 'stopped by Ctrl-C'
    return f'{type(err).__name__}: {(named or lines or [""])[0]}'[:300]


def _unrecorded(error: str, why: BaseException) -> None:
    """Say why the job failed where its launcher finds it, when its state cannot say it (a
    full disk): later output (W&B's goodbye, logging's own errors) must not bury it."""
    print(f'the job state could not be recorded: {why}', file=sys.stderr)
    print(f'{FAILURE_PREFIX}{error}', file=sys.stderr, flush=True)


def failure_line(text: str) -> str:
    """What a job that could not record its end said about it: its own failure line, else the
    last line of its output."""
    said = [line.strip() for line in text.splitlines() if line.startswith(FAILURE_PREFIX)]
    if said:
        return said[-1][len(FAILURE_PREFIX):][:300]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ''


def _on_stop_signal(signum, frame):
    """SIGTERM (a scheduler, ``kill``) or SIGUSR2 (submitit's warning before a timeout or a
    preemption): during training, stop after this iteration with a checkpoint; else now."""
    from ..runtime.preempt import Stopped, request_stop
    if not request_stop(signum):
        raise Stopped(signum)


def _init_distributed() -> None:
    """Start the process group of a torchrun / SLURM-task process (WORLD_SIZE > 1).

    mmengine's own init_dist always calls torch.cuda.set_device, which fails on CPU: the group
    is started here (NCCL on GPUs, gloo on CPU) and mmengine then uses it as it is."""
    if int(os.environ.get('WORLD_SIZE', 1)) > 1:
        import torch
        import torch.distributed as dist
        if not dist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
            dist.init_process_group('nccl' if torch.cuda.is_available() else 'gloo')


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print('usage: python -m harness.launch.job REQUEST_FILE (written by a launcher)',
              file=sys.stderr)
        return 2
    from ..core.request import JobRequest
    request = JobRequest.read(Path(argv[0]))
    for signum in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(signum, _on_stop_signal)
    os.environ.setdefault('WANDB_MODE', 'offline')
    work_dir = request.work_dir
    work_dir.mkdir(parents=True, exist_ok=True)
    rank, world = int(os.environ.get('RANK', 0)), int(os.environ.get('WORLD_SIZE', 1))
    # rank 0 alone owns the job folder's state, its lock and the W&B run
    record = write_state if rank == 0 else (lambda work_dir, **fields: fields)
    if rank == 0:
        # one owner per job; the OS drops the lock of a dead process, so a stale one never blocks
        lock = FileLock(work_dir / LOCK_FILE, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            holder = read_state(work_dir)
            print(f"error: {request.name} is already running "
                  f"(host {holder.get('host')}, pid {holder.get('pid')})", file=sys.stderr)
            return EXIT_LOCKED
        # the owner now: temporary files of processes that are gone (a save cut short by a
        # kill) are never finished by anyone
        remove_stale(work_dir)
        if (work_dir / CHECKPOINT_STAGING).is_dir():
            remove_stale(work_dir / CHECKPOINT_STAGING)
    state = read_state(work_dir)
    if state.get('status') == UNREADABLE:  # never written over: it is all the job's record
        if rank == 0:
            print(f"error: {request.name}: {state['error']}; not started (repair the file, or "
                  "move it aside to resume the job from its checkpoints)", file=sys.stderr)
        return 2
    row = request.row
    run_id = (state.get('wandb_run_id')  # one W&B run per job, across restarts
              or f'{row.table}-{row.id}-s{request.seed}-{secrets.token_hex(3)}')
    slurm = {'slurm_job_id': slurm_job_id()} if 'SLURM_JOB_ID' in os.environ else {}
    try:
        record(work_dir, table=row.table, row=row.id, profile=request.profile,
               seed=request.seed, status='running', host=socket.gethostname(), pid=os.getpid(),
               started=time.time(), wandb_run_id=run_id, starts=state.get('starts', 0) + 1,
               error=None, refused=None, **slurm)
    except (OSError, StateError) as unrecorded:  # a full disk: the launcher records it
        _unrecorded(error_summary(unrecorded), unrecorded)
        return 1
    try:
        _init_distributed()
        from mmengine.runner import Runner

        from .. import runtime  # noqa: F401 - importing it allow-lists mmengine's checkpoint types
        from ..prepare.job_config import build_config
        from .provenance import changes_during
        from .job_records import (
            freeze_or_check,
            resume_point,
            result_record,
            start_entry,
        )

        request = dataclasses.replace(request, gpus=world, wandb_run_id=run_id)
        if request.checkpoint_sha256 is not None:  # before anything is frozen from its bytes
            check_checkpoint(request.checkpoint, request.checkpoint_sha256)
        cfg, frozen, drift, now = freeze_or_check(request, build_config(request), work_dir,
                                                  write=rank == 0)
        recipe = frozen['fingerprint']
        resume = resume_point(work_dir) if request.kind == 'train' else None
        if request.kind == 'train':  # from the file chosen here, never a pointer's old path
            cfg.resume, cfg.load_from = resume is not None, str(resume) if resume else None
        loader = _feed_loaders(cfg)
        start = {**start_entry(resume, recipe, drift, now['code']), 'processes': world}
        history = [*(state.get('history') or []), start]  # appended, never rewritten
        # what trained: the first start's request, precision and inputs (a restart that
        # accepted a drift goes on with them), this start's request beside them
        first = frozen.get('request') or request.to_json()
        inputs = frozen.get('inputs') or now['inputs']
        meta = {'table': row.table, 'row': row.id, 'model': row.model,
                'profile': request.profile, 'seed': request.seed, 'processes': world,
                'amp': first.get('amp'), 'request': first, 'start_request': request.to_json(),
                'git': start['git'], 'versions': start['versions'],
                'hardware': start['hardware'], 'dataset': inputs['dataset'],
                'inputs': inputs['files'], 'recipe': recipe, 'history': history,
                'changed_during_job': changes_during(history), 'loader': loader}
        # the W&B run reads meta from the job's state when the Runner starts it
        record(work_dir, meta=meta, gpus=world, history=history,
               wandb_run=f'{request.wandb_project}/{run_id}',
               **({'drift': {'accepted': drift, 'recipe': recipe}} if drift else {}))
        if world > 1:
            _distribute(cfg)
        if rank == 0:
            cfg.dump(work_dir / CONFIG_FILE)
        runner = Runner.from_cfg(cfg)
        if request.kind == 'train':
            runner.train()
        else:
            metrics = evaluate(runner, request.checkpoint)
        record(work_dir, measured=measured(runner))
    except BaseException as err:  # noqa: BLE001 - record every way a job can end, then re-raise
        error = error_summary(err)
        failed = isinstance(err, Exception)  # not Ctrl-C / SystemExit: those resume next time
        # a restart refused for drift: the launcher's advice is --accept-drift, not a re-run
        refused = {'refused': 'drift'} if isinstance(err, DriftError) else {}
        try:
            record(work_dir, status='failed' if failed else 'interrupted', error=error,
                   finished=time.time(), **refused)
            unrecorded = None
        except (OSError, StateError) as not_written:  # a full disk: the launcher records it
            unrecorded = not_written
        if failed:  # its last line says why the job failed
            traceback.print_exc()
        if unrecorded is not None:  # said after the traceback: the launcher keeps the last lines
            _unrecorded(error, unrecorded)
        if failed:
            return 1
        raise
    try:
        if rank == 0:  # the result record, once; then the state says the job finished
            from ..core.result import write_result
            write_result(work_dir, result_record(
                request, work_dir, frozen, read_state(work_dir),
                metrics if request.kind == 'evaluate' else None))
    except (OSError, StateError) as err:
        error = f'the result record could not be written: {err}'
        print(error, file=sys.stderr)
        try:
            record(work_dir, status='failed', error=error[:300], finished=time.time())
        except (OSError, StateError) as unrecorded:
            _unrecorded(error[:300], unrecorded)
        return 1
    record(work_dir, status='finished', finished=time.time(),
           **({'metrics': metrics} if request.kind == 'evaluate' else {}))
    return 0


def _feed_loaders(cfg) -> dict:
    """Pinned memory for the loaders where batches go to a GPU; what the loaders got, for the
    job's record."""
    import torch

    from ..core.allocation import loader_workers
    pinned = torch.cuda.is_available()
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].pin_memory = pinned
    _, source = loader_workers(int(os.environ.get('WORLD_SIZE', 1)))
    return {'workers': cfg.train_dataloader.num_workers, 'pin_memory': pinned,
            'cpus': source}


def _distribute(cfg) -> None:
    """mmengine distributed training in the process group ``_init_distributed`` started."""
    import torch
    cfg.launcher = 'pytorch'
    if not torch.cuda.is_available():  # DDP on CPU takes no device ids (mmengine passes some)
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)


def _summary(values: list[float]) -> dict:
    """A timer's record: the first value apart (warm-up: allocation, kernel choice, caches)."""
    import statistics
    rest = values[1:]
    return {'count': len(values), 'first': values[0], 'mean': statistics.fmean(values),
            'steady_median': statistics.median(rest) if rest else None}


def measured(runner) -> dict:
    """What this process measured of itself, from mmengine's own records (seconds per
    iteration, data waiting included, per phase: mmengine's IterTimerHook; the training loss),
    the checkpoint saves, the sliding windows evaluated and the peak memory (GPU: max
    allocated; CPU: RSS). A resumed job's records include those restored from its checkpoint."""
    import resource

    import torch
    found = {}
    for key, buffer in runner.message_hub.log_scalars.items():
        name = key.rpartition('/')[2]
        if name in ('time', 'data_time', 'save_time') and buffer.data[0].size:
            found[key] = _summary([float(v) for v in buffer.data[0]])
        elif key == 'train/loss' and buffer.data[0].size:
            found[key] = {'count': int(buffer.data[0].size), 'first': float(buffer.data[0][0]),
                          'last': float(buffer.data[0][-1])}
    model = getattr(runner.model, 'module', runner.model)
    model = getattr(model, 'module', model)  # multi-scale: the TTA wrapper's segmentor
    found['windows'] = getattr(model, 'windows_evaluated', None)
    found['images_evaluated'] = getattr(model, 'images_evaluated', None)
    if torch.cuda.is_available():
        found['peak_memory'] = {'bytes': torch.cuda.max_memory_allocated(),
                                'kind': 'GPU max allocated',
                                'device_total': torch.cuda.get_device_properties(0).total_memory}
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes
        found['peak_memory'] = {'bytes': rss, 'kind': 'process peak RSS'}
    return found


def check_checkpoint(checkpoint: Path, sha256: str) -> None:
    """Refuse, in one line, a checkpoint whose bytes are not the ones the evaluation was asked
    for (the training's record, or the released file as it was hashed at launch)."""
    from ..core.hashing import sha256_file
    if sha256_file(checkpoint, cache=None) != sha256:
        raise StateError(f'{checkpoint}: its SHA-256 is not {sha256[:16]}, the one this '
                         'evaluation was asked for (the file changed since); not evaluated')


def evaluate(runner, checkpoint: Path) -> dict:
    """Test metrics of ``checkpoint`` (its bytes checked at the job's start), loaded strictly
    (mmengine's load_from is lenient, so a checkpoint of another model would be evaluated
    half-random without failing). mmengine loads into the model that SegTTAModel wraps by
    itself."""
    runner.load_checkpoint(str(checkpoint), strict=True, revise_keys=[])
    return {key: float(value) for key, value in runner.test().items()}


if __name__ == '__main__':
    sys.exit(main())
