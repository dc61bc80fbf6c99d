"""Launch: run every selected row x seed of a table as its own job.

Launchers: ``local`` (one process per job, one job after another), ``torchrun`` (each job is
``--gpus`` processes on this machine sharing the total batch), ``slurm`` (each job a SLURM job,
submitted through submitit, see ``harness/slurm.py``). Finished jobs are skipped; interrupted or
failed ones are started again and resume from their last checkpoint. A crashing job is
recorded and the next one starts.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from filelock import FileLock, Timeout

from .collect import read_curves
from .data import ADE20K_COUNTS
from .job import (
    EXIT_LOCKED,
    LOCK_FILE,
    job_dir,
    last_line,
    ours_eval_dir,
    read_state,
    write_state,
)
from .profiles import TOTAL_BATCH
from .spec import REPO_ROOT, Row, table_arg


LAUNCHERS = ('local', 'torchrun', 'slurm')


class PreflightError(RuntimeError):
    """Something a full run needs is missing; the message is one line."""


def preflight_full(rows: list[Row], data_root: Path, gpus: int,
                   weights_root: Path = REPO_ROOT) -> None:
    """Check data, weights and GPU count before any full job starts training."""
    if TOTAL_BATCH % gpus:
        raise PreflightError(f'--gpus {gpus} does not divide the total batch {TOTAL_BATCH}')
    for split in ADE20K_COUNTS:
        for kind in ('images', 'annotations'):
            folder = Path(data_root) / kind / split
            if not folder.is_dir():
                raise PreflightError(
                    f'ADE20K not found: no {folder} (download ADEChallengeData2016.zip from '
                    'http://data.csail.mit.edu/places/ADEchallenge/ and unzip it there, or set '
                    'ADE20K_ROOT=/path/to/ADEChallengeData2016)')
    for row in rows:
        weights = Path(weights_root) / row.pretrained_file
        if not weights.is_file():
            origin = (f'convert the {row.pretrained_id} release with `python -m harness '
                      f'convert-pretrained FILE --table {row.table} --row {row.id}`'
                      if row.pretrained_id else
                      'no public release matches the paper\'s: supply your own file there')
            raise PreflightError(f'{row.table}/{row.id}: pretrained weights missing: '
                                 f'{row.pretrained_file} ({origin})')


def check_configs(rows: list[Row], profile: str, gpus: int = 1,
                  weights_root: Path = REPO_ROOT) -> None:
    """Build each row's job config and model (random init, nothing loaded) before any job
    starts: a config that cannot build stops the run with one line instead of failing in the
    job process, after the rows before it have run."""
    import warnings

    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    from .profiles import JobSpec, build_config
    register_all_modules()
    for row in rows:
        try:
            with warnings.catch_warnings():  # mmseg's deprecation notes are no finding here
                warnings.simplefilter('ignore')
                cfg = build_config(JobSpec(row=row, profile=profile, seed=0,
                                           work_dir=Path('.'), data_root=Path('.'), gpus=gpus,
                                           weights_root=weights_root))
                cfg.model.pretrained = None
                MODELS.build(cfg.model)
        except Exception as err:  # noqa: BLE001 - whatever mmengine/mmseg raise, one line
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            raise PreflightError(f'{row.table}/{row.id}: config {row.config} does not build: '
                                 f'{type(err).__name__}: {(lines or [""])[0][:200]}') from None


def check_writable(folder: Path) -> None:
    """The work root takes job folders: refuse before any job starts when it cannot."""
    import tempfile
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise PreflightError(f'cannot write to the work dir {folder}: '
                             f'{err.strerror or err}') from None


def _resume_note(work_dir: Path) -> str:
    """What a restarted job continues from (mmengine resumes from ``last_checkpoint``)."""
    pointer = work_dir / 'last_checkpoint'
    if pointer.is_file():
        return f' (resuming from {Path(pointer.read_text().strip()).name})'
    return ' (restarting: no checkpoint yet)' if read_state(work_dir) else ''


def released_dir(work_root: Path, table: str, row: str, multi_scale: bool) -> Path:
    """Where the evaluation of a row's released checkpoint lives."""
    return job_dir(work_root, 'released-ms' if multi_scale else 'released-ss', table, row, 0)


def _job_args(row: Row, profile: str, seed: int, work_dir: Path, data_root: Path,
              wandb_project: str, weights_root: Path, checkpoint: Path | None = None,
              multi_scale: bool = False, amp: str | None = None) -> list[str]:
    """Arguments of ``python -m harness.job`` for one job."""
    args = ['--table', table_arg(row), '--row', row.id, '--profile', profile, '--seed', str(seed),
            '--work-dir', str(work_dir), '--data-root', str(data_root),
            '--wandb-project', wandb_project, '--weights-root', str(weights_root)]
    if checkpoint is not None:
        args += ['--checkpoint', str(checkpoint)] + (['--multi-scale'] if multi_scale else [])
    elif amp:
        args += ['--amp', amp]
    return args


def _local_command(job_args: list[str], nproc: int) -> list[str]:
    """The job as one process, or as ``nproc`` processes under torchrun on this machine."""
    if nproc == 1:
        return [sys.executable, '-m', 'harness.job', *job_args]
    # --standalone: a rendezvous on a free local port, so jobs never collide
    return [sys.executable, '-m', 'torch.distributed.run', '--standalone',
            f'--nproc-per-node={nproc}', '-m', 'harness.job', *job_args]


def _held_elsewhere(work_dir: Path) -> bool:
    """Whether another process owns the job (torchrun hides the job's own exit code)."""
    if not (work_dir / LOCK_FILE).exists():
        return False
    lock = FileLock(work_dir / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    lock.release()
    return False


STOP_WAIT_S = 120  # a stopped job saves a checkpoint first (torchrun kills after 30 s)


def _run_one(cmd: list[str], work_dir: Path, env: dict, verbose: bool) -> int:
    """Run one job process, its output teed to ``job.log`` (and the terminal when verbose) by a
    thread, so that a stopped launcher still records what the job says while it stops."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with open(work_dir / 'job.log', 'ab') as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)

        def tee():
            for chunk in iter(proc.stdout.readline, b''):
                log.write(chunk)
                log.flush()
                if verbose:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()

        copier = threading.Thread(target=tee, daemon=True)
        copier.start()
        try:
            rc = proc.wait()
        except BaseException as err:
            # Ctrl-C reached the job too; SIGTERM stopped the launcher alone: pass it on.
            # Either way the job saves a checkpoint and records its state before it exits.
            if not isinstance(err, KeyboardInterrupt):
                proc.terminate()
            try:
                proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            copier.join(timeout=10)
            raise
        copier.join()
    return rc


def run_jobs(rows: list[Row], profile: str, seeds: int, work_root: Path, data_root: Path,
             gpus: int = 1, wandb_project: str = 'segmenter-repro', verbose: bool = False,
             cpu: bool = False, weights_root: Path = REPO_ROOT,
             checkpoints: Path | None = None, multi_scale: bool = False,
             ours: bool = False, amp: str | None = None, launcher: str = 'local',
             slurm=None) -> int:
    """Run rows x seeds; with ``checkpoints``, evaluate ``<checkpoints>/<row>.pth`` of each row
    instead, or with ``ours`` the last checkpoint of each finished row x seed. ``gpus``:
    processes per job (torchrun) or per node (slurm, with ``slurm``, a ``SlurmOptions``).
    Return the number of jobs that did not finish (slurm without waiting: that were not
    submitted)."""
    env = dict(os.environ)
    env.setdefault('WANDB_MODE', 'offline')
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get('PYTHONPATH')]))
    if cpu:
        env['CUDA_VISIBLE_DEVICES'] = ''
    jobs = [(row, seed) for row in rows for seed in range(seeds)]
    failed, to_submit = 0, []
    for n, (row, seed) in enumerate(jobs, 1):
        checkpoint = None
        if ours:
            trained = job_dir(work_root, profile, row.table, row.id, seed)
            pointer = trained / 'last_checkpoint'
            if read_state(trained).get('status') != 'finished' or not pointer.is_file():
                print(f'[{n}/{len(jobs)}] {row.table}/{row.id} seed{seed}: not trained yet, '
                      'skipped')
                continue
            checkpoint = Path(pointer.read_text().strip())
            work_dir = ours_eval_dir(trained, multi_scale)
        elif checkpoints is not None:
            checkpoint = Path(checkpoints) / f'{row.id}.pth'
            work_dir = released_dir(work_root, row.table, row.id, multi_scale)
            if not checkpoint.is_file():
                print(f'[{n}/{len(jobs)}] {row.table}/{row.id}: no {checkpoint}, skipped')
                continue
        else:
            work_dir = job_dir(work_root, profile, row.table, row.id, seed)
        tag = f'[{n}/{len(jobs)}] {row.table}/{row.id} seed{seed}'
        state = read_state(work_dir)
        if state.get('status') == 'finished':
            print(f'{tag}: finished before, skipped', flush=True)
            continue
        if _held_elsewhere(work_dir):
            failed += 1
            print(f"{tag}: already running (host {state.get('host')}, pid {state.get('pid')}),"
                  ' skipped', flush=True)
            continue
        job_args = _job_args(row, profile, seed, work_dir, data_root, wandb_project,
                             weights_root, checkpoint, multi_scale, amp)
        if launcher == 'slurm':
            to_submit.append((tag, work_dir, job_args))
            continue
        action = f'evaluating {checkpoint}' if checkpoint else f'training{_resume_note(work_dir)}'
        print(f'{tag}: {action} -> {work_dir}', flush=True)
        start = time.monotonic()
        rc = _run_one(_local_command(job_args, gpus if launcher == 'torchrun' else 1),
                      work_dir, env, verbose)
        failed += not _report(tag, work_dir, rc, time.monotonic() - start)
    if to_submit:
        from . import slurm as slurm_launch
        submitted = slurm_launch.submit(to_submit, slurm, env)
        failed += len(to_submit) - len(submitted)
        if not slurm.wait:
            print(f'{len(submitted)} SLURM job(s) submitted; `python -m harness status` follows '
                  'them', flush=True)
            return failed
        took = slurm_launch.wait(submitted)
        for tag, work_dir, job in submitted:
            state = read_state(work_dir)
            rc = 0 if state.get('status') == 'finished' else 1
            failed += not _report(tag, work_dir, rc, took[work_dir],
                                  log=work_dir / 'slurm' / f'{job.job_id}_0_log.err')
    return failed


def _report(tag: str, work_dir: Path, rc: int, took: float, log: Path | None = None) -> bool:
    """Print how one job ended (recording a death it could not record itself); True when
    it finished."""
    log = log or work_dir / 'job.log'
    state = read_state(work_dir)
    if rc == 0 and state.get('status') == 'finished':
        _, val = read_curves(work_dir)
        if 'metrics' in state:
            miou = f"mIoU {state['metrics']['mIoU']:.2f}"
        else:
            miou = f"mIoU {val['mIoU'].iloc[-1]:.2f}" if len(val) else 'no evaluation'
        print(f'{tag}: finished in {took:.0f}s, {miou}', flush=True)
        return True
    if rc == EXIT_LOCKED:  # another process owns this job: leave its state alone
        print(f"{tag}: already running (host {state.get('host')}, pid {state.get('pid')}),"
              ' skipped', flush=True)
        return False
    if state.get('status') in ('running', 'queued'):  # died before it could record anything
        log_tail = (work_dir / 'job.log').read_text(errors='replace')[-4000:] \
            if (work_dir / 'job.log').is_file() else ''
        state = write_state(work_dir, status='failed',
                            error=last_line(log_tail) or f'exit code {rc}')
    # one line on stderr per job that did not finish, naming its problem
    print(f"error: {tag.split('] ', 1)[-1]} {state.get('status')} after {took:.0f}s "
          f"(exit {rc}): {state.get('error')} -- log: {log}", file=sys.stderr, flush=True)
    return False
