"""One job = one row x profile x seed, trained by mmengine's Runner in its own process.

``python -m harness.job --table T --row R --profile P --seed K --work-dir D [--data-root ...]``
is what the launcher runs. The job folder holds ``job.json`` (state), the curves
(``vis_data/scalars.json``), the W&B run (``vis_data/wandb``), checkpoints and logs.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

from filelock import FileLock, Timeout

from .spec import REPO_ROOT

STATE_FILE = 'job.json'
LOCK_FILE = '.lock'
EXIT_LOCKED = 75  # EX_TEMPFAIL: the job is running in another process
CURVES_FILE = Path('vis_data') / 'scalars.json'


def job_dir(work_root: Path, profile: str, table: str, row: str, seed: int) -> Path:
    return Path(work_root) / profile / table / row / f'seed{seed}'


def ours_eval_dir(trained: Path, multi_scale: bool) -> Path:
    """Where the evaluation of a trained job's last checkpoint lives (inside its folder)."""
    return Path(trained) / ('eval-multi-scale' if multi_scale else 'eval-single-scale')


def read_state(work_dir: Path) -> dict:
    try:
        return json.loads((Path(work_dir) / STATE_FILE).read_text())
    except FileNotFoundError:
        return {}


def write_state(work_dir: Path, **fields) -> dict:
    """Merge ``fields`` into job.json, atomically (a reader never sees half a file)."""
    path = Path(work_dir) / STATE_FILE
    state = {**read_state(work_dir), **fields, 'updated': time.time()}
    tmp = path.with_name(f'.{path.name}.{os.getpid()}')
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)
    return state


def error_summary(err: BaseException) -> str:
    """One line for job.json: the line of the message that names the problem."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if 'Unsupported global' in line]  # torch's safe loader
    if isinstance(err, KeyboardInterrupt):
        return 'stopped by Ctrl-C'
    return f'{type(err).__name__}: {(named or lines or [""])[0]}'[:300]


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ''


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='python -m harness.job', description=__doc__.splitlines()[0])
    p.add_argument('--table', required=True)
    p.add_argument('--row', required=True)
    p.add_argument('--profile', required=True)
    p.add_argument('--seed', type=int, required=True)
    p.add_argument('--work-dir', type=Path, required=True)
    p.add_argument('--data-root', type=Path, required=True)
    p.add_argument('--wandb-project', default='segmenter-repro')
    p.add_argument('--weights-root', type=Path, default=REPO_ROOT)
    p.add_argument('--checkpoint', type=Path, help='evaluate this model (no training)')
    p.add_argument('--multi-scale', action='store_true', help='with --checkpoint')
    p.add_argument('--amp', choices=('bf16', 'fp16', 'tf32'), help='reduced-precision training')
    return p.parse_args(argv)


def _on_stop_signal(signum, frame):
    """SIGTERM (a scheduler, ``kill``) or SIGUSR2 (submitit's warning before a timeout or a
    preemption): during training, stop after this iteration with a checkpoint; else now."""
    from .preempt import Stopped, request_stop
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
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(signum, _on_stop_signal)
    os.environ.setdefault('WANDB_MODE', 'offline')
    args.work_dir.mkdir(parents=True, exist_ok=True)
    rank, world = int(os.environ.get('RANK', 0)), int(os.environ.get('WORLD_SIZE', 1))
    # rank 0 alone owns the job folder's state, its lock and the W&B run
    record = write_state if rank == 0 else (lambda work_dir, **fields: fields)
    if rank == 0:
        # one owner per job; the OS drops the lock of a dead process, so a stale one never blocks
        lock = FileLock(args.work_dir / LOCK_FILE, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            holder = read_state(args.work_dir)
            print(f"error: {args.table}/{args.row} seed{args.seed} is already running "
                  f"(host {holder.get('host')}, pid {holder.get('pid')})", file=sys.stderr)
            return EXIT_LOCKED
    state = read_state(args.work_dir)
    run_id = (state.get('wandb_run_id')  # one W&B run per job, across restarts
              or f'{args.table}-{args.row}-s{args.seed}-{secrets.token_hex(3)}')
    slurm = {'slurm_job_id': os.environ['SLURM_JOB_ID']} if 'SLURM_JOB_ID' in os.environ else {}
    record(args.work_dir, table=args.table, row=args.row, profile=args.profile,
           seed=args.seed, status='running', host=socket.gethostname(), pid=os.getpid(),
           started=time.time(), wandb_run_id=run_id, starts=state.get('starts', 0) + 1,
           error=None, **slurm)
    try:
        _init_distributed()
        from mmengine.runner import Runner

        from .profiles import JobSpec, build_config
        from .spec import load_table
        from .tracking import (
            dataset_identity,
            enable_safe_resume,
            git_state,
            hardware,
            package_versions,
        )

        row = load_table(args.table).row(args.row)
        job = JobSpec(row=row, profile=args.profile, seed=args.seed, work_dir=args.work_dir,
                      data_root=args.data_root, gpus=world,
                      weights_root=args.weights_root,
                      wandb_project=args.wandb_project, wandb_run_id=run_id,
                      checkpoint=args.checkpoint, multi_scale=args.multi_scale,
                      amp=args.amp)
        meta = {'table': row.table, 'row': row.id, 'model': row.model, 'profile': args.profile,
                'seed': args.seed, 'processes': world, 'amp': args.amp, 'git': git_state(),
                'versions': package_versions(), 'hardware': hardware(),
                'dataset': dataset_identity(args.data_root)}
        record(args.work_dir, meta=meta, gpus=world, wandb_run=f'{args.wandb_project}/{run_id}')
        cfg = build_config(job)  # the W&B run reads meta from job.json
        if world > 1:
            _distribute(cfg)
        if rank == 0:
            cfg.dump(args.work_dir / 'job_config.py')
        enable_safe_resume()
        runner = Runner.from_cfg(cfg)
        if args.checkpoint is None:
            runner.train()
        else:
            metrics = evaluate(runner, args.checkpoint)
    except BaseException as err:  # noqa: BLE001 - record every way a job can end, then re-raise
        error = error_summary(err)
        failed = isinstance(err, Exception)  # not Ctrl-C / SystemExit: those resume next time
        record(args.work_dir, status='failed' if failed else 'interrupted', error=error,
               finished=time.time())
        if failed:
            traceback.print_exc()
            return 1
        raise
    record(args.work_dir, status='finished', finished=time.time(),
           **({'metrics': metrics} if args.checkpoint else {}))
    return 0


def _distribute(cfg) -> None:
    """mmengine distributed training in the process group ``_init_distributed`` started."""
    import torch
    cfg.launcher = 'pytorch'
    if not torch.cuda.is_available():  # DDP on CPU takes no device ids (mmengine passes some)
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)


def evaluate(runner, checkpoint: Path) -> dict:
    """Test metrics of ``checkpoint``, loaded strictly (mmengine's load_from is lenient, so a
    checkpoint of another model would be evaluated half-random without failing). mmengine
    loads into the model that SegTTAModel wraps by itself."""
    runner.load_checkpoint(str(checkpoint), strict=True, revise_keys=[])
    return {key: float(value) for key, value in runner.test().items()}


if __name__ == '__main__':
    sys.exit(main())
