"""A smoke job disturbed as it is on a cluster: a second launch of a job that is running, and a
W&B server that does not answer (SIGTERM in the middle of training: tests/test_faults.py). Each
runs its own shortened smoke job through the CLI."""
import os
import socket
import time

import pytest

from harness.core.layout import job_dir
from harness.core.profiles import SMOKE
from harness.core.state import read_curves, read_state
from tests.helpers import (
    harness_cli,
    harness_popen,
    smoke_run_args,
    wandb_history,
)

pytestmark = pytest.mark.e2e


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
    env = {**os.environ, 'WANDB_MODE': 'online', 'WANDB_BASE_URL': f'http://127.0.0.1:{port}',
           'WANDB_API_KEY': 'x' * 40, 'WANDB_INIT_TIMEOUT': '5'}
    n = SMOKE.log_interval
    args = (*smoke_run_args(table, row, tmp_path / 'work', tmp_path / 'reports', synthetic_root),
            '--max-iters', n, '--no-report')
    # an interpreter of its own: W&B keeps its settings for the process it first ran in
    result = harness_cli(*args, env=env, fresh=True)
    assert result.returncode == 0, result.stdout + result.stderr
    work_dir = job_dir(tmp_path / 'work', 'smoke', table, row, 0)
    log = (work_dir / 'job.log').read_text()
    assert log.count('W&B unavailable') == 1 and 'logged offline instead' in log
    train, val = read_curves(work_dir)  # the local curves are complete
    assert list(val.index) == [SMOKE.first_val, n]
    assert train.index.max() == n
    (run_dir,) = (work_dir / 'vis_data' / 'wandb').glob('offline-run-*')
    assert {h['iter'] for h in wandb_history(run_dir) if 'mIoU' in h} == set(val.index)
