"""Every number bound to what produced it: the recipe frozen at a job's first start, refused
drift, folders of their own for a spec given by path, the start history, work roots that move,
damaged checkpoints passed over, and `verify`. Real jobs through the CLI, real signals."""
import json
import os
import shutil
import signal

import pytest
import yaml
from mmengine.config import Config

from harness.core.hashing import sha256_file
from harness.core.layout import FROZEN_CONFIG, job_dir
from harness.core.spec import EXPERIMENTS, load_table
from harness.core.state import read_state
from tests.helpers import harness_cli, start_and_wait

pytestmark = pytest.mark.e2e

ROW = 'seg-t-16'
OTHER_CONFIG = 'experiments/configs/table3/seg-s-16.py'  # another backbone width


def _spec(tmp_path, name='mine', config=None):
    """A copy of table3.yaml given by path; ``config``: the row's config file instead."""
    data = yaml.safe_load((EXPERIMENTS / 'table3.yaml').read_text())
    if config is not None:
        next(r for r in data['rows'] if r['id'] == ROW)['config'] = config
    path = tmp_path / f'{name}.yaml'
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def _run(table, work, data, *extra):
    return harness_cli('run', '--table', table, '--rows', ROW, '--profile', 'smoke',
                       '--work-root', work, '--data-root', data, '--no-report', *extra)


def _stopped(table, work, data, at=20):
    """A job of 40 iterations stopped by SIGTERM after its first checkpoint (iteration 20):
    the stop saves one more checkpoint where it stopped."""
    work_dir = job_dir(work, 'smoke', load_table(table).row(ROW).folder, ROW, 0)
    args = ('run', '--table', table, '--rows', ROW, '--profile', 'smoke', '--work-root', work,
            '--data-root', data, '--no-report', '--max-iters', 40)
    proc = start_and_wait(args, work_dir, at)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=300)
    state = read_state(work_dir)
    assert state['status'] == 'interrupted', state
    return work_dir


def _stopped_at(work_dir) -> int:
    return max(int(p.stem[5:]) for p in work_dir.glob('iter_*.pth'))


@pytest.fixture(scope='module')
def stopped(tmp_path_factory, synthetic_root):
    """A job of a spec given by path, its row's config through a file a test may edit (and
    must put back), stopped by SIGTERM after its first checkpoint; and an untouched copy of
    its work root for the tests that change the job."""
    root = tmp_path_factory.mktemp('stopped')
    config = root / 'seg-t-16.py'
    original = EXPERIMENTS / 'configs' / 'table3' / 'seg-t-16.py'
    config.write_text(f'_base_ = [{str(original)!r}]\n')
    spec = _spec(root, config=str(config))
    work = root / 'work'
    _stopped(spec, work, synthetic_root)
    shutil.copytree(work, root / 'pristine')
    return spec, config, work, root / 'pristine'


def test_a_restart_with_another_recipe_is_refused_unless_the_drift_is_accepted(
        stopped, tmp_path, synthetic_root, request):
    spec, config, work, _ = stopped
    work_dir = job_dir(work, 'smoke', load_table(spec).row(ROW).folder, ROW, 0)
    stopped_at = _stopped_at(work_dir)
    frozen = (work_dir / FROZEN_CONFIG).read_text()
    recipe = json.loads((work_dir / 'recipe.json').read_text())

    text = config.read_text()
    request.addfinalizer(lambda: config.write_text(text))  # the module's other tests read it
    config.write_text(text + 'model = dict(backbone=dict(drop_path_rate=0.2))\n')
    refused = _run(spec, work, synthetic_root, '--max-iters', 40)
    assert refused.returncode == 1
    lines = [line for line in refused.stderr.splitlines() if 'error:' in line]
    assert len(lines) == 1 and 'is not what the job started with' in lines[0], refused.stderr
    assert 'model.backbone.drop_path_rate' in lines[0] and '--accept-drift' in lines[0]
    assert (work_dir / FROZEN_CONFIG).read_text() == frozen  # the record is history
    status = harness_cli('status', '--table', spec, '--work-root', work)
    assert 'other recipe' in status.stdout and 'ran another recipe' in status.stdout

    accepted = _run(spec, work, synthetic_root, '--max-iters', 40, '--accept-drift')
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    state = read_state(work_dir)
    assert state['status'] == 'finished'
    first, last = state['history'][0], state['history'][-1]
    assert first['resumed_from'] is None and first['drift'] is None
    assert last['resumed_from'] == stopped_at
    # the config key, and the config file as code that decides numbers
    assert last['drift'] == ['model.backbone.drop_path_rate', 'code seg-t-16.py']
    assert last['recipe'] == first['recipe'] == recipe['fingerprint']
    # it trained the frozen recipe: the drop path it started with, not the config's now
    rate = recipe['view']['model']['backbone']['drop_path_rate']
    assert rate != 0.2 and \
        Config.fromfile(work_dir / 'job_config.py').model.backbone.drop_path_rate == rate
    assert state['drift']['accepted'] == last['drift']
    reports = tmp_path / 'reports'
    built = harness_cli('report', '--table', spec, '--work-root', work, '--reports', reports,
                        '--profile', 'smoke', '--no-wandb-report')
    assert built.returncode == 0, built.stderr
    report = next(reports.rglob('report.md')).read_text()
    assert 'ran another recipe' in report and 'drift accepted' in report
    assert f"recipe {recipe['fingerprint']}" in report


def test_a_spec_by_path_gets_folders_of_its_own_and_verify_checks_them(
        tmp_path, synthetic_root, finished_job):
    work = tmp_path / 'work'  # the default spec's job of 20 iterations, trained once a session
    shutil.copytree(finished_job.parents[3], work)
    default_dir = job_dir(work, 'smoke', 'table3', ROW, 0)
    other = _spec(tmp_path, config=OTHER_CONFIG)
    ran = _run(other, work, synthetic_root, '--max-iters', 20)
    assert ran.returncode == 0, ran.stderr
    assert 'finished before' not in ran.stdout
    other_dir = job_dir(work, 'smoke', load_table(other).row(ROW).folder, ROW, 0)
    assert other_dir != default_dir and read_state(other_dir)['status'] == 'finished'
    recipes = [json.loads((d / 'recipe.json').read_text()) for d in (default_dir, other_dir)]
    assert recipes[0]['fingerprint'] != recipes[1]['fingerprint']

    ok = harness_cli('verify', '--table', other, '--work-root', work)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith(f'ok      {other_dir}') and '1 of 1' in ok.stdout

    checkpoint = other_dir / 'iter_20.pth'
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte
    checkpoint.write_bytes(bytes(data))
    damaged = harness_cli('verify', '--job', other_dir)
    assert damaged.returncode == 1
    assert 'checkpoint iter_20.pth: SHA-256 differs from the one recorded at save' in \
        damaged.stdout

    _spec(tmp_path, config=None)  # the spec file edited: its row back on its own config
    drifted = harness_cli('verify', '--job', default_dir)
    assert drifted.returncode == 0, drifted.stdout  # the default spec did not change
    changed = harness_cli('verify', '--table', other, '--work-root', work)
    assert changed.returncode == 1
    assert 'the current spec builds another recipe' in changed.stdout
    assert 'model.backbone.embed_dims' in changed.stdout


def test_a_copied_work_root_resumes_past_a_checkpoint_damaged_in_place_never_refrozen(
        stopped, tmp_path, synthetic_root):
    spec, _, _, pristine = stopped
    work = tmp_path / 'work'
    shutil.copytree(pristine, work)
    folder = load_table(spec).row(ROW).folder
    work_dir = job_dir(work, 'smoke', folder, ROW, 0)
    newest = _stopped_at(work_dir)
    assert newest > 20 and (work_dir / 'iter_20.pth').is_file()
    copy = tmp_path / 'copy'
    shutil.copytree(work, copy)
    work.rename(tmp_path / 'moved-away')  # the original is gone from where the copy points
    copied_dir = job_dir(copy, 'smoke', folder, ROW, 0)
    # the frozen recipe gone beside checkpoints and history: refused, never frozen anew
    (copied_dir / 'recipe.json').rename(tmp_path / 'recipe.json')
    refused = _run(spec, copy, synthetic_root, '--max-iters', 40)
    assert refused.returncode == 1
    lines = [line for line in refused.stderr.splitlines() if line.startswith('error:')]
    assert len(lines) == 1 and 'recipe.json is missing beside the job' in lines[0], lines
    assert not (copied_dir / 'recipe.json').exists()
    (tmp_path / 'recipe.json').rename(copied_dir / 'recipe.json')

    # the newest checkpoint hashed once (the hash cache knows it), then damaged in place with
    # its size and modification time kept: a resume reads its bytes, not the cache
    damaged = copied_dir / f'iter_{newest}.pth'
    sha256_file(damaged)
    stat = damaged.stat()
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    os.utime(damaged, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    resumed = _run(spec, copy, synthetic_root, '--max-iters', 40)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    damaged = [line for line in resumed.stdout.splitlines() if 'is damaged' in line]
    assert len(damaged) == 1 and f'iter_{newest}.pth' in damaged[0]
    state = read_state(copied_dir)
    assert state['status'] == 'finished' and state['history'][-1]['resumed_from'] == 20
    assert f'Load checkpoint from {copied_dir / "iter_20.pth"}' in \
        (copied_dir / 'job.log').read_text()
    assert not (tmp_path / 'work').exists()
