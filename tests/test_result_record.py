"""The report stands on result records: seeds trained by other code or another recipe are never
pooled, code is part of what a restart must match, a changed file turns a verdict into a marked
status, a config that does not parse is one line. Real smoke jobs, run from a copy of the
checkout whose code the tests edit, as a user editing their checkout would."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from harness.core.layout import job_dir
from harness.core.result import read_result
from harness.core.state import read_curves, read_state
from tests.helpers import copy_checkout, csv_columns, report_env_vars, results_table

pytestmark = pytest.mark.e2e

LINEAR, OTHER = 'seg-t-16', 'seg-s-32'
PROFILES = 'harness/core/profiles.py'
LOSS = 'harness/models/loss.py'


def _cli(checkout, *args, popen=False):
    """``python -m harness`` of the copied checkout (its own REPO_ROOT), this environment."""
    env = {**os.environ, 'PYTHONPATH': str(checkout)}
    cmd = [sys.executable, '-m', 'harness', *map(str, args)]
    if popen:
        return subprocess.Popen(cmd, cwd=checkout, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    return subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=900)


def _run(checkout, work, data, row, *extra):
    return _cli(checkout, 'run', '--table', 'table3', '--rows', row, '--profile', 'smoke',
                '--work-root', work, '--data-root', data, '--no-report', *extra)


def _report(checkout, work, reports, *extra):
    built = _cli(checkout, 'report', '--table', 'table3', '--profile', 'smoke', '--work-root',
                 work, '--reports', reports, '--no-wandb-report', *extra)
    assert built.returncode == 0, built.stderr
    return {r['row']: r for r in _csv(reports / 'smoke' / 'table3' / 'results.csv')}


def _csv(path):
    import csv
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def _edit(checkout, name, old, new):
    path = checkout / name
    text = path.read_text()
    assert old in text, f'{name} no longer holds {old!r}'
    path.write_text(text.replace(old, new, 1))


@pytest.fixture(scope='module')
def edited(tmp_path_factory, synthetic_root):
    """Two seeds of seg-t-16 and a stopped job of seg-s-32 trained by a copied checkout; then
    the smoke learning rate (core/profiles.py) and the loss module edited, a third seed
    trained, and the stopped job's restarts: refused, then accepted."""
    root = tmp_path_factory.mktemp('records')
    checkout, work = copy_checkout(root / 'checkout'), root / 'work'
    first = _run(checkout, work, synthetic_root, LINEAR, '--seeds', 2, '--max-iters', 10)
    assert first.returncode == 0, first.stderr
    stopped = job_dir(work, 'smoke', 'table3', OTHER, 0)
    proc = _cli(checkout, 'run', '--table', 'table3', '--rows', OTHER, '--profile', 'smoke',
                '--work-root', work, '--data-root', synthetic_root, '--no-report',
                '--max-iters', 20, popen=True)
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        train, _ = read_curves(stopped)
        if len(train) and train.index.max() >= 10:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)  # the stop saves a checkpoint where it stops
    proc.wait(timeout=300)
    assert read_state(stopped)['status'] == 'interrupted' and any(stopped.glob('iter_*.pth'))

    _edit(checkout, PROFILES, 'lr: float = 0.02', 'lr: float = 0.03')
    loss = checkout / LOSS  # a code change that changes no config value
    loss.write_text(loss.read_text() + '\n_NOT_A_COMMENT = None\n')
    third = _run(checkout, work, synthetic_root, LINEAR, '--seeds', 3, '--max-iters', 10)
    assert third.returncode == 0, third.stderr
    refused = _run(checkout, work, synthetic_root, OTHER, '--max-iters', 20)
    accepted = _run(checkout, work, synthetic_root, OTHER, '--max-iters', 20, '--accept-drift')
    return checkout, work, root, refused, accepted


def test_seeds_of_other_code_or_recipe_are_never_pooled(edited):
    checkout, work, root, _, _ = edited
    records = [read_result(job_dir(work, 'smoke', 'table3', LINEAR, s)) for s in range(3)]
    assert records[0]['recipe']['seed_free'] == records[1]['recipe']['seed_free'] \
        != records[2]['recipe']['seed_free']
    assert records[0]['recipe']['fingerprint'] != records[1]['recipe']['fingerprint']  # the seed
    assert records[0]['code']['sha256'] == records[1]['code']['sha256'] \
        != records[2]['code']['sha256']
    assert records[2]['code']['files'][PROFILES] != records[0]['code']['files'][PROFILES]
    row = _report(checkout, work, root / 'reports')[LINEAR]
    assert row['verdict'] == 'seeds differ' and row['n_seeds'] == '0'
    assert row['miou_ss'] == row['ci_low'] == row['ci_high'] == ''
    assert 'seeds differ from seed0: seed2 (optim_wrapper.optimizer.lr' in row['status']
    assert f'code {PROFILES}' in row['status'] and 'seed1' not in row['status'].split('·')[1]

    # the same two seeds alone agree: their interval is back, with what changed since marked
    alone = root / 'two-seeds'
    shutil.copytree(work, alone)
    shutil.rmtree(job_dir(alone, 'smoke', 'table3', LINEAR, 2))
    row = _report(checkout, alone, root / 'reports-two')[LINEAR]
    assert row['verdict'] == 'shortened (10 iterations)' and row['n_seeds'] == '2'
    assert row['ci_low'] and row['ci_high']
    mean = sum(r['metrics']['single_scale']['mIoU'] for r in records[:2]) / 2
    assert abs(float(row['miou_ss']) - mean) < 1e-6
    assert f'code changed since: {PROFILES}, {LOSS}' in row['status']


def test_a_restart_with_other_code_is_refused_then_recorded_when_accepted(edited):
    checkout, work, root, refused, accepted = edited
    assert refused.returncode == 1
    lines = [line for line in refused.stderr.splitlines() if line.startswith('error:')]
    assert len(lines) == 1, refused.stderr
    assert 'optim_wrapper.optimizer.lr' in lines[0] and f'code {PROFILES}, {LOSS}' in lines[0]
    assert '--accept-drift' in lines[0]
    assert accepted.returncode == 0, accepted.stderr
    folder = job_dir(work, 'smoke', 'table3', OTHER, 0)
    record = read_result(folder)
    first, last = read_state(folder)['history'][0], read_state(folder)['history'][-1]
    assert record['code']['sha256'] == first['code']['sha256'] != last['code']['sha256']
    assert record['code_by_start'] == [first['code']['sha256'], last['code']['sha256']]
    assert any(f'code {LOSS}' in d for d in record['drift'][0]['drift'])
    # what trained is the first start's: its learning rate, its schedule, its total batch
    frozen = json.loads((folder / 'recipe.json').read_text())['view']
    assert record['trained'] == {'precision': 'fp32', 'total_batch': 8, 'max_iters': 20,
                                 'processes': [1, 1]}
    assert "lr=0.02," in (folder / 'job_config.py').read_text().replace(' ', '')
    assert frozen['optim_wrapper']['optimizer']['lr'] == 0.02
    row = _report(checkout, work, root / 'reports-drift')[OTHER]
    assert 'drift accepted at start 2' in row['status'] and row['n_seeds'] == '1'
    markdown = (root / 'reports-drift' / 'smoke' / 'table3' / 'report.md').read_text()
    assert 'drift accepted at start 2' in next(line for line in markdown.splitlines()
                                               if line.startswith(f'| {OTHER} |'))
    page = (root / 'reports-drift' / 'smoke' / 'table3' / 'report.html').read_text()
    assert '**' not in page


def test_a_changed_checkpoint_turns_the_verdict_into_a_marked_status(edited, tmp_path):
    checkout, work, _, _, _ = edited
    copy = tmp_path / 'work'
    shutil.copytree(work, copy)
    folder = job_dir(copy, 'smoke', 'table3', OTHER, 0)
    checkpoint = folder / read_result(folder)['checkpoint']['file']
    before = _report(checkout, copy, tmp_path / 'before')[OTHER]
    assert before['n_seeds'] == '1' and before['miou_ss']
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte, the size kept
    checkpoint.write_bytes(bytes(data))
    after = _report(checkout, copy, tmp_path / 'after')[OTHER]
    assert after['n_seeds'] == '0' and after['miou_ss'] == ''
    assert after['status'].startswith('check failed') and 'SHA-256 differs' in after['status']
    # the modification time kept as it was: the hash cache cannot tell, --verify reads bytes
    stat = os.stat(checkpoint)
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    verified = _report(checkout, copy, tmp_path / 'verified', '--verify')[OTHER]
    assert verified['status'].startswith('check failed')


def test_a_finished_job_without_a_record_is_shown_and_not_counted(edited, tmp_path):
    checkout, work, _, _, _ = edited
    copy = tmp_path / 'work'
    shutil.copytree(work, copy)
    folder = job_dir(copy, 'smoke', 'table3', OTHER, 0)
    (folder / 'result.json').rename(tmp_path / 'result.json')  # as a job of an older harness
    row = _report(checkout, copy, tmp_path / 'reports')[OTHER]
    assert row['n_seeds'] == '0' and row['status'].startswith('no result record')
    assert 'python -m harness record' in row['status']
    status = _cli(checkout, 'status', '--table', 'table3', '--profile', 'smoke',
                  '--work-root', copy)
    line = next(x for x in status.stdout.splitlines() if OTHER in x)
    assert 'no result record' in line


def test_a_config_that_does_not_parse_is_one_line_and_the_other_rows_go_on(edited, tmp_path):
    checkout, work, _, _, _ = edited
    broken = tmp_path / 'checkout'
    shutil.copytree(checkout, broken)
    config = broken / 'experiments' / 'configs' / 'table3' / f'{OTHER}.py'
    config.write_text(config.read_text() + '\nmodel = dict(\n')  # saved mid-edit
    rows = _report(broken, work, tmp_path / 'reports')
    assert rows[OTHER]['status'].startswith('config error: table3/seg-s-32: ')
    assert f'{config.resolve()} does not parse (line' in rows[OTHER]['status']
    assert rows[LINEAR]['n_seeds'] == '0' and rows[LINEAR]['verdict'] == 'seeds differ'
    status = _cli(broken, 'status', '--table', 'table3', '--profile', 'smoke',
                  '--work-root', work)
    assert status.returncode == 0, status.stderr
    assert 'Traceback' not in status.stderr
    assert re.search(rf'{OTHER}\s+seed0\s+config error .*does not parse', status.stdout)


# --- the same report on any machine -------------------------------------------------------------
# The job folders above (seeds that differ, accepted drift, code changed since) copied, with the
# checkout, into a virtual environment with only requirements-report.txt (no torch, mmcv,
# mmengine or mmseg) under another CPython release where the machine has one (``report_env``).

COMPARED = ('row', 'miou_ss', 'delta', 'status', 'verdict', 'n_seeds', 'ci_low', 'ci_high')
TRAINING_STACK = ('torch', 'mmcv', 'mmengine', 'mmseg')
REPORT_NEEDS = ('pandas', 'matplotlib', 'yaml', 'mpmath', 'rich', 'wandb')


def _report_args(work, reports):
    return ('report', '--table', 'table3', '--profile', 'smoke', '--work-root', work,
            '--reports', reports, '--no-wandb-report')


@pytest.fixture(scope='module')
def portable(edited, report_env, tmp_path_factory):
    """(the report built here, the one the report-only environment builds from copies of the
    work root and the checkout, that build's CompletedProcess)."""
    import warnings
    checkout, work, _, _, _ = edited
    python, what, seconds = report_env
    print(f'report-only environment: {what}; built in {seconds:.0f} s')
    if 'the running interpreter' in what:
        warnings.warn(f'the report-only environment: {what}', stacklevel=1)
    root = tmp_path_factory.mktemp('portable')
    here = _cli(checkout, *_report_args(work, root / 'here'))
    assert here.returncode == 0, here.stderr
    laptop = root / 'laptop'
    shutil.copytree(work, laptop / 'work')
    shutil.copytree(checkout, laptop / 'checkout')
    there = subprocess.run([str(python), '-m', 'harness',
                            *map(str, _report_args(laptop / 'work', laptop / 'reports'))],
                           cwd=laptop / 'checkout', env=report_env_vars(laptop / 'checkout'),
                           capture_output=True, text=True, timeout=600)
    return root / 'here' / 'smoke' / 'table3', laptop / 'reports' / 'smoke' / 'table3', there


def test_the_report_environment_lacks_the_training_stack(report_env):
    python, what, _ = report_env
    probe = ('import importlib, json\n'
             'found = {}\n'
             f'for name in {TRAINING_STACK + REPORT_NEEDS!r}:\n'
             '    try:\n'
             '        importlib.import_module(name)\n'
             '        found[name] = "imported"\n'
             '    except ImportError as err:\n'
             '        found[name] = type(err).__name__\n'
             'print(json.dumps(found))\n')
    out = subprocess.run([str(python), '-c', probe], env=report_env_vars(None),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.splitlines()[-1])
    assert {name: found[name] for name in TRAINING_STACK} == \
        dict.fromkeys(TRAINING_STACK, 'ModuleNotFoundError'), what
    assert {name: found[name] for name in REPORT_NEEDS} == \
        dict.fromkeys(REPORT_NEEDS, 'imported'), what


def test_another_machine_builds_the_same_rows_deltas_and_verdicts(portable):
    here, there, result = portable
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ours = csv_columns(here / 'results.csv', COMPARED)
    by_row = {line[0]: dict(zip(COMPARED, line)) for line in ours}
    # what is compared holds the cases: seeds that differ, a drift accepted, numbers
    assert by_row[LINEAR]['verdict'] == 'seeds differ'
    assert 'drift accepted' in by_row[OTHER]['status'] and by_row[OTHER]['miou_ss']
    assert csv_columns(there / 'results.csv', COMPARED) == ours
    table = results_table((here / 'report.md').read_text(encoding='utf-8'))
    assert len(table) == 2 + 8  # header, rule, the table's eight rows
    assert results_table((there / 'report.md').read_text(encoding='utf-8')) == table
