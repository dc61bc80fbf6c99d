"""A smoke job stopped or disturbed as it is on a cluster: SIGTERM (what SLURM sends) in the
middle of training, a second launch of a job that is running, and a W&B server that does not
answer. Each runs its own shortened smoke job through the CLI."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from harness.core.layout import job_dir
from harness.core.profiles import SMOKE
from harness.core.state import read_curves, read_state
from tests.helpers import (
    REPO_ROOT,
    harness_cli,
    harness_popen,
    smoke_run_args,
    start_and_wait,
    wandb_history,
)

pytestmark = pytest.mark.e2e


def test_sigterm_saves_the_current_iteration_and_resumes_from_it(tmp_path, synthetic_root):
    """SIGTERM (what SLURM sends): the job checkpoints the iteration it is at, records
    'interrupted' and exits; the re-run resumes from that checkpoint and finishes."""
    table, row = 'table3', 'seg-s-32'
    work, reports = tmp_path / 'work', tmp_path / 'reports'
    n = 3 * SMOKE.checkpoint_interval  # room to stop between two periodic checkpoints
    args = (*smoke_run_args(table, row, work, reports, synthetic_root), '--max-iters', n,
            '--no-report')
    work_dir = job_dir(work, 'smoke', table, row, 0)
    proc = start_and_wait(args, work_dir, SMOKE.checkpoint_interval + SMOKE.log_interval)
    os.killpg(proc.pid, signal.SIGTERM)  # the launcher and the job, as SLURM signals a step
    assert proc.wait(timeout=120) != 0
    state = read_state(work_dir)
    assert state['status'] == 'interrupted'
    stopped_at = int(state['error'].split(' at iteration ')[1].split()[0])
    assert state['error'] == (f'Stopped: stopped by SIGTERM at iteration {stopped_at} '
                              f'(checkpoint iter_{stopped_at}.pth)')
    logged = int(read_curves(work_dir)[0].index.max())
    assert SMOKE.checkpoint_interval + SMOKE.log_interval <= logged <= stopped_at
    assert stopped_at < n
    checkpoint = work_dir / f'iter_{stopped_at}.pth'
    assert (work_dir / 'last_checkpoint').read_text().strip() == checkpoint.name
    # the stopped launcher still logged what the job said while it stopped
    assert f'Stop signal: saved iter_{stopped_at}.pth' in (work_dir / 'job.log').read_text()
    import torch

    from harness.runtime.safe_resume import enable_safe_resume
    enable_safe_resume()
    assert torch.load(checkpoint, weights_only=True)['meta']['iter'] == stopped_at

    result = harness_cli(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f'resuming from iter_{stopped_at}.pth' in result.stdout
    assert read_state(work_dir)['status'] == 'finished'
    assert f'Load checkpoint from {checkpoint}' in (work_dir / 'job.log').read_text()
    train, val = read_curves(work_dir)
    assert list(val.index) == [SMOKE.first_val, n]
    assert train.index.max() == n
    runs = sorted((work_dir / 'vis_data' / 'wandb').glob('offline-run-*'))
    resumed = {h['iter'] for h in wandb_history(runs[-1]) if 'loss' in h}
    assert min(resumed) > stopped_at


def test_second_launch_of_a_running_job_is_refused(tmp_path, synthetic_root):
    table, row = 'table3', 'seg-b-32'
    work, reports = tmp_path / 'work', tmp_path / 'reports'
    # long enough that the first job still runs while the second starts
    args = (*smoke_run_args(table, row, work, reports, synthetic_root), '--max-iters', 40,
            '--no-report')
    work_dir = job_dir(work, 'smoke', table, row, 0)
    first = harness_popen(*args)
    try:
        deadline = time.monotonic() + 300
        while read_state(work_dir).get('status') != 'running' and time.monotonic() < deadline:
            time.sleep(0.1)
        holder = read_state(work_dir)
        second = harness_cli(*args)
        assert second.returncode == 1
        assert f"already running (host {holder['host']}, pid {holder['pid']}), skipped" in \
            second.stdout
        assert read_state(work_dir)['pid'] == holder['pid']  # the owner's record is untouched
    finally:
        first.wait(timeout=600)
    assert first.returncode == 0 and read_state(work_dir)['status'] == 'finished'


def test_unreachable_wandb_server_falls_back_to_offline(tmp_path, synthetic_root):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    table, row = 'table3', 'seg-s-32'
    env = {**os.environ, 'PYTHONPATH': str(REPO_ROOT), 'WANDB_MODE': 'online',
           'WANDB_BASE_URL': f'http://127.0.0.1:{port}', 'WANDB_API_KEY': 'x' * 40,
           'WANDB_INIT_TIMEOUT': '5'}
    n = SMOKE.log_interval
    args = (*smoke_run_args(table, row, tmp_path / 'work', tmp_path / 'reports', synthetic_root),
            '--max-iters', n, '--no-report')
    result = subprocess.run([sys.executable, '-m', 'harness', *map(str, args)], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    work_dir = job_dir(tmp_path / 'work', 'smoke', table, row, 0)
    log = (work_dir / 'job.log').read_text()
    assert log.count('W&B unavailable') == 1 and 'logged offline instead' in log
    train, val = read_curves(work_dir)  # the local curves are complete
    assert list(val.index) == [SMOKE.first_val, n]
    assert train.index.max() == n
    (run_dir,) = (work_dir / 'vis_data' / 'wandb').glob('offline-run-*')
    assert {h['iter'] for h in wandb_history(run_dir) if 'mIoU' in h} == set(val.index)
