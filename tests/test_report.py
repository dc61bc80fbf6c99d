"""The report's arithmetic and its reading of job folders."""
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import pandas as pd
import pytest

from harness.core.layout import CURVES_FILE, DEFAULT_REPORTS, PER_CLASS_FILE, job_dir
from harness.core.profiles import SMOKE
from harness.core.spec import EXPERIMENTS, SEED_LOGS, load_table
from harness.core.state import read_curves, write_state
from harness.results.collect import JOB_COLUMNS
from harness.results.report import build_report, seed_eval_curve, summarise
from tests.helpers import REPO_ROOT, harness_cli, write_result_record

TABLE3 = load_table('table3')


def _jobs(*records):
    """Jobs as collect_jobs gives them; every seed of one recipe and code unless a record
    says otherwise."""
    base = {**dict.fromkeys(JOB_COLUMNS), 'marks': [], 'seed_free': 'recipe',
            'code': {'sha256': 'code', 'files': {}, 'packages': {}}}
    return pd.DataFrame([{**base, **r} for r in records], columns=JOB_COLUMNS)


def test_mean_std_delta_and_verdict_over_seeds():
    jobs = _jobs(
        {'row': 'seg-bd-16', 'seed': 0, 'status': 'finished', 'mIoU_final': 46.5},
        {'row': 'seg-bd-16', 'seed': 1, 'status': 'finished', 'mIoU_final': 47.3},
        {'row': 'seg-b-16', 'seed': 0, 'status': 'finished', 'mIoU_final': 43.0},
        {'row': 'seg-s-16', 'seed': 0, 'status': 'failed', 'error': 'CUDA out of memory'},
        {'row': 'seg-l-16', 'seed': 0, 'status': 'running'},
    )
    summary = summarise(TABLE3, jobs, 'full').set_index('row')
    bd = summary.loc['seg-bd-16']
    assert bd.miou_ss == pytest.approx(46.9)
    assert bd.miou_ss_std == pytest.approx(math.sqrt(0.32))  # sample std of 46.5, 47.3
    assert bd.n_seeds == 2
    assert bd.delta == pytest.approx(46.9 - 47.10)
    assert bd.verdict == 'reproduced' and bd.rule.startswith('interval')
    b16 = summary.loc['seg-b-16']
    v3_b16 = TABLE3.row('seg-b-16').paper['v3'].miou
    assert b16.delta == pytest.approx(43.0 - v3_b16) and b16.verdict == 'not reproduced'
    assert b16.rule.startswith('tolerance')  # one seed
    assert summary.loc['seg-s-16'].status == 'failed: CUDA out of memory'
    assert summary.loc['seg-l-16'].status == 'running'
    assert summary.loc['seg-t-16'].status == 'not run'
    # unknown in v1 and v3, and no release of the authors' to stand in
    assert summary.loc['seg-t-16'].verdict == 'no published value'
    assert math.isnan(summary.loc['seg-t-16'].delta)

    v1 = summarise(TABLE3, jobs, 'full', paper_version='v1', tolerance=3.0).set_index('row')
    assert v1.loc['seg-b-16'].delta == pytest.approx(43.0 - TABLE3.row('seg-b-16').paper['v1']
                                                     .miou)
    assert v1.loc['seg-b-16'].verdict == 'reproduced'  # |43.0 - 45.69| within 3


def test_smoke_rows_are_never_compared_with_the_paper():
    jobs = _jobs({'row': 'seg-bd-16', 'seed': 0, 'status': 'finished', 'mIoU_final': 47.0})
    row = summarise(TABLE3, jobs, 'smoke').set_index('row').loc['seg-bd-16']
    assert math.isnan(row.delta) and row.verdict == 'smoke: not comparable'


def test_curves_are_stitched_across_restarts(tmp_path):
    """A restart re-logs the iterations after its checkpoint: the last line of a step wins."""
    lines = [
        {'loss': 3.0, 'lr': 0.1, 'step': 5}, {'loss': 2.5, 'lr': 0.1, 'step': 10},
        {'mIoU': 10.0, 'mAcc': 20.0, 'aAcc': 30.0, 'step': 10},
        {'loss': 2.4, 'lr': 0.1, 'step': 15},  # lost with the kill, done again below
        {'loss': 2.2, 'lr': 0.1, 'step': 15}, {'loss': 2.0, 'lr': 0.1, 'step': 20},
        {'mIoU': 20.0, 'mAcc': 30.0, 'aAcc': 40.0, 'step': 20},
    ]
    (tmp_path / 'vis_data').mkdir()
    text = '\n'.join(json.dumps(line) for line in lines) + '\n{"loss": 1.'  # torn last line
    (tmp_path / 'vis_data' / 'scalars.json').write_text(text)
    train, val = read_curves(tmp_path)
    assert list(train.index) == [5, 10, 15, 20]
    assert train.loc[15, 'loss'] == 2.2
    assert list(val['mIoU']) == [10.0, 20.0]


def test_reference_columns_come_from_the_spec():
    summary = summarise(TABLE3, _jobs(), 'full').set_index('row')
    assert summary.loc['seg-bd-16', 'seed_repo'] == 46.69
    assert summary.loc['seg-bd-16', 'official_zoo'] == 47.1
    assert summary.loc['seg-s-16', 'mmseg_zoo'] == 45.75
    assert math.isnan(summary.loc['seg-t-16', 'official_zoo'])


def test_seed_curves_are_the_published_ones_in_percent():
    row = TABLE3.row('seg-bd-16')
    curve = seed_eval_curve(row.seed_curves)
    assert list(curve.index[:2]) == [16000, 32000] and curve.index[-1] == 160000
    assert curve['mIoU'].iloc[0] == pytest.approx(41.83)  # 0.4183 in the log
    assert curve['mIoU'].iloc[-1] == pytest.approx(46.69)  # the seed repo's reported result


def test_every_paper_value_in_the_table_has_its_source_as_a_footnote(tmp_path):
    out = build_report(TABLE3, 'full', tmp_path / 'work', tmp_path / 'reports', wandb=False)
    report = (out / 'report.md').read_text()
    row_line = next(line for line in report.splitlines() if line.startswith('| seg-b-16 |'))
    v1_mark = row_line.split(' | ')[2].split('45.69')[1]
    assert v1_mark.startswith('[^')
    footnote = next(line for line in report.splitlines() if line.startswith(v1_mark + ':'))
    assert "seed repo README, '6th line in Table 3'" in footnote and '[read]' in footnote
    assert '| not run |' in row_line  # nothing ran: the report still builds from an empty disk


# --- job folders on disk, as a job leaves them -------------------------------------------------

def _write_job(work_root, profile, row, seed, status, val, train=None, max_iters=None,
               per_class=None):
    """A job folder with its state and curves (``val``: iteration -> mIoU), in the files and
    formats the job process writes."""
    work_dir = job_dir(work_root, profile, row.folder, row.id, seed)
    (work_dir / CURVES_FILE).parent.mkdir(parents=True, exist_ok=True)
    lines = [{'loss': loss, 'lr': 0.001, 'time': 0.5, 'step': int(it)}
             for it, loss in (train or {}).items()]
    lines += [{'mIoU': float(m), 'mAcc': float(m), 'aAcc': float(m), 'step': int(it)}
              for it, m in val.items()]
    lines.sort(key=lambda line: line['step'])
    (work_dir / CURVES_FILE).write_text(''.join(json.dumps(line) + '\n' for line in lines))
    meta = {'request': {'max_iters': max_iters}} if max_iters else {}
    write_state(work_dir, status=status, host=socket.gethostname(), pid=os.getpid(),
                wandb_run=f'segmenter-repro/{row.id}-{seed}', wandb_run_id=f'{row.id}-{seed}',
                meta=meta, gpus=1)
    if per_class:
        (work_dir / PER_CLASS_FILE).write_text(json.dumps({'iter': max(val), 'IoU': per_class}))
    if status == 'finished':
        write_result_record(work_dir, row, profile, seed, max_iters)
    return work_dir


def test_delta_defaults_to_the_paper_version_matching_each_row(tmp_path):
    """Every row trains the v3 setup (AugReg weights; mmseg's normalised mask decoder): Δ and the
    verdict are taken against v3, v1 stays in its column, and the report says which."""
    row = TABLE3.row('seg-b-16')
    assert row.matches == 'v3' and 'AugReg' in row.matches_reason
    v1, v3 = row.paper['v1'].miou, row.paper['v3'].miou
    ours = (v1 + v3) / 2 + 0.4  # within 1 mIoU of v3, not of v1: the verdicts differ
    _write_job(tmp_path / 'work', 'full', row, 0, 'finished', {160000: ours})
    out = build_report(TABLE3, 'full', tmp_path / 'work', tmp_path / 'reports', wandb=False)
    results = pd.read_csv(out / 'results.csv').set_index('row')
    assert results.loc[row.id, 'paper_version'] == 'v3'
    assert results.loc[row.id, 'delta'] == pytest.approx(ours - v3)
    assert results.loc[row.id, 'verdict'] == 'reproduced'
    assert results.loc[row.id, 'paper_miou_v1'] == v1  # still shown
    report = (out / 'report.md').read_text()
    line = next(x for x in report.splitlines() if x.startswith(f'| {row.id} |'))
    assert '| v3 |' in line and f'| {ours - v3:+.2f} |' in line
    assert f'- {row.model}: paper v3 ({v3:.2f}) — {row.matches_reason}' in report

    out = build_report(TABLE3, 'full', tmp_path / 'work', tmp_path / 'reports', 'v1',
                       wandb=False)
    results = pd.read_csv(out / 'results.csv').set_index('row')
    assert results.loc[row.id, 'paper_version'] == 'v1'
    assert results.loc[row.id, 'delta'] == pytest.approx(ours - v1)
    assert results.loc[row.id, 'verdict'] == 'not reproduced'
    assert 'Δ against paper v1 for every row (`--paper-version v1`)' in \
        (out / 'report.md').read_text()


def test_seeds_get_a_student_t_interval_and_the_interval_rule():
    """n ≥ 2: the 95% interval is mean ± t(0.975, n-1) s/√n, and the verdict asks whether the
    paper value lies in it (a tight spread near but off the paper value is not reproduced even
    within the tolerance); n = 1: the tolerance rule."""
    paper = TABLE3.row('seg-bd-16').paper['v3'].miou
    # t quantiles in closed form: 1 dof is Cauchy, 2 dof has an algebraic inverse
    t1 = math.tan(math.pi * (0.975 - 0.5))
    t2 = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)
    two = [paper - 0.6, paper + 0.2]
    three = [paper - 0.62, paper - 0.58, paper - 0.60]
    for seeds, t, verdict in ((two, t1, 'reproduced'), (three, t2, 'not reproduced')):
        jobs = _jobs(*({'row': 'seg-bd-16', 'seed': k, 'status': 'finished', 'mIoU_final': m}
                       for k, m in enumerate(seeds)))
        row = summarise(TABLE3, jobs, 'full').set_index('row').loc['seg-bd-16']
        mean, std = sum(seeds) / len(seeds), pd.Series(seeds).std()
        half = t * std / math.sqrt(len(seeds))
        assert (row.ci_low, row.ci_high) == pytest.approx((mean - half, mean + half))
        assert abs(row.delta) <= 1.0  # the tolerance alone would call both reproduced
        assert row.verdict == verdict and row.rule.startswith('interval')
        smoke = summarise(TABLE3, jobs, 'smoke').set_index('row').loc['seg-bd-16']
        assert smoke.verdict == 'smoke: not comparable' and smoke.rule.startswith('interval')
        assert (smoke.ci_low, smoke.ci_high) == pytest.approx((mean - half, mean + half))
    one = _jobs({'row': 'seg-bd-16', 'seed': 0, 'status': 'finished', 'mIoU_final': paper - 0.6})
    row = summarise(TABLE3, one, 'full').set_index('row').loc['seg-bd-16']
    assert math.isnan(row.ci_low) and row.verdict == 'reproduced'
    assert row.rule.startswith('tolerance')


def _seed_repo_replay(work_root, row, until, shift):
    """A running full job whose curve is the seed repository's published one up to iteration
    ``until``, shifted by ``shift`` mIoU."""
    prefix = SEED_LOGS / row.seed_curves
    val = pd.read_csv(f'{prefix}_eval.csv').set_index('iter')['mIoU'] * 100 + shift
    train = pd.read_csv(f'{prefix}_train.csv').set_index('iter')['loss']
    return _write_job(work_root, 'full', row, 0, 'running', val[val.index <= until].to_dict(),
                      train[train.index <= until].to_dict())


@pytest.mark.parametrize('shift', [-3.0, 0.0])
def test_running_job_is_measured_against_the_seed_repository_curve(tmp_path, shift):
    row = TABLE3.row('seg-bd-16')
    until = 96000
    _seed_repo_replay(tmp_path / 'work', row, until, shift)
    out = build_report(TABLE3, 'full', tmp_path / 'work', tmp_path / 'reports', wandb=False)
    progress = pd.read_csv(out / 'results.csv').set_index('row').loc[row.id, 'progress']
    at = f'{until / 160000:.0%}'
    if shift < 0:
        assert progress == f"seed0: behind by {-shift:.2f} mIoU at {at} (against the seed " \
                           "repository's curve)"
    else:
        assert progress.startswith('seed0: on track (+0.00 mIoU against the seed repository')
    assert f'| {progress.split(": ", 1)[1]} |' in (out / 'report.md').read_text()


def test_without_a_published_curve_a_running_seed_is_measured_against_finished_ones(tmp_path):
    """Smoke rows have no published curve: the row's finished seeds are the reference, at the
    same fraction of the schedule (linear between their evaluations)."""
    row = TABLE3.row('seg-t-16')
    first, last = SMOKE.first_val, SMOKE.max_iters
    _write_job(tmp_path / 'work', 'smoke', row, 0, 'finished', {first: 10.0, last: 50.0})
    _write_job(tmp_path / 'work', 'smoke', row, 1, 'running', {first: 9.0, last // 2: 20.0})
    out = build_report(TABLE3, 'smoke', tmp_path / 'work', tmp_path / 'reports', wandb=False)
    expected = 10.0 + (50.0 - 10.0) * (last // 2 - first) / (last - first)
    progress = pd.read_csv(out / 'results.csv').set_index('row').loc[row.id, 'progress']
    assert progress == f'seed1: behind by {expected - 20.0:.2f} mIoU at ' \
                       f'{(last // 2) / last:.0%} (against the finished seed (1))'


def _tree(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()} \
        if root.exists() else None


def test_reports_belong_to_their_work_root_and_spec(tmp_path):
    """Without --reports, another work root reports into its own reports/ and leaves the
    default reports byte-identical; a spec given by path gets folders of its own, for its
    jobs and its report: each report reads its own spec's job."""
    row = load_table('table6').row('seg-t-mask-16')
    work = tmp_path / 'work'
    _write_job(work, 'smoke', row, 0, 'finished', {SMOKE.first_val: 5.0, SMOKE.max_iters: 9.0})
    spec = tmp_path / 'mine.yaml'
    shutil.copy(EXPERIMENTS / 'table6.yaml', spec)
    _write_job(work, 'smoke', load_table(spec).row(row.id), 0, 'finished',
               {SMOKE.first_val: 5.0, SMOKE.max_iters: 11.0})
    before = _tree(DEFAULT_REPORTS)
    result = harness_cli('report', '--table', 'table6', '--table', spec, '--profile', 'smoke',
                         '--work-root', work, '--no-wandb-report')
    assert result.returncode == 0, result.stderr
    assert _tree(DEFAULT_REPORTS) == before
    folders = sorted(p.name for p in (work / 'reports' / 'smoke').iterdir())
    assert len(folders) == 2 and 'table6' in folders
    for folder in folders:  # each report read its own spec's job
        results = pd.read_csv(work / 'reports' / 'smoke' / folder / 'results.csv')
        expected = 9.0 if folder == 'table6' else 11.0
        assert results.set_index('row').loc[row.id, 'miou_ss'] == expected


KILL_WHILE_WRITING = '''
import os, signal, sys
from pathlib import Path
from harness.core.spec import load_table
from harness.results.report import build_report

def kill_on_open(event, args):  # when the HTML is opened for writing, the rest written
    if event == 'open' and 'report.html' in str(args[0]) and 'w' in str(args[1]):
        os.kill(os.getpid(), signal.SIGKILL)

sys.addaudithook(kill_on_open)
build_report(load_table('table3'), 'smoke', Path(sys.argv[1]), Path(sys.argv[2]), wandb=False)
'''


def test_a_build_killed_while_writing_leaves_the_previous_report_whole(tmp_path):
    row = TABLE3.row('seg-t-16')
    work, reports = tmp_path / 'work', tmp_path / 'reports'
    _write_job(work, 'smoke', row, 0, 'finished', {SMOKE.first_val: 5.0, SMOKE.max_iters: 9.0})
    out = build_report(TABLE3, 'smoke', work, reports, wandb=False)
    before = _tree(out)
    _write_job(work, 'smoke', row, 1, 'finished', {SMOKE.first_val: 6.0, SMOKE.max_iters: 12.0})
    killed = subprocess.run([sys.executable, '-c', KILL_WHILE_WRITING, work, reports],
                            cwd=REPO_ROOT, env={**os.environ, 'PYTHONPATH': str(REPO_ROOT)},
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = [p.name for p in out.iterdir() if p.name.startswith('.')]
    # it died mid-build: the table, figures and Markdown written, the HTML about to be
    assert any(name.startswith('.report.md.') for name in left), left
    assert _tree(out) == {**before, **{p.relative_to(out): p.read_bytes() for p in
                                       out.iterdir() if p.name in left}}
    again = build_report(TABLE3, 'smoke', work, reports, wandb=False)  # tidies what was left
    assert not [p for p in again.iterdir() if p.name.startswith('.')]
    assert pd.read_csv(again / 'results.csv').set_index('row').loc[row.id, 'n_seeds'] == 2


def test_html_cells_are_never_none_or_nan(tmp_path):
    row = TABLE3.row('seg-bd-16')
    _seed_repo_replay(tmp_path / 'work', row, 48000, -1.0)
    out = build_report(TABLE3, 'full', tmp_path / 'work', tmp_path / 'reports', wandb=False)
    page = (out / 'report.html').read_text()
    text = re.sub(r'data:image/png;base64,[^"]+', '', page)
    assert not re.search(r'\bNone\b|\bnan\b|\bNaN\b', text)
    assert page.count('data:image/png;base64,') == 2  # comparison and curves
    assert '<td>—</td>' in page


def test_a_changed_pretrained_file_keeps_the_seed_out_with_a_marked_status(tmp_path):
    """The weights a job loaded, one byte changed where this machine keeps them: the row's
    number loses that seed and its status says why; a machine without the file checks nothing."""
    row = TABLE3.row('seg-b-16')
    weights = tmp_path / 'weights' / 'vit_b.pth'
    weights.parent.mkdir()
    weights.write_bytes(os.urandom(1000))
    work = tmp_path / 'work'
    for seed, miou in ((0, 45.0), (1, 46.0)):
        work_dir = _write_job(work, 'full', row, seed, 'running', {160000: miou})
        write_result_record(work_dir, row, 'full', seed, pretrained=weights)
        write_state(work_dir, status='finished')

    def reported():
        out = build_report(TABLE3, 'full', work, tmp_path / 'reports', wandb=False)
        return pd.read_csv(out / 'results.csv').set_index('row').loc[row.id]

    assert reported()['n_seeds'] == 2 and reported()['miou_ss'] == pytest.approx(45.5)
    data = bytearray(weights.read_bytes())
    data[500] ^= 0xFF
    weights.write_bytes(bytes(data))
    changed = reported()
    assert changed['n_seeds'] == 0 and math.isnan(changed['miou_ss'])
    assert 'seed0 check failed: pretrained vit_b.pth: SHA-256 differs' in changed['status']
    weights.unlink()  # a laptop without the weights: nothing to compare, the record stands
    assert reported()['n_seeds'] == 2


def test_report_without_job_folders_says_so_and_keeps_the_report_there(tmp_path):
    """No job folder of a table: one line and a non-zero exit, never an empty report written
    over the one there; of several tables, those with jobs are built, the others kept."""
    work, reports = tmp_path / 'work', tmp_path / 'reports'
    earlier = {}
    for table in ('table3', 'table6'):
        (reports / 'smoke' / table).mkdir(parents=True)
        (reports / 'smoke' / table / 'report.md').write_text(f'earlier {table} report\n')
        earlier[table] = f'earlier {table} report\n'
    args = ('--profile', 'smoke', '--work-root', work, '--reports', reports,
            '--no-wandb-report')
    none = harness_cli('report', '--table', 'table3', '--table', 'table6', *args)
    assert none.returncode != 0 and none.stdout == ''
    assert none.stderr == ('error: nothing to report: no job folder of table3, table6 under '
                           f"{work / 'smoke'}\n")
    assert not work.exists()
    _write_job(work, 'smoke', load_table('table6').row('seg-t-mask-16'), 0, 'finished',
               {SMOKE.first_val: 5.0})
    some = harness_cli('report', '--table', 'table3', '--table', 'table6', *args)
    assert some.returncode == 0, some.stderr
    assert some.stderr == ('note: nothing to report for table3: no job folder under '
                           f"{work / 'smoke' / 'table3'}\n")
    assert (reports / 'smoke' / 'table3' / 'report.md').read_text() == earlier['table3']
    assert (reports / 'smoke' / 'table6' / 'report.md').read_text() != earlier['table6']


def test_an_evaluated_released_checkpoint_is_something_to_report(tmp_path):
    from harness.cli.report import _has_jobs
    from harness.core.layout import released_dir
    row = TABLE3.row('seg-bd-16')
    assert not _has_jobs(TABLE3, 'full', tmp_path)
    released_dir(tmp_path, row.folder, row.id, True, 'a' * 64).mkdir(parents=True)
    assert _has_jobs(TABLE3, 'full', tmp_path)  # the report's released column
    assert not _has_jobs(TABLE3, 'smoke', tmp_path)  # smoke reports show none
    job_dir(tmp_path, 'smoke', row.folder, row.id, 2).mkdir(parents=True)
    assert _has_jobs(TABLE3, 'smoke', tmp_path)


def test_a_job_frozen_by_an_older_harness_is_not_called_another_recipe(tmp_path):
    """Recipe sources of an older format (ast.dump, the installed mmseg) cannot be compared:
    a job frozen so is shown as it is, and its record (made with no drift accepted) takes the
    row's sources now, which the report then compares."""
    from harness.core.request import JobRequest
    from harness.core.sources import recipe_sources
    from harness.launch.job_records import result_record
    row = TABLE3.row('seg-b-16')
    work = tmp_path / 'work'
    work_dir = _write_job(work, 'full', row, 0, 'interrupted', {1000: 30.0})
    (work_dir / 'recipe.json').write_text(json.dumps({'fingerprint': 'f', 'sources': 'old'}))
    out = build_report(TABLE3, 'full', work, tmp_path / 'reports', wandb=False)
    status = pd.read_csv(out / 'results.csv').set_index('row').loc[row.id, 'status']
    assert 'other recipe' not in status, status
    request = JobRequest(row=row, profile='full', seed=0, work_dir=work_dir, data_root=None)
    legacy = {'fingerprint': 'f', 'sources': 'old', 'view': {}}
    made = result_record(request, work_dir, legacy, {'history': [{'drift': None}]})
    assert made['recipe']['sources'] == recipe_sources(row)
    drifted = result_record(request, work_dir, legacy, {'history': [{'drift': ['k']}]})
    assert drifted['recipe']['sources'] is None
