"""Faults that stop nothing else, leave nothing behind, and are named by their real cause: a
full disk under two tables (a job's own full disk: tests/test_damaged_files.py), a job stopped
by SIGTERM and killed by SIGKILL (and a save cut short by one), stops under
``max_keep_ckpts``, a restart refused for drift and a job running elsewhere.

The disks are real (a small tmpfs inside private user + mount namespaces, as in
tests/test_damaged_files.py), the signals too; each module fixture runs its jobs once for the
tests that read them.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock

from harness.core.layout import job_dir
from harness.core.profiles import SMOKE
from harness.core.state import read_curves, read_state, write_state
from tests.helpers import REPO_ROOT, harness_cli, in_namespace, smoke_run_args

pytestmark = pytest.mark.e2e


# --- a full disk ----------------------------------------------------------------------------

# A work root on tmpfs, its reports inside it (a work root other than the default keeps its
# reports there): at 1.2 MB table3's jobs and report fill it before table6 starts. W&B is as
# talkative as a user has it (the tests' conftest silences it).
FULL_DISK = r'''
disk=$1; size=$2; out=$3; shift 3
mount -t tmpfs -o size=$size tmpfs "$disk" || exit 97
env -u WANDB_SILENT "$@" --profile smoke --work-root "$disk" --max-iters 20 > "$out/run.out" \
    2> "$out/run.err"
echo $? > "$out/run.rc"
'''


def test_a_report_that_cannot_be_built_stops_no_later_table(tmp_path, synthetic_root):
    big, out = tmp_path / 'disk', tmp_path / 'out'
    big.mkdir()
    out.mkdir()
    done = in_namespace(FULL_DISK, big, '1200k', out, sys.executable, '-m', 'harness', 'run',
                        '--table', 'table3', '--table', 'table6', '--rows',
                        'seg-t-16,seg-s-32,seg-t-mask-16', '--data-root', synthetic_root,
                        '--no-wandb-report')
    assert done.returncode == 0, done.stderr
    stdout, stderr, rc = ((out / f'run.{name}').read_text() for name in ('out', 'err', 'rc'))
    assert int(rc) != 0, stdout
    assert 'Traceback' not in stdout + stderr, stderr
    failed = [line for line in stderr.splitlines() if line.startswith('error: report of ')]
    # table3's report finds no room: one line naming the file and the disk
    assert len(failed) >= 1 and failed[0].startswith('error: report of table3 not built: '
                                                     f'{big}/reports/smoke/table3/'), stderr
    assert 'No space left on device' in failed[0], failed[0]
    # ... and table6's job is launched after it
    assert '[1/1] table6/seg-t-mask-16 seed0: training' in stdout, stdout
    assert stdout.index('[1/1] table6/') > stdout.index('[2/2] table3/seg-s-32 seed0: training')
    # the closing lines say what is missing, and no re-run of the same command as the cure
    assert 'report(s) of table3' in stdout and 'not built' in stdout, stdout
    assert 're-run the same command' not in stdout


# --- killed, stopped, refused, and running elsewhere ----------------------------------------

TABLE, ROW = 'table3', 'seg-t-16'
ITERS = 60  # periodic checkpoints at 20, 40, 60; max_keep_ckpts = 2 (the recipe's)
KEEP = 2


def _start(args, out: Path):
    """The CLI in its own session, its output into files."""
    return subprocess.Popen([sys.executable, '-m', 'harness', *map(str, args)], cwd=REPO_ROOT,
                            env={**os.environ, 'PYTHONPATH': str(REPO_ROOT)},
                            stdout=open(out.with_suffix('.out'), 'w'),
                            stderr=open(out.with_suffix('.err'), 'w'), start_new_session=True)


def _wait_until(proc, work_dir, iteration, checkpoint):
    """Until ``iteration`` is in the curves and in the state's progress (written after them, by
    a later hook of the same iteration) and ``checkpoint`` is on disk."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        train, _ = read_curves(work_dir)
        progress = read_state(work_dir).get('progress') or {}
        if len(train) and train.index.max() >= iteration and \
                progress.get('iter', 0) >= iteration and (work_dir / checkpoint).is_file():
            return
        time.sleep(0.1)
    pytest.fail(f'the job ended (exit {proc.poll()}) before iteration {iteration}')


# a process that dies by SIGKILL while it writes a checkpoint the harness's way
KILLED_WRITER = r'''
import sys, time
from pathlib import Path
from harness.core.atomic import atomic_path
with atomic_path(Path(sys.argv[1])) as tmp:
    tmp.write_bytes(b'half a checkpoint')
    print(tmp.name, flush=True)
    time.sleep(600)
'''


def _killed_while_writing(path: Path) -> Path:
    proc = subprocess.Popen([sys.executable, '-c', KILLED_WRITER, str(path)], cwd=REPO_ROOT,
                            env={**os.environ, 'PYTHONPATH': str(REPO_ROOT)},
                            stdout=subprocess.PIPE, text=True)
    name = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert name and (path.parent / name).is_file()
    return path.parent / name


@pytest.fixture(scope='module')
def disturbed_job(tmp_path_factory, synthetic_root):
    """One smoke job of ITERS iterations: stopped by SIGTERM after iteration 30, restarted,
    its job process killed by SIGKILL after iteration 50 (the launcher alive), a restart with
    another precision (refused: drift), temporary files of killed writers planted and the
    pointer gone (a kill between a checkpoint's rename and the pointer's), then run to its
    end."""
    root = tmp_path_factory.mktemp('disturbed')
    work, reports = root / 'work', root / 'reports'
    args = (*smoke_run_args(TABLE, ROW, work, reports, synthetic_root), '--max-iters', ITERS,
            '--no-report')
    work_dir = job_dir(work, 'smoke', TABLE, ROW, 0)
    found = {'work_dir': work_dir, 'args': args}

    first = _start(args, root / 'first')
    _wait_until(first, work_dir, 30, 'iter_20.pth')
    os.killpg(first.pid, signal.SIGTERM)  # the launcher and the job, as SLURM signals a step
    found['stopped_rc'] = first.wait(timeout=300)
    found['stopped_state'] = state = read_state(work_dir)
    found['stopped_at'] = stopped_at = int(state['error'].split(' at iteration ')[1].split()[0])
    found['stopped_logged'] = int(read_curves(work_dir)[0].index.max())
    found['stopped_pointer'] = (work_dir / 'last_checkpoint').read_text().strip()
    found['stopped_log'] = (work_dir / 'job.log').read_text()
    import torch

    from harness.runtime.safe_resume import enable_safe_resume
    enable_safe_resume()
    found['stopped_checkpoint_iter'] = torch.load(
        work_dir / f'iter_{stopped_at}.pth', weights_only=True)['meta']['iter']

    second = _start(args, root / 'second')
    _wait_until(second, work_dir, 50, 'iter_40.pth')
    found['resumed_log'] = (work_dir / 'job.log').read_text()
    os.kill(read_state(work_dir)['pid'], signal.SIGKILL)  # the job process; its launcher lives
    found['killed_rc'] = second.wait(timeout=300)
    found['killed_state'] = read_state(work_dir)
    found['killed_err'] = (root / 'second.err').read_text()
    found['resumed_out'] = (root / 'second.out').read_text()
    found['status'] = harness_cli('status', '--table', TABLE, '--profile', 'smoke',
                                  '--work-root', work)

    found['drift'] = harness_cli(*args, '--amp', 'bf16')

    (work_dir / 'last_checkpoint').unlink()
    found['partial'] = [_killed_while_writing(work_dir / 'iter_60.pth'),
                        _killed_while_writing(work_dir / '.checkpoint-staging' /
                                              'last_checkpoint')]
    found['last'] = harness_cli(*args)
    return found


def test_sigterm_saves_the_current_iteration_and_the_restart_resumes_from_it(disturbed_job):
    """SIGTERM (what SLURM sends): the job checkpoints the iteration it is at, records
    'interrupted' and exits; the restart resumes from that checkpoint."""
    state, stopped_at = disturbed_job['stopped_state'], disturbed_job['stopped_at']
    assert disturbed_job['stopped_rc'] != 0 and state['status'] == 'interrupted'
    assert state['error'] == (f'Stopped: stopped by SIGTERM at iteration {stopped_at} '
                              f'(checkpoint iter_{stopped_at}.pth)')
    assert 30 <= disturbed_job['stopped_logged'] <= stopped_at < ITERS
    assert disturbed_job['stopped_pointer'] == f'iter_{stopped_at}.pth'
    assert disturbed_job['stopped_checkpoint_iter'] == stopped_at
    # the stopped launcher still logged what the job said while it stopped
    assert f'Stop signal: saved iter_{stopped_at}.pth' in disturbed_job['stopped_log']
    assert f'resuming from iter_{stopped_at}.pth' in disturbed_job['resumed_out']
    work_dir = disturbed_job['work_dir']
    assert f"Load checkpoint from {work_dir / f'iter_{stopped_at}.pth'}" in \
        disturbed_job['resumed_log']


def test_the_disturbed_job_ends_with_every_curve_point_once(disturbed_job):
    """After a stop, a kill and two restarts the local curves reach the end, each point once."""
    train, val = read_curves(disturbed_job['work_dir'])
    assert list(val.index) == [SMOKE.first_val, ITERS]
    assert train.index.max() == ITERS and train.index.is_unique


def test_a_sigkilled_job_records_the_signal_and_where_it_resumes(disturbed_job):
    state = disturbed_job['killed_state']
    assert disturbed_job['killed_rc'] == 1
    assert state['status'] == 'failed'
    reached = state['progress']['iter']
    assert 50 <= reached < ITERS
    said = f'killed by signal 9 (SIGKILL) after iteration {reached}; resumable from iter_40.pth'
    assert state['error'] == said
    assert said in disturbed_job['killed_err']
    status = disturbed_job['status']
    line = next(line for line in status.stdout.splitlines() if line.split()[:1] == [ROW])
    assert 'failed' in line and said in line, status.stdout


def test_a_refused_drift_says_how_to_go_on(disturbed_job):
    refused = disturbed_job['drift']
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert 'is not what the job started with' in refused.stderr
    assert '1 job(s) refused to resume' in refused.stdout and '--accept-drift' in \
        refused.stdout and '--work-root' in refused.stdout, refused.stdout
    assert 're-run the same command' not in refused.stdout
    assert 'same command resumes' not in refused.stdout


def test_a_restart_clears_dead_writers_files_and_resumes_from_the_newest(disturbed_job):
    last, work_dir = disturbed_job['last'], disturbed_job['work_dir']
    assert last.returncode == 0, last.stdout + last.stderr
    # the pointer was gone: the launcher names the checkpoint the job resumes from
    assert 'training (resuming from iter_40.pth)' in last.stdout, last.stdout
    assert f"Load checkpoint from {work_dir / 'iter_40.pth'}" in (work_dir / 'job.log').read_text()
    for partial in disturbed_job['partial']:
        assert not partial.exists(), partial
    assert not list(work_dir.rglob('*.partial'))


def test_stop_checkpoints_count_among_the_kept_ones(disturbed_job):
    work_dir = disturbed_job['work_dir']
    stopped_at = disturbed_job['stopped_at']
    assert 30 <= stopped_at < 40
    kept = sorted(p.name for p in work_dir.glob('iter_*.pth'))
    # the stop's iter_3x was kept while it was among the newest two, then dropped
    assert kept == ['iter_40.pth', 'iter_60.pth'], kept
    assert len(kept) <= KEEP


def test_a_job_running_elsewhere_says_to_wait(tmp_path, synthetic_root):
    """The job's lock held by another process (this one): skipped, and the advice is to wait
    for it, not to re-run."""
    work = tmp_path / 'work'
    work_dir = job_dir(work, 'smoke', TABLE, ROW, 0)
    work_dir.mkdir(parents=True)
    write_state(work_dir, status='running', host='elsewhere', pid=os.getpid())
    with FileLock(work_dir / '.lock', timeout=0):
        result = harness_cli(*smoke_run_args(TABLE, ROW, work, tmp_path / 'reports',
                                             synthetic_root), '--no-report')
    assert result.returncode == 1, result.stdout + result.stderr
    assert f'already running (host elsewhere, pid {os.getpid()}), skipped' in result.stdout
    assert '1 job(s) running in another process' in result.stdout
    assert 'wait until they end' in result.stdout, result.stdout
    assert 're-run the same command' not in result.stdout
