import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ['WANDB_MODE'] = 'offline'  # tests never reach a W&B server
os.environ.setdefault('WANDB_SILENT', 'true')


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
