"""What each report row's Δ and verdict are taken against: the paper value of the chosen version
where it is known, else the single-scale mIoU the authors state for their released model (the
spec's ``official_zoo`` reference), else nothing. Real job folders, the real report build."""
import json
import math
import os
import re
import socket

import pandas as pd
import pytest
import yaml

from harness.core.layout import CURVES_FILE, job_dir
from harness.core.profiles import SMOKE
from harness.core.spec import EXPERIMENTS, load_table
from harness.core.state import write_state
from harness.results.report import DEFAULT_TOLERANCE, build_report
from tests.helpers import write_result_record

RELEASE_LABEL = "authors' release"
NO_TARGET = 'no published value'


def _finished_job(work_root, profile, row, seed, miou, last_iter=160000):
    """A finished job folder as the job process leaves it: its state and its curves."""
    # a spec given by path keeps its jobs in a folder of its own (Row.folder) where the layout
    # has one; before that, in the table's
    work_dir = job_dir(work_root, profile, getattr(row, 'folder', row.table), row.id, seed)
    (work_dir / CURVES_FILE).parent.mkdir(parents=True, exist_ok=True)
    lines = [{'loss': 1.0, 'lr': 0.001, 'time': 0.5, 'step': last_iter},
             {'mIoU': float(miou), 'mAcc': float(miou), 'aAcc': float(miou), 'step': last_iter}]
    (work_dir / CURVES_FILE).write_text(''.join(json.dumps(line) + '\n' for line in lines))
    write_state(work_dir, status='finished', host=socket.gethostname(), pid=os.getpid(),
                wandb_run=f'segmenter-repro/{row.id}-{seed}', wandb_run_id=f'{row.id}-{seed}',
                meta={}, gpus=1)
    write_result_record(work_dir, row, profile, seed)
    return work_dir


def _report(table, work, reports, profile='full', paper_version=None):
    out = build_report(table, profile, work, reports, paper_version, wandb=False)
    return (pd.read_csv(out / 'results.csv').set_index('row'), (out / 'report.md').read_text(),
            (out / 'report.html').read_text())


def _row_line(report, row_id):
    return next(line for line in report.splitlines() if line.startswith(f'| {row_id} |'))


def _footnote(report, cell):
    """The footnote text that the mark ending ``cell`` points to."""
    mark = re.search(r'\[\^\d+\]$', cell).group()
    return next(line for line in report.splitlines() if line.startswith(mark + ':'))


def _cells(line):
    return [c.strip() for c in line.strip('|').split('|')]


def _copied_spec(tmp_path, name, mutate):
    data = yaml.safe_load((EXPERIMENTS / f'{name}.yaml').read_text())
    mutate({row['id']: row for row in data['rows']})
    path = tmp_path / f'{name}-copy.yaml'
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return load_table(path)


def test_seg_b_mask_16_is_measured_against_the_authors_release(tmp_path):
    """Seg-B-Mask/16 has no known paper value: Δ and verdict are taken against the release the
    authors state 48.5 for, labelled so, its source in a footnote; the paper columns stay —."""
    table = load_table('table6')
    row = table.row('seg-b-mask-16')
    assert row.paper[row.matches].miou is None  # the premise: unknown in the matching version
    release = row.references['official_zoo']
    ours = release.miou + 0.4  # within the tolerance of the release
    _finished_job(tmp_path / 'work', 'full', row, 0, ours)
    results, report, page = _report(table, tmp_path / 'work', tmp_path / 'reports')

    line = results.loc[row.id]
    assert line.paper_version == RELEASE_LABEL
    assert line.paper_miou == release.miou
    assert line.delta == pytest.approx(ours - release.miou)
    assert line.verdict == 'reproduced' and line.rule.startswith('tolerance')
    assert math.isnan(line.paper_miou_v1) and math.isnan(line.paper_miou_v3)  # never filled in

    cells = _cells(_row_line(report, row.id))
    assert cells[4].startswith(RELEASE_LABEL)  # the "Δ against" column
    assert cells[2] == cells[3] == '—'
    assert f'{ours - release.miou:+.2f}' in cells
    footnote = _footnote(report, cells[4])
    assert release.source in footnote and f'{release.miou:.2f}' in footnote
    assert f'- {row.model}: {RELEASE_LABEL} ({release.miou:.2f}) — the paper {row.matches} ' \
           'value is unknown' in report
    assert f'<td>{RELEASE_LABEL}</td>' in page  # the HTML table says it too

    # smoke numbers are never compared, whatever the target
    _finished_job(tmp_path / 'work', 'smoke', row, 0, ours, SMOKE.max_iters)
    smoke, _, _ = _report(table, tmp_path / 'work', tmp_path / 'reports', 'smoke')
    assert math.isnan(smoke.loc[row.id, 'delta'])
    assert smoke.loc[row.id, 'verdict'] == 'smoke: not comparable'


def test_the_release_target_follows_the_spec(tmp_path):
    """The value and its source come from the spec's official_zoo reference: a copy that changes
    them changes the report's Δ, verdict, rule and footnote."""
    original = load_table('table6').row('seg-b-mask-16').references['official_zoo']
    moved, source = original.miou + 2.0, 'a test release, stated single-scale'

    def mutate(rows):
        rows['seg-b-mask-16']['references']['official_zoo'] = {'miou': moved, 'source': source}

    table = _copied_spec(tmp_path, 'table6', mutate)
    row = table.row('seg-b-mask-16')
    seeds = [original.miou + 0.1, original.miou + 0.3]  # near the original, far from the copy's
    for seed, miou in enumerate(seeds):
        _finished_job(tmp_path / 'work', 'full', row, seed, miou)
    results, report, _ = _report(table, tmp_path / 'work', tmp_path / 'reports')

    line = results.loc[row.id]
    mean = sum(seeds) / len(seeds)
    assert line.paper_version == RELEASE_LABEL and line.paper_miou == moved
    assert line.delta == pytest.approx(mean - moved)
    assert line.verdict == 'not reproduced'
    assert line.rule.startswith('interval: release value outside')
    footnote = _footnote(report, _cells(_row_line(report, row.id))[4])
    assert source in footnote and f'{moved:.2f}' in footnote and original.source not in footnote


def test_rows_with_neither_a_paper_value_nor_a_release_get_no_verdict(tmp_path):
    table = load_table('table3')
    neither = [r for r in table.rows
               if r.paper[r.matches].miou is None and 'official_zoo' not in r.references]
    assert {'seg-t-16', 'seg-s-32'} <= {r.id for r in neither}
    for i, row in enumerate(neither):
        _finished_job(tmp_path / 'work', 'full', row, 0, 40.0 + i)
    results, report, _ = _report(table, tmp_path / 'work', tmp_path / 'reports')
    for row in neither:
        line = results.loc[row.id]
        assert line.status == 'finished' and not math.isnan(line.miou_ss)
        assert line.paper_version == NO_TARGET and line.verdict == NO_TARGET
        assert math.isnan(line.delta) and math.isnan(line.paper_miou)
        cells = _cells(_row_line(report, row.id))
        assert cells[4] == NO_TARGET and cells[-2] == NO_TARGET and cells[-1] == '—'
        assert f'- {row.model}: {NO_TARGET} — the paper {row.matches} value is unknown' in report


def test_a_known_paper_value_is_still_the_target(tmp_path):
    """Seg-L-Mask/16 has both a v3 value and a release that differs from it: the paper wins."""
    table = load_table('table6')
    row = table.row('seg-l-mask-16')
    paper, release = row.paper[row.matches].miou, row.references['official_zoo'].miou
    assert paper is not None and abs(paper - release) > 0.1  # the two targets are told apart
    ours = paper - 0.2
    _finished_job(tmp_path / 'work', 'full', row, 0, ours)
    results, report, _ = _report(table, tmp_path / 'work', tmp_path / 'reports')
    line = results.loc[row.id]
    assert line.paper_version == row.matches and line.paper_miou == paper
    assert line.delta == pytest.approx(ours - paper)
    assert abs(ours - paper) <= DEFAULT_TOLERANCE and line.verdict == 'reproduced'
    assert _cells(_row_line(report, row.id))[4] == row.matches  # no release mark


def test_paper_version_override_falls_back_to_the_release_of_that_version(tmp_path):
    """`--paper-version v1`: a row whose v1 value is unknown is measured against the authors'
    release where there is one, and has no target where there is none, even if v3 is known."""
    table = load_table('table3')
    with_release = [r for r in table.rows
                    if r.paper['v1'].miou is None and 'official_zoo' in r.references]
    without = [r for r in table.rows if r.paper['v1'].miou is None and r.paper['v3'].miou
               is not None and 'official_zoo' not in r.references]
    assert with_release and without  # e.g. seg-b-8, and seg-s-16
    for row in with_release + without:
        _finished_job(tmp_path / 'work', 'full', row, 0, 45.0)
    results, _, _ = _report(table, tmp_path / 'work', tmp_path / 'reports', paper_version='v1')
    for row in with_release:
        release = row.references['official_zoo'].miou
        assert results.loc[row.id, 'paper_version'] == RELEASE_LABEL
        assert results.loc[row.id, 'delta'] == pytest.approx(45.0 - release)
    for row in without:
        assert results.loc[row.id, 'verdict'] == NO_TARGET
        assert math.isnan(results.loc[row.id, 'delta'])
