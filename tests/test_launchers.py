"""Launchers: a smoke job as two torchrun processes (gloo on CPU), and a smoke job submitted to a
real one-node SLURM cluster (slurmctld + slurmd + munged started here) through submitit."""
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mmengine.config import Config

from harness.core.layout import job_dir
from harness.core.profiles import SMOKE, TOTAL_BATCH
from harness.core.state import read_curves, read_state
from tests.helpers import (
    REPO_ROOT,
    ClusterError,
    SlurmCluster,
    harness_cli,
    wandb_history,
)


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
    config = Config.fromfile(work_dir / 'job_config.py')
    assert config.train_dataloader.batch_size == TOTAL_BATCH // processes
    return state


@pytest.mark.e2e
def test_torchrun_two_processes_share_the_batch(tmp_path, synthetic_root):
    table, row = 'table3', 'seg-t-16'
    result = harness_cli(*_run_args(table, row, tmp_path, synthetic_root,
                                    '--launcher', 'torchrun', '--gpus', 2))
    assert result.returncode == 0, result.stdout + result.stderr
    work_dir = job_dir(tmp_path / 'work', 'smoke', table, row, 0)
    _assert_trained(work_dir, processes=2)
    config = Config.fromfile(work_dir / 'job_config.py')
    assert config.launcher == 'pytorch' and config.model_wrapper_cfg.device_ids is None
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


def _scontrol(cluster, job_id):
    return dict(re.findall(r'(\w+)=(\S+)', _slurm(cluster, 'scontrol', 'show', 'job',
                                                  job_id).stdout))


@pytest.mark.e2e
@pytest.mark.slurm
def test_slurm_array_is_preempted_requeued_and_completes(tmp_path, synthetic_root,
                                                          slurm_cluster):
    """Two seeds submitted by the harness to a real slurmctld/slurmd as one job array, with the
    account, QOS, constraint and memory options: `status` names each task's SLURM job with its
    progress; submitit's warning signal (SIGUSR2, as before a time limit or a preemption) to one
    task makes it checkpoint the iteration it is at; submitit requeues that task alone and it
    resumes from there; the harness waits for both, asking squeue every 2 s."""
    table, row = 'table3', 'seg-t-16'
    work_dirs = [job_dir(tmp_path / 'work', 'smoke', table, row, seed) for seed in (0, 1)]
    work_dir = work_dirs[0]
    options = ('--launcher', 'slurm', '--time', '20', '--seeds', '2', '--poll-interval', '2',
               '--account', 'proj-a', '--qos', 'normal', '--constraint', slurm_cluster.FEATURE,
               '--mem', '1G')
    cmd = [sys.executable, '-m', 'harness',
           *map(str, _run_args(table, row, tmp_path, synthetic_root, *options))]
    env = {**slurm_cluster.env, 'PYTHONPATH': str(REPO_ROOT)}
    launcher = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600
        status_out, job_id, signalled = '', None, False
        while launcher.poll() is None and time.monotonic() < deadline:
            state = read_state(work_dir)
            job_id = job_id or state.get('slurm_job_id')
            if state.get('status') == 'running' and state.get('progress') and not status_out:
                status_out = harness_cli('status', '--table', table, '--rows', row, '--seeds',
                                         2, '--work-root', tmp_path / 'work', env=env).stdout
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
    array = job_id.split('_')[0]
    assert job_id == f'{array}_0'  # one array: seed k is task k
    for seed in (0, 1):
        assert re.search(rf'seed{seed}: submitted as SLURM job {array}_{seed}\b', output)
        assert f'seed{seed}: running (SLURM job {array}_{seed})' in output
    assert output.count('finished in') == 2
    assert f'interrupted (SLURM job {job_id})' in output  # the waiting harness saw the stop
    # `status` named the running task with its iteration, percent and time left
    line = next(line for line in status_out.splitlines() if 'seed0' in line)
    assert re.search(rf'running \(slurm job {job_id}\) +iter (\d+)/{SMOKE.max_iters} '
                     r'\((\d+)%\), loss [\d.]+, mIoU [\d.]+, \d+:\d\d:\d\d left', line), status_out
    done, percent = map(int, re.search(r'iter (\d+)/\d+ \((\d+)%\)', line).groups())
    assert percent == round(100 * done / SMOKE.max_iters)
    assert signalled
    state = _assert_trained(work_dir, processes=1)
    assert state['slurm_job_id'] == job_id and state['starts'] == 2
    assert state['host'] == socket.gethostname()
    other = _assert_trained(work_dirs[1], processes=1)
    assert other['slurm_job_id'] == f'{array}_1' and other['starts'] == 1  # not requeued
    log = (work_dir / 'job.log').read_text()
    stopped_at = int(re.search(r'Stop signal: saved iter_(\d+)\.pth', log).group(1))
    assert SMOKE.checkpoint_interval < stopped_at < SMOKE.max_iters
    assert f'Load checkpoint from {work_dir / f"iter_{stopped_at}.pth"}' in log
    logs = Path(state['slurm_logs'])  # submitit's folder of the array, beside the job folders
    assert logs == work_dir.parent / 'slurm' and other['slurm_logs'] == str(logs)
    submitit_log = (logs / f'{job_id}_0_log.out').read_text()  # both runs: appended
    assert 'Caught signal SIGUSR2' in submitit_log and f'Requeued job {job_id}' in submitit_log
    assert submitit_log.index('Requeued') < submitit_log.index('Job completed successfully')
    for seed in (0, 1):
        assert (logs / f'{array}_{seed}_0_result.pkl').is_file()
        record = _scontrol(slurm_cluster, f'{array}_{seed}')  # SLURM's own record
        assert record['JobState'] == 'COMPLETED' and record['Restarts'] == str(1 - seed)
        assert record['ArrayJobId'] == array and record['ArrayTaskId'] == str(seed)
        assert record['Account'] == 'proj-a' and record['MinMemoryNode'] == '1G'
        assert record['Features'] == slurm_cluster.FEATURE
    # this cluster keeps no accounting, so SLURM drops the QOS: the script submitted has it
    script = (logs / f'{array}_submission.sh').read_text()
    assert '#SBATCH --qos=normal' in script and '#SBATCH --array=0-1' in script
    assert _slurm(slurm_cluster, 'squeue', '-h', '-j', array, '-o', '%T').stdout.strip() == ''


@pytest.mark.e2e
@pytest.mark.slurm
def test_slurm_no_wait_and_a_failing_squeue(tmp_path, synthetic_root, slurm_cluster,
                                            monkeypatch, capsys):
    """NO_WAIT: submit and return (the command says how to follow the jobs); a wait whose squeue
    keeps failing ends with one line and leaves the job to run; a job still in SLURM is waited
    for, not submitted again."""
    from harness.core.request import JobRequest
    from harness.launch import slurm
    from harness.launch.launchers import Target
    table, row = 'table3', 'seg-s-32'
    work_dir = job_dir(tmp_path / 'work', 'smoke', table, row, 0)
    env = {**slurm_cluster.env, 'PYTHONPATH': str(REPO_ROOT)}
    submitted = harness_cli(*_run_args(table, row, tmp_path, synthetic_root, '--launcher',
                                       'slurm', '--no-wait', '--exclusive', '--max-iters', 2),
                            env=env)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = read_state(work_dir)['slurm_job_id']
    assert f'submitted as SLURM job {job_id}' in submitted.stdout
    assert f'1 SLURM job(s) submitted; `python -m harness status --table {table} --profile ' \
           f'smoke --work-root {tmp_path / "work"}` follows them' in submitted.stdout
    assert _scontrol(slurm_cluster, job_id)['OverSubscribe'] == 'NO'  # --exclusive
    status = harness_cli('status', '--table', table, '--rows', row, '--work-root',
                         tmp_path / 'work', env=env).stdout
    assert re.search(rf'(queued|running) \(slurm job {job_id}\)', status), status

    target = Target(JobRequest.read(work_dir / 'request.json'), f'[1/1] {table}/{row} seed0')
    unreadable = tmp_path / 'slurm.conf'
    unreadable.write_text('')  # squeue itself fails: no cluster name, no controller
    monkeypatch.setenv('SLURM_CONF', str(unreadable))
    took, left = slurm.wait([(target, job_id)], poll_s=0.1, max_failures=3)
    err = capsys.readouterr().err
    assert took == {} and left == [(target, job_id)]
    assert err.startswith('error: squeue exited with 1: ') and err.count('\n') == 1
    assert '(3 polls in a row); stopped waiting: 1 SLURM job(s) go on' in err
    monkeypatch.setenv('SLURM_CONF', slurm_cluster.env['SLURM_CONF'])
    # the same command again, waiting this time: the job is SLURM's already
    again = harness_cli(*_run_args(table, row, tmp_path, synthetic_root, '--launcher', 'slurm',
                                   '--exclusive', '--max-iters', 2, '--poll-interval', 1),
                        env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert read_state(work_dir)['slurm_job_id'] == job_id  # not submitted again
    assert 'submitted as' not in again.stdout and 'finished' in again.stdout
    assert read_state(work_dir)['status'] == 'finished'
