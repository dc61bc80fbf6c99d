"""Launchers: a smoke job as two torchrun processes (gloo on CPU), and a smoke job submitted to a
real one-node SLURM cluster (slurmctld + slurmd + munged started here) through submitit."""
import re
import socket
import subprocess
import sys
import time

import pytest

from harness.layout import read_curves
from harness.layout import job_dir, read_state
from harness.prepare.job_config import SMOKE
from harness.prepare.request import TOTAL_BATCH
from tests.conftest import REPO_ROOT, harness_cli, wandb_history
from tests.slurm_cluster import ClusterError, SlurmCluster


def _run_args(table, row, tmp_path, data, *extra):
    return ('run', '--table', table, '--rows', row, '--profile', 'smoke', '--work-root',
            tmp_path / 'work', '--reports', tmp_path / 'reports', '--data-root', data,
            '--no-report', *extra)


def _assert_trained(work_dir, processes):
    state = read_state(work_dir)
    assert state['status'] == 'finished' and state['gpus'] == processes
    train, val = read_curves(work_dir)
    assert list(val.index) == [SMOKE.first_val, SMOKE.max_iters]
    assert train.index.max() == SMOKE.max_iters
    assert val['mIoU'].iloc[-1] > val['mIoU'].iloc[0] + 5  # it learned
    # rank 0's W&B run alone, one offline folder per start of the job
    runs = sorted((work_dir / 'vis_data' / 'wandb').glob('offline-run-*'))
    assert len(runs) == state['starts'] and all(r.name.endswith(state['wandb_run_id'])
                                                for r in runs)
    assert {h['iter'] for r in runs for h in wandb_history(r) if 'mIoU' in h} == set(val.index)
    config = (work_dir / 'job_config.py').read_text()
    per_process = TOTAL_BATCH // processes
    train_loader = config[config.index('train_dataloader = dict('):]
    assert re.search(r'^    batch_size=(\d+),', train_loader, re.M).group(1) == str(per_process)
    return state


def test_torchrun_two_processes_share_the_batch(tmp_path, synthetic_root):
    table, row = 'table3', 'seg-t-16'
    result = harness_cli(*_run_args(table, row, tmp_path, synthetic_root,
                                    '--launcher', 'torchrun', '--gpus', 2))
    assert result.returncode == 0, result.stdout + result.stderr
    work_dir = job_dir(tmp_path / 'work', 'smoke', table, row, 0)
    _assert_trained(work_dir, processes=2)
    config = (work_dir / 'job_config.py').read_text()
    assert "launcher = 'pytorch'" in config and 'device_ids=None' in config
    log = (work_dir / 'job.log').read_text()
    assert 'Distributed launcher: pytorch' in log and 'Distributed training: True' in log
    assert 'GPU number: 2' in log  # mmengine's name for the world size


def test_bad_launcher_arguments_are_one_line_errors(tmp_path, synthetic_root):
    for extra, message in [(('--gpus', 2), 'needs --launcher torchrun or slurm'),
                           (('--launcher', 'torchrun', '--gpus', 3), 'do not divide'),
                           (('--nodes', 2), '--nodes needs --launcher slurm')]:
        result = harness_cli(*_run_args('table3', 'seg-t-16', tmp_path, synthetic_root, *extra))
        assert result.returncode == 2 and result.stdout == ''
        assert result.stderr.count('\n') == 1 and message in result.stderr


@pytest.fixture(scope='session')
def slurm_cluster(tmp_path_factory):
    """A real one-node SLURM on 127.0.0.1; its daemons are stopped by pid file afterwards."""
    cluster = SlurmCluster(tmp_path_factory.mktemp('slurm'))
    try:
        took = cluster.start()
    except (ClusterError, OSError, subprocess.SubprocessError) as err:
        cluster.stop()
        pytest.fail(f'could not start SLURM: {err}', pytrace=False)
    print(f'SLURM node idle {took:.1f} s after start')
    yield cluster
    cluster.stop()


def _slurm(cluster, *args):
    return subprocess.run(args, env=cluster.env, capture_output=True, text=True, timeout=60)


def test_slurm_job_is_preempted_requeued_and_completes(tmp_path, synthetic_root, slurm_cluster):
    """One smoke job submitted by the harness to a real slurmctld/slurmd: `status` names the
    SLURM job; submitit's warning signal (SIGUSR2, as before a time limit or a preemption) makes
    it checkpoint the iteration it is at; submitit requeues it and it resumes from there; the
    harness waits for the end."""
    table, row = 'table3', 'seg-t-16'
    work_dir = job_dir(tmp_path / 'work', 'smoke', table, row, 0)
    cmd = [sys.executable, '-m', 'harness',
           *map(str, _run_args(table, row, tmp_path, synthetic_root, '--launcher', 'slurm',
                               '--time', '20'))]
    env = {**slurm_cluster.env, 'PYTHONPATH': str(REPO_ROOT)}
    launcher = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600
        statuses, job_id, signalled = set(), None, False
        while launcher.poll() is None and time.monotonic() < deadline:
            state = read_state(work_dir)
            job_id = job_id or state.get('slurm_job_id')
            if state.get('status') == 'running' and not statuses:
                out = harness_cli('status', '--table', table, '--rows', row, '--work-root',
                                  tmp_path / 'work', env=env).stdout
                statuses |= set(re.findall(r'(queued|running) \(slurm job (\d+)\)', out))
            train, _ = read_curves(work_dir)
            if not signalled and len(train) and \
                    train.index.max() > SMOKE.checkpoint_interval:
                assert _slurm(slurm_cluster, 'scancel', '-s', 'USR2', job_id).returncode == 0
                signalled = True
            time.sleep(0.5)
        output = launcher.communicate(timeout=60)[0]
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 0, output + '\n' + slurm_cluster.log_tail()
    assert re.search(rf'submitted as SLURM job {job_id}\b', output)
    assert f'running (SLURM job {job_id})' in output and 'finished in' in output
    assert f'interrupted (SLURM job {job_id})' in output  # the waiting harness saw the stop
    assert ('running', job_id) in statuses  # `status` named the SLURM job while it ran
    assert signalled
    state = _assert_trained(work_dir, processes=1)
    assert state['slurm_job_id'] == job_id and state['starts'] == 2
    assert state['host'] == socket.gethostname()
    log = (work_dir / 'job.log').read_text()
    stopped_at = int(re.search(r'Stop signal: saved iter_(\d+)\.pth', log).group(1))
    assert SMOKE.checkpoint_interval < stopped_at < SMOKE.max_iters
    assert f'Load checkpoint from {work_dir / f"iter_{stopped_at}.pth"}' in log
    logs = work_dir / 'slurm'
    submitit_log = (logs / f'{job_id}_0_log.out').read_text()  # both runs: appended
    assert 'Caught signal SIGUSR2' in submitit_log and f'Requeued job {job_id}' in submitit_log
    assert submitit_log.index('Requeued') < submitit_log.index('Job completed successfully')
    job = _slurm(slurm_cluster, 'scontrol', 'show', 'job', job_id).stdout
    assert 'Restarts=1' in job and 'JobState=COMPLETED' in job  # SLURM's own record
    assert (logs / f'{job_id}_0_result.pkl').is_file()
    assert _slurm(slurm_cluster, 'squeue', '-h', '-j', job_id, '-o', '%T').stdout.strip() \
        in ('', 'COMPLETED')  # SLURM is done with it
