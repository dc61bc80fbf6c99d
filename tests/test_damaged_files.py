"""Damaged and unwritable files, as a user meets them: a job state that does not parse, and a
full disk under the work root or the reports.

Each case must give one line naming the file, leave the other rows launched, reported and shown,
and leave no temporary file behind. The full disks are real: a small tmpfs mounted inside a
private mount namespace (`tests.helpers.in_namespace`), so no mount is seen outside
the test and none outlives it.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.request import JobRequest
from harness.core.spec import load_table
from tests.helpers import REPO_ROOT, harness_cli, in_namespace

pytestmark = pytest.mark.e2e

MAX_ITERS = '10'  # one early evaluation and the last; the checkpoint at the end
HALF_WRITTEN = json.dumps({'table': 'table3', 'row': 'seg-s-16', 'status': 'running',
                           'history': [{'time': 1.0, 'host': 'h'}]}, indent=1)
BROKEN = {  # row -> a job.json that does not parse, one of each kind met in practice
    'seg-t-16': b'',
    'seg-s-32': b'{not json',
    'seg-s-16': HALF_WRITTEN[:len(HALF_WRITTEN) // 2].encode(),
}
LAUNCHED = 'seg-b-32'  # the row that still has to run (patch 32: the cheapest after Seg-T/16)


def _job(work, row):
    return Path(work) / 'smoke' / 'table3' / row / 'seed0'


def _temporary_files(root):
    root = Path(root)
    return sorted({str(p) for pattern in ('*.partial', '.*.partial') for p in root.rglob(pattern)})


# --- a job state that does not parse --------------------------------------------------------

@pytest.fixture(scope='module')
def damaged_work(tmp_path_factory, synthetic_root):
    """A work root where three rows' job.json do not parse, after `run` of those rows and one
    more: (work root, reports, the run's CompletedProcess)."""
    root = tmp_path_factory.mktemp('damaged')
    work, reports = root / 'work', root / 'reports'
    for row, data in BROKEN.items():
        _job(work, row).mkdir(parents=True)
        (_job(work, row) / 'job.json').write_bytes(data)
    result = harness_cli('run', '--table', 'table3', '--rows', ','.join([*BROKEN, LAUNCHED]),
                         '--profile', 'smoke', '--work-root', work, '--reports', reports,
                         '--data-root', synthetic_root, '--max-iters', MAX_ITERS,
                         '--no-wandb-report')
    return work, reports, result


def _unreadable(work, row):
    return f"unreadable state ({_job(work, row) / 'job.json'})"


def test_run_names_each_unparsable_state_and_launches_the_other_rows(damaged_work):
    work, _, result = damaged_work
    assert result.returncode != 0, result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == len(BROKEN), result.stderr  # one line per damaged job, nothing else
    for row in BROKEN:
        assert [line for line in lines if line.startswith(f'error: table3/{row} seed0: ')
                and _unreadable(work, row) in line], result.stderr
    assert 'Traceback' not in result.stdout + result.stderr
    assert f'table3/{LAUNCHED} seed0: finished' in result.stdout, result.stdout
    assert 'report: ' in result.stdout  # the report after the run was built as well
    for row, data in BROKEN.items():  # never written over: what it still holds is kept
        assert (_job(work, row) / 'job.json').read_bytes() == data
        assert not (_job(work, row) / 'request.json').exists()  # not launched
    assert not _temporary_files(work)


def test_status_shows_unparsable_states_and_every_other_row(damaged_work):
    work, _, _ = damaged_work
    result = harness_cli('status', '--table', 'table3', '--profile', 'smoke',
                         '--work-root', work)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert set(lines) == {row.id for row in load_table('table3').rows}, result.stdout
    for row in BROKEN:
        assert lines[row].split()[2] == 'unreadable' and _unreadable(work, row) in lines[row]
    assert lines[LAUNCHED].split()[2] == 'finished' and 'mIoU' in lines[LAUNCHED]
    assert lines['seg-b-16'].split()[2:] == ['not', 'run']  # nothing more (no "nan")


def test_report_shows_unparsable_states_and_reports_the_other_rows(damaged_work):
    work, reports, _ = damaged_work
    result = harness_cli('report', '--table', 'table3', '--profile', 'smoke', '--work-root',
                         work, '--reports', reports, '--no-wandb-report')
    assert result.returncode == 0, result.stderr
    out = reports / 'smoke' / 'table3'
    markdown = (out / 'report.md').read_text()
    for row in BROKEN:
        assert _unreadable(work, row) in markdown
    import pandas as pd
    summary = pd.read_csv(out / 'results.csv').set_index('row')
    assert summary.loc[LAUNCHED, 'n_seeds'] == 1 and summary.loc[LAUNCHED, 'miou_ss'] >= 0
    assert not _temporary_files(reports)


def test_the_job_process_refuses_an_unparsable_state_in_one_line(tmp_path, synthetic_root):
    row = load_table('table3').row('seg-t-16')
    work_dir = tmp_path / 'job'
    work_dir.mkdir()
    (work_dir / 'job.json').write_text('{not json')
    JobRequest(row=row, profile='smoke', seed=0, work_dir=work_dir,
               data_root=synthetic_root).write(work_dir / 'request.json')
    done = subprocess.run([sys.executable, '-m', 'harness.launch.job', work_dir / 'request.json'],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'PYTHONPATH': str(REPO_ROOT)})
    assert done.returncode != 0
    assert done.stderr.count('\n') == 1 and done.stderr.startswith('error: table3/seg-t-16'), \
        done.stderr
    assert f"unreadable state ({work_dir / 'job.json'})" in done.stderr
    assert (work_dir / 'job.json').read_text() == '{not json'
    assert not _temporary_files(work_dir)


# --- a full disk ----------------------------------------------------------------------------

# Two rows on a work root of `size`: the first fills it (its log, W&B run, checkpoint), the
# second must still be launched. W&B is as talkative as a user has it (the tests' conftest
# silences it): its last line must not pass for the job's error. What is left is listed from
# inside the namespace.
FULL_WORK_ROOT = r'''
work=$1; size=$2; out=$3; py=$4; data=$5
mount -t tmpfs -o size=$size tmpfs "$work" || exit 97
env -u WANDB_SILENT "$py" -m harness run --table table3 --rows seg-t-16,seg-s-16 --profile smoke \
    --work-root "$work" --data-root "$data" --max-iters 10 --no-report > "$out/run.out" \
    2> "$out/run.err"
echo $? > "$out/run.rc"
find "$work" -name '*.partial' > "$out/partial"
for row in seg-t-16 seg-s-16; do
    cp "$work/smoke/table3/$row/seed0/job.json" "$out/$row.json" 2>/dev/null || true
done
'''


@pytest.mark.parametrize('size', ['180k', '1200k'])
def test_full_work_root_one_line_each_and_the_next_row_launched(tmp_path, size,
                                                                synthetic_root):
    work, out = tmp_path / 'disk', tmp_path / 'out'
    work.mkdir()
    out.mkdir()
    done = in_namespace(FULL_WORK_ROOT, work, size, out, sys.executable, synthetic_root)
    assert done.returncode == 0, done.stderr
    stdout, stderr = (out / 'run.out').read_text(), (out / 'run.err').read_text()
    assert int((out / 'run.rc').read_text()) != 0, stdout
    assert 'Traceback' not in stdout + stderr and 'Exception in thread' not in stderr, stderr
    assert '[2/2] table3/seg-s-16 seed0: training' in stdout, stdout  # the next row launched
    lines = stderr.splitlines()
    finished = stdout.count(': finished in ')
    assert lines and len(lines) == 2 - finished, stderr  # one line per job that did not finish
    for line in lines:  # each names the job's folder and the full disk
        assert line.startswith('error: table3/seg-'), line
        assert str(work / 'smoke' / 'table3') in line, line
        assert 'no space left on device' in line.lower(), line
    if size == '180k':  # the first job fails on its first files: what it said names both,
        # before what the launcher adds (its state, its log)
        first = next(line for line in lines if line.startswith('error: table3/seg-t-16 seed0 '))
        cause = first.split(' -- log: ')[0].split(' (not recorded in its state')[0]
        cause = cause.split(': ', 2)[-1]
        assert 'No space left on device' in cause and str(work / 'smoke' / 'table3') in cause, \
            first
    assert (out / 'partial').read_text() == ''  # no temporary file left
    for row in ('seg-t-16', 'seg-s-16'):
        if not (out / f'{row}.json').exists():  # the job could not write its first state
            continue
        state = json.loads((out / f'{row}.json').read_text())
        said = [line for line in lines if line.startswith(f'error: table3/{row} ')]
        if state['status'] == 'running':  # no room left for a new state: the line says so
            assert said and 'not recorded in its state: No space left on device' in said[0]
        else:
            assert state['status'] in ('finished', 'failed'), state
        if state['status'] == 'failed':
            assert 'no space left on device' in state['error'].lower(), state['error']


# A report built on a roomy reports folder, which is then filled to its last few kilobytes: the
# next build must fail naming the file it could not write, and leave the first one as it was.
FULL_REPORTS = r'''
reports=$1; out=$2; py=$3; work=$4
mount -t tmpfs -o size=8m tmpfs "$reports" || exit 97
args=(-m harness report --table table3 --profile smoke --work-root "$work" --reports "$reports"
      --no-wandb-report)
"$py" "${args[@]}" > "$out/first.out" 2>&1 || { echo first build failed; exit 1; }
cp -a "$reports" "$out/before"
avail=$(df --output=avail -B1 "$reports" | tail -1)
fallocate -l $((avail - 16384)) "$reports/filler"
"$py" "${args[@]}" > "$out/second.out" 2> "$out/second.err"
echo $? > "$out/second.rc"
rm "$reports/filler"
cp -a "$reports" "$out/after"
find "$reports" -name '*.partial' > "$out/partial"
'''


def test_full_reports_folder_keeps_the_previous_report(tmp_path, damaged_work):
    work, _, _ = damaged_work
    reports, out = tmp_path / 'reports', tmp_path / 'out'
    reports.mkdir()
    out.mkdir()
    done = in_namespace(FULL_REPORTS, reports, out, sys.executable, work)
    assert done.returncode == 0, done.stderr + done.stdout
    assert int((out / 'second.rc').read_text()) == 2
    stderr = (out / 'second.err').read_text()
    folder = reports / 'smoke' / 'table3'
    assert stderr.count('\n') == 1 and stderr.startswith(f'error: {folder}/'), \
        stderr
    assert 'No space left on device (the previous report is left as it was)' in stderr
    before, after = out / 'before' / 'smoke' / 'table3', out / 'after' / 'smoke' / 'table3'
    assert sorted(p.name for p in before.iterdir()) == sorted(p.name for p in after.iterdir())
    for file in before.iterdir():
        assert (after / file.name).read_bytes() == file.read_bytes(), file.name
    assert (out / 'partial').read_text() == ''
