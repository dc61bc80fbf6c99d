"""Launch: run every selected row x seed of a table as its own job process, one after another.

Finished jobs are skipped; interrupted or failed ones are started again and resume from their
last checkpoint. A crashing job is recorded and the next one starts.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from .collect import read_curves
from .data import ADE20K_COUNTS
from .job import EXIT_LOCKED, job_dir, last_line, ours_eval_dir, read_state, write_state
from .profiles import TOTAL_BATCH
from .spec import REPO_ROOT, Row, table_arg


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


def _job_command(row: Row, profile: str, seed: int, work_dir: Path, data_root: Path,
                 gpus: int, wandb_project: str, weights_root: Path,
                 checkpoint: Path | None = None, multi_scale: bool = False,
                 amp: str | None = None) -> list[str]:
    cmd = [sys.executable, '-m', 'harness.job', '--table', table_arg(row), '--row', row.id,
           '--profile', profile, '--seed', str(seed), '--work-dir', str(work_dir),
           '--data-root', str(data_root), '--gpus', str(gpus),
           '--wandb-project', wandb_project, '--weights-root', str(weights_root)]
    if checkpoint is not None:
        cmd += ['--checkpoint', str(checkpoint)] + (['--multi-scale'] if multi_scale else [])
    elif amp:
        cmd += ['--amp', amp]
    return cmd


def _run_one(cmd: list[str], work_dir: Path, env: dict, verbose: bool) -> int:
    """Run one job process, its output teed to ``job.log`` (and the terminal when verbose)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with open(work_dir / 'job.log', 'ab') as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            for chunk in iter(proc.stdout.readline, b''):
                log.write(chunk)
                if verbose:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
        except KeyboardInterrupt:  # Ctrl-C reached the job too: let it record its state
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        except BaseException:  # the launcher alone is stopped (SIGTERM): stop the job with it
            proc.terminate()
            proc.wait()
            raise
    return proc.wait()


def run_jobs(rows: list[Row], profile: str, seeds: int, work_root: Path, data_root: Path,
             gpus: int = 1, wandb_project: str = 'segmenter-repro', verbose: bool = False,
             cpu: bool = False, weights_root: Path = REPO_ROOT,
             checkpoints: Path | None = None, multi_scale: bool = False,
             ours: bool = False, amp: str | None = None) -> int:
    """Run rows x seeds; with ``checkpoints``, evaluate ``<checkpoints>/<row>.pth`` of each row
    instead, or with ``ours`` the last checkpoint of each finished row x seed. Return the number
    of jobs that did not finish."""
    env = dict(os.environ)
    env.setdefault('WANDB_MODE', 'offline')
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get('PYTHONPATH')]))
    if cpu:
        env['CUDA_VISIBLE_DEVICES'] = ''
    jobs = [(row, seed) for row in rows for seed in range(seeds)]
    failed = 0
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
        action = f'evaluating {checkpoint}' if checkpoint else f'training{_resume_note(work_dir)}'
        print(f'{tag}: {action} -> {work_dir}', flush=True)
        start = time.monotonic()
        rc = _run_one(_job_command(row, profile, seed, work_dir, data_root, gpus, wandb_project,
                                   weights_root, checkpoint, multi_scale, amp),
                      work_dir, env, verbose)
        took = time.monotonic() - start
        state = read_state(work_dir)
        if rc == 0 and state.get('status') == 'finished':
            _, val = read_curves(work_dir)
            if 'metrics' in state:
                miou = f"mIoU {state['metrics']['mIoU']:.2f}"
            else:
                miou = f"mIoU {val['mIoU'].iloc[-1]:.2f}" if len(val) else 'no evaluation'
            print(f'{tag}: finished in {took:.0f}s, {miou}', flush=True)
            continue
        failed += 1
        if rc == EXIT_LOCKED:  # another process owns this job: leave its state alone
            print(f"{tag}: already running (host {state.get('host')}, pid {state.get('pid')}),"
                  ' skipped', flush=True)
            continue
        if state.get('status') == 'running':  # killed before it could record anything
            log_tail = (work_dir / 'job.log').read_text(errors='replace')[-4000:]
            state = write_state(work_dir, status='failed',
                                error=last_line(log_tail) or f'exit code {rc}')
        # one line on stderr per job that did not finish, naming its problem
        print(f"error: {row.table}/{row.id} seed{seed} {state.get('status')} after {took:.0f}s "
              f"(exit {rc}): {state.get('error')} -- log: {work_dir / 'job.log'}",
              file=sys.stderr, flush=True)
    return failed
