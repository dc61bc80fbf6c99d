import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.core.state import read_curves

REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ['WANDB_MODE'] = 'offline'  # tests never reach a W&B server
os.environ.setdefault('WANDB_SILENT', 'true')
if int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', 1)) > 1:
    # the workers fill the cores already: torch's threads in each would spin against the
    # other worker's (set before any test imports torch; jobs started by tests inherit it)
    os.environ.setdefault('OMP_NUM_THREADS', '1')

# The modules whose real jobs take longest, longest first: `make test` hands whole modules to
# its workers in collection order, so these start first and the workers finish together
LONGEST_FIRST = ['test_smoke_e2e.py', 'test_rehearse.py', 'test_launchers.py', 'test_bench.py',
                 'test_job_disturbed.py', 'test_mmseg_tools.py', 'test_bad_input.py',
                 'test_evaluate.py', 'test_resume_data.py']


def pytest_collection_modifyitems(items):
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: else as found


@pytest.fixture(scope='session')
def synthetic_root(tmp_path_factory):
    from harness.assets.synthetic import ensure_dataset
    return ensure_dataset(tmp_path_factory.mktemp('data') / 'ADEChallengeData2016')


@pytest.fixture(scope='session')
def ade_sized_root(tmp_path_factory):
    """The synthetic dataset at ADE20K's image sizes (what rehearsals train on)."""
    from harness.assets.synthetic import ensure_dataset
    return ensure_dataset(tmp_path_factory.mktemp('data-sized') / 'ADEChallengeData2016',
                          size='ade20k')


def harness_popen(*args, **popen_kwargs):
    """Start ``python -m harness`` in the background (its output discarded)."""
    env = {**os.environ, 'PYTHONPATH': str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, '-m', 'harness', *map(str, args)], cwd=REPO_ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            **popen_kwargs)


def harness_cli(*args, timeout=900, env=None):
    """Run ``python -m harness`` as a user would; returns the CompletedProcess."""
    env = {**(env or os.environ), 'PYTHONPATH': str(REPO_ROOT)}
    return subprocess.run([sys.executable, '-m', 'harness', *map(str, args)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def wandb_records(run_dir):
    """Every record of an offline run's transaction log, as W&B's own reader prints it."""
    wandb_cli = Path(sys.executable).with_name('wandb')
    out = subprocess.run([wandb_cli, 'leet', 'inspect', '--json', str(run_dir)], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith('{')]


def wandb_history(run_dir):
    return [r['history']['item'] for r in wandb_records(run_dir) if r['type'] == 'history']


def smoke_run_args(table, row, work, reports, data):
    """The CLI arguments of a smoke job of one row, reported into ``reports``."""
    return ('run', '--table', table, '--rows', row, '--profile', 'smoke', '--work-root', work,
            '--reports', reports, '--data-root', data)


def start_and_wait(args, work_dir, until_iter):
    """Start a smoke job in its own session; return it once it logged ``until_iter`` with a
    checkpoint on disk."""
    proc = harness_popen(*args, start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        train, _ = read_curves(work_dir)
        if len(train) and train.index.max() >= until_iter and \
                (work_dir / 'last_checkpoint').is_file():
            return proc
        time.sleep(0.2)
    pytest.fail(f'the job ended (exit {proc.poll()}) before it could be stopped')
