"""A table's report as text: the Markdown page and the self-contained HTML page, from the
summary that :mod:`harness.results.report` computes."""
from __future__ import annotations

import base64
import datetime as dt
import html
import math
import os
from pathlib import Path

import pandas as pd

from ..core.profiles import SMOKE
from ..core.layout import REPO_ROOT, STATE_FILE
from ..core.spec import Table
from .verdict import CONFIDENCE, RELEASE, target

REFERENCE_COLUMNS = {'seed_repo': 'seed repo', 'official_zoo': 'official zoo',
                     'official_zoo_ms': 'official zoo (ms)', 'mmseg_zoo': 'mmseg zoo'}
HEADERS = {'paper_miou_v1': 'paper v1', 'paper_miou_v3': 'paper v3',
           'paper_version': 'Δ against', 'paper_miou': 'value Δ is taken against',
           **REFERENCE_COLUMNS,
           'miou_ss': 'ours (single-scale)', 'miou_ss_std': 'std', 'n_seeds': 'n',
           'ci_low': '95% interval low', 'ci_high': '95% interval high',
           'miou_ms': 'ours (multi-scale)',
           'delta': 'Δ', 'rule': 'rule', 'progress': 'progress (unfinished jobs)',
           'miou_first': 'first eval', 'released_ss': 'released (ss)',
           'released_ms': 'released (ms)', 'device_hours': 'device-hours',
           'wandb_runs': 'W&B runs'}
RESULT_COLUMNS = ['row', 'model', 'paper_miou_v1', 'paper_miou_v3', 'paper_version',
                  'paper_miou', *REFERENCE_COLUMNS,
                  'miou_ss', 'miou_ss_std', 'n_seeds', 'ci_low', 'ci_high', 'miou_ms', 'delta',
                  'status', 'verdict', 'rule', 'progress', 'miou_first',
                  'released_ss', 'released_ms', 'device_hours', 'wandb_runs']
NUMERIC = ['paper_miou_v1', 'paper_miou_v3', 'paper_miou', *REFERENCE_COLUMNS, 'miou_ss',
           'miou_ss_std', 'ci_low', 'ci_high', 'miou_ms', 'delta', 'miou_first', 'released_ss',
           'released_ms', 'device_hours']
UNFINISHED = ('running', 'interrupted', 'stale')
EMPTY = '—'


def _empty(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ''


def _fmt(value, signed=False) -> str:
    return EMPTY if _empty(value) else f'{value:{"+" if signed else ""}.2f}'


def _text(value) -> str:
    """A cell of text: empty (None, NaN, '') as —."""
    return EMPTY if _empty(value) else str(value)


def named_problem(status: str, error: str | None, form: str = ': {}') -> str:
    """A problem and its reason, the status said once (an error may start with it:
    'unreadable state (...)')."""
    return error if error and error.startswith(status) else \
        status + (form.format(error) if error else '')


def _interval(r) -> str:
    return EMPTY if math.isnan(r.ci_low) else f'[{r.ci_low:.2f}, {r.ci_high:.2f}]'


def markdown_page(table: Table, summary: pd.DataFrame, jobs: pd.DataFrame, profile: str,
              paper_version: str | None, tolerance: float, progress: dict,
              per_class: list[str], out: Path) -> str:
    lines = []
    if profile == 'smoke':
        lines += [f'> **Smoke run on synthetic data** (each row at 1/{SMOKE.width_divisor} width '
                  f'and 1/{SMOKE.depth_divisor} depth, {SMOKE.max_iters} iterations, '
                  f'{SMOKE.crop}px crops, random init): it checks the pipeline, its mIoU is not '
                  'comparable with the paper.', '']
    amp_jobs = [f'{j.row} seed{j.seed} ({j.meta["amp"]})' for j in jobs.itertuples()
                if (j.meta or {}).get('amp')]
    if amp_jobs:
        lines += [f'> **Reduced precision**: {", ".join(amp_jobs)} trained under bf16/fp16 '
                  'autocast or TF32 matmuls, a departure from the paper\'s fp32 training '
                  '(evaluated in fp32).', '']
    against = (f'Δ against paper {paper_version} for every row (`--paper-version '
               f'{paper_version}`)' if paper_version else
               "Δ against the paper version that matches each row's setup (column "
               '"Δ against"; why: below)')
    against += ('; where that value is unknown, against the single-scale mIoU the authors '
                f'state for their released model ("{RELEASE}")')
    lines += [f'# {table.title}', '',
              f'Profile `{profile}` · {against} · verdict with one seed: reproduced when '
              f'|Δ| ≤ {tolerance:g} mIoU (rule "tolerance"); with n ≥ 2 seeds: reproduced when '
              f'the value Δ is taken against lies inside the {CONFIDENCE:.0%} Student t '
              f'interval of the mean (rule "interval") · built '
              f'{dt.datetime.now():%Y-%m-%d %H:%M} from the job folders on disk.', '']
    # a footnote for every known paper value (its version, source and confidence) and for
    # every release a Δ is taken against (its source), so that each target names where it is from
    notes = {}
    for row in table.rows:
        for version, value in row.paper.items():
            if value.miou is not None:
                notes[(row.id, version)] = f'[^{len(notes) + 1}]'
        if target(row, paper_version or row.matches).label == RELEASE:
            notes[(row.id, RELEASE)] = f'[^{len(notes) + 1}]'
    first_col = '| first eval ' if profile == 'smoke' else ''
    released = summary[['released_ss', 'released_ms']].notna().any().any()
    released_col = '| released checkpoint (ss / ms) ' if released else ''
    progress_col = summary['progress'].notna().any()
    refs = ' | '.join(REFERENCE_COLUMNS.values())
    header = (f'| row | model | paper v1 | paper v3 | Δ against | {refs} {released_col}'
              f'{first_col}| ours (single-scale) | n | {CONFIDENCE:.0%} interval '
              '| ours (multi-scale) | Δ | status | verdict | rule '
              + ('| progress ' if progress_col else '') + '|')
    lines += [header, '|' + '---|' * (header.count('|') - 1)]
    for r in summary.itertuples():
        ours = _fmt(r.miou_ss)
        if not math.isnan(r.miou_ss_std):
            ours += f' ± {r.miou_ss_std:.2f}'
        first = f'| {_fmt(r.miou_first)} ' if first_col else ''
        first = (f'| {_fmt(r.released_ss)} / {_fmt(r.released_ms)} ' if released else '') + first
        ref_values = ' | '.join(_fmt(getattr(r, kind)) for kind in REFERENCE_COLUMNS)
        v1, v3 = (_fmt(getattr(r, f'paper_miou_{v}')) + notes.get((r.row, v), '')
                  for v in ('v1', 'v3'))
        taken_against = r.paper_version + notes.get((r.row, RELEASE), '')
        lines.append(f'| {r.row} | {r.model} | {v1} | {v3} | {taken_against} '
                     f'| {ref_values} {first}| {ours} | {r.n_seeds} | {_interval(r)} '
                     f'| {_fmt(r.miou_ms)} | {_fmt(r.delta, signed=True)} | {r.status} '
                     f'| {r.verdict} | {r.rule} '
                     + (f'| {_text(r.progress)} ' if progress_col else '') + '|')
    lines += ['', '![Each row: paper values, references, released checkpoint and our seeds with '
              'their mean and 95% interval](comparison.png)', '',
              '![mIoU and loss against iteration](curves.png)', '',
              '## What each Δ is taken against', '']
    for row in table.rows:
        version = paper_version or row.matches
        goal = target(row, version)
        why = (f'set by `--paper-version`; the spec matches {row.matches}: {row.matches_reason}'
               if paper_version else row.matches_reason)
        if goal.label == version:
            lines.append(f'- {row.model}: paper {version} ({_fmt(goal.miou)}) — {why}')
        elif goal.label == RELEASE:
            lines.append(f'- {row.model}: {RELEASE} ({_fmt(goal.miou)}) — the paper {version} '
                         'value is unknown; the single-scale mIoU the authors state for their '
                         f'released model of this setup{notes[(row.id, RELEASE)]}. Why '
                         f'{version}: {why}')
        else:
            lines.append(f'- {row.model}: {goal.label} — the paper {version} value is unknown '
                         "and none of the authors' released models states one: no Δ, no "
                         f'verdict. Why {version}: {why}')
    lines += ['', '## Paper values and release targets', '']
    for (row_id, version), mark in notes.items():
        row, number = table.row(row_id), mark[2:-1]
        if version == RELEASE:
            ref = target(row, paper_version or row.matches)
            lines.append(f'[^{number}]: {row.model}, {RELEASE} (Δ and verdict, the paper value '
                         f'being unknown): {ref.miou:.2f} single-scale — {ref.source}')
            continue
        value = row.paper[version]
        lines.append(f'[^{number}]: {row.model}, paper {version}: {value.miou:.2f} — '
                     f'{value.source} [{value.confidence}]')
    lines += ['', f'Unknown paper values are shown as {EMPTY}: they are not guessed; a release '
              'stands in for one as a target only, never in the paper columns.', '',
              '## Reference values', '']
    for row in table.rows:
        for kind, ref in row.references.items():
            lines.append(f'- {row.model}, {REFERENCE_COLUMNS[kind]}: {ref.miou:.2f} — {ref.source}')
    lines += ['', '## Provenance', '']
    for j in jobs.itertuples():
        meta = j.meta or {}
        if meta:
            v, git, hw = meta.get('versions', {}), meta.get('git', {}), meta.get('hardware', {})
            device = ', '.join(hw.get('gpus') or []) or f"CPU x{_text(hw.get('cpu_count'))}"
            lines.append(f"- {j.row} seed{j.seed}: commit {_text(git.get('commit'))[:10]}"
                         f"{' (dirty)' if git.get('dirty') else ''}, torch "
                         f"{_text(v.get('torch'))}, mmcv {_text(v.get('mmcv'))}, mmengine "
                         f"{_text(v.get('mmengine'))}, mmseg {_text(v.get('mmsegmentation'))}, "
                         f"wandb {_text(v.get('wandb'))}; {device}; data "
                         f"{_text(meta.get('dataset', {}).get('file_list_sha256'))[:12]}"
                         + (f"; {meta['amp']} training precision" if meta.get('amp') else '')
                         + _binding(meta))
    lines += ['', '## Per-class IoU of the last evaluation', '']
    for name in per_class:
        lines += [f'![per-class IoU]({name})', '']
    if not per_class:
        lines += ['No finished job has a per-class IoU yet.', '']
    lines += ['## Jobs', '',
              'Each job links to its record (state, start history, frozen recipe: '
              '`python -m harness verify` checks it).', '',
              '| row | seed | status | last iteration | mIoU | progress | W&B run | record |',
              '|---|---|---|---|---|---|---|---|']
    for j in jobs.itertuples():
        status = named_problem(j.status, j.error, ' ({})')
        if j.marks:
            status += ' · ' + '; '.join(j.marks)
        lines.append(f'| {j.row} | {j.seed} | {status} | {j.iters} | {_fmt(j.mIoU_final)} | '
                     f'{_text(progress.get((j.row, j.seed)))} | {_text(j.wandb_run_id)} | '
                     f'{_record_link(j.work_dir, out)} |')
    return '\n'.join(lines) + '\n'


def _binding(meta: dict) -> str:
    """What binds the job's number to what produced it: its recipe, its inputs' hashes, a
    drift accepted at a restart, code or packages that changed between its starts."""
    parts = []
    if meta.get('recipe'):
        parts.append(f"recipe {meta['recipe']}")
    for kind, entry in (meta.get('inputs') or {}).items():
        if entry.get('sha256'):
            parts.append(f"{kind} sha256 {entry['sha256'][:12]}")
    drifted = [k for k, start in enumerate(meta.get('history') or [], 1) if start.get('drift')]
    if drifted:
        parts.append(f"resumed at start {', '.join(map(str, drifted))} with what it started with "
                     'although the checkout differed (drift accepted)')
    if meta.get('changed_during_job'):
        parts.append('changed during the job: ' + '; '.join(meta['changed_during_job']))
    return ''.join(f'; {p}' for p in parts)


def _record_link(work_dir: str, out: Path) -> str:
    """The job folder (relative to the checkout when inside it), linked to its state file from
    where the report lies."""
    resolved = Path(work_dir).resolve()
    shown = str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) \
        else work_dir
    return f'[{shown}]({os.path.relpath(Path(work_dir) / STATE_FILE, out)})'


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells as the reader sees them: numbers with two decimals, counts as integers, every
    empty cell (None, NaN) as —."""
    return frame.map(lambda v: _fmt(v) if isinstance(v, float) else _text(v))


def html_page(markdown: str, summary: pd.DataFrame, jobs: pd.DataFrame, images: dict[str, bytes],
          title: str, progress: dict) -> str:
    """A self-contained page: the report's table and notes, the figures embedded as data."""
    shown = summary.dropna(axis=1, how='all')
    shown.columns = [HEADERS.get(c, c) for c in shown.columns]
    table_html = _display(shown).to_html(index=False, classes='results', border=0)
    notes = []
    for line in markdown.splitlines():
        if line.startswith('> '):
            notes.append(f'<p class="banner">{html.escape(line[2:]).replace("**", "")}</p>')
        elif line.startswith(('- ', '[^')):  # list items and the paper-value footnotes
            text = line[2:] if line.startswith('- ') else line.replace('[^', '[', 1)
            notes.append(f'<ul><li>{html.escape(text)}</li></ul>')
        elif line.startswith('## ') and 'Per-class' not in line:
            notes.append(f'<h2>{html.escape(line[3:])}</h2>')
    listed = jobs.drop(columns=['work_dir', 'miou_first', 'meta', 'view', 'code', 'per_class',
                                'seed_free']).assign(
        marks=['; '.join(m) for m in jobs['marks']],
        progress=[progress.get((j.row, j.seed)) for j in jobs.itertuples()])
    jobs_html = _display(listed).to_html(index=False, classes='results jobs', border=0)

    def figure(name: str, alt: str) -> str:
        data = base64.b64encode(images[name]).decode()
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'

    per_class = ''.join(figure(name, f'per-class IoU: {name[10:-4]}') for name in images
                        if name.startswith('per-class-')) or '<p>No finished job has a ' \
        'per-class IoU yet.</p>'
    style = ('body{font-family:sans-serif;margin:2em;max-width:1800px}'
             'table.results{border-collapse:collapse;font-size:14px}'
             'table.results td,table.results th{border:1px solid #bbb;padding:3px 8px}'
             '.banner{background:#fff3cd;padding:8px;border:1px solid #e0c36a}'
             'img{max-width:100%;display:block;margin:1em 0}ul{margin:0}')
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}'
            f'</title><style>{style}</style></head><body><h1>{html.escape(title)}</h1>'
            f'{"".join(n for n in notes if "banner" in n)}{table_html}'
            f'<h2>Comparison</h2>{figure("comparison.png", "comparison with the paper")}'
            f'<h2>Curves</h2>{figure("curves.png", "mIoU and loss against iteration")}'
            f'<h2>Per-class IoU of the last evaluation</h2>{per_class}'
            f'{"".join(n for n in notes if "banner" not in n)}{jobs_html}</body></html>\n')
