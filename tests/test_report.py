"""The report's arithmetic and its reading of job folders."""
import json
import math

import pandas as pd
import pytest

from harness.layout import read_curves
from harness.results.collect import JOB_COLUMNS
from harness.results.report import build_report, seed_eval_curve, summarise
from harness.prepare.spec import load_table

TABLE3 = load_table('table3')


def _jobs(*records):
    base = dict.fromkeys(JOB_COLUMNS)
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
    assert bd.verdict == 'reproduced'
    b16 = summary.loc['seg-b-16']
    assert b16.delta == pytest.approx(43.0 - 45.69) and b16.verdict == 'not reproduced'
    assert summary.loc['seg-s-16'].status == 'failed: CUDA out of memory'
    assert summary.loc['seg-l-16'].status == 'running'
    assert summary.loc['seg-t-16'].status == 'not run'
    assert summary.loc['seg-t-16'].verdict == 'no paper value'  # v1 unknown: no delta
    assert math.isnan(summary.loc['seg-t-16'].delta)

    v3 = summarise(TABLE3, jobs, 'full', paper_version='v3', tolerance=2.0).set_index('row')
    assert v3.loc['seg-b-16'].delta == pytest.approx(43.0 - 48.06)
    assert v3.loc['seg-bd-16'].verdict == 'reproduced'
    strict = summarise(TABLE3, jobs, 'full', tolerance=0.1).set_index('row')
    assert strict.loc['seg-bd-16'].verdict == 'not reproduced'


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
    out = build_report(TABLE3, 'full', tmp_path / 'work', tmp_path / 'reports')
    report = (out / 'report.md').read_text()
    row_line = next(line for line in report.splitlines() if line.startswith('| seg-b-16 |'))
    v1_mark = row_line.split(' | ')[2].split('45.69')[1]
    assert v1_mark.startswith('[^')
    footnote = next(line for line in report.splitlines() if line.startswith(v1_mark + ':'))
    assert "seed repo README, '6th line in Table 3'" in footnote and '[read]' in footnote
    assert '| not run |' in row_line  # nothing ran: the report still builds from an empty disk
