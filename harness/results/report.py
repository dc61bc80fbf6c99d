"""Report: reproduced single-scale mIoU against the paper, row by row, built only from disk.

Each table's report folder holds ``report.md``, ``report.html`` (self-contained: the figures are
embedded), ``results.csv`` and the figures (``comparison.png``, ``curves.png``,
``per-class-<row>.png``). Where it goes (:func:`reports_root`, :func:`report_dir`): the default
work root and the specs of ``experiments/`` report into ``reports/<table>/`` (smoke runs:
``reports/smoke/<table>/``); another work root into ``<work root>/reports/``; a spec given by
path into a folder of its own. Every file is written under a temporary name and renamed once all
are written, so an interrupted build leaves the previous report whole.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import math
import sys
from pathlib import Path

import pandas as pd

from ..core import atomic
from ..core.atomic import remove_stale
from ..core.layout import DEFAULT_REPORTS, DEFAULT_WORK_ROOT, REPO_ROOT, released_dir
from ..core.profiles import SMOKE
from ..core.spec import EXPERIMENTS, SEED_LOGS, Table
from ..core.state import read_per_class, read_state
from . import figures
from .collect import collect_jobs
from .verdict import CONFIDENCE, judge, on_track, rule_name, spread

DEFAULT_TOLERANCE = 1.0
REFERENCE_COLUMNS = {'seed_repo': 'seed repo', 'official_zoo': 'official zoo',
                     'mmseg_zoo': 'mmseg zoo'}
HEADERS = {'paper_miou_v1': 'paper v1', 'paper_miou_v3': 'paper v3',
           'paper_version': 'Δ against', 'paper_miou': 'paper value used',
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


def report_name(table: Table) -> str:
    """A table's report folder name: its name for the spec in experiments/, else the name, the
    spec file's stem and a digest of its path (two specs of one table never share a folder)."""
    default = EXPERIMENTS / f'{table.name}.yaml'
    path = Path(table.path).resolve()
    if path == default.resolve():
        return table.name
    return f'{table.name}-{path.stem}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}'


def reports_root(work_root: Path, reports: Path | None = None) -> Path:
    """``--reports`` when given; else ``reports/`` for the default work root and the work
    root's own ``reports/`` folder for any other (its jobs never rewrite the default report)."""
    if reports is not None:
        return Path(reports)
    if Path(work_root).resolve() == DEFAULT_WORK_ROOT.resolve():
        return DEFAULT_REPORTS
    return Path(work_root) / 'reports'


def report_run_globs(out_root: Path) -> list[str]:
    """Shell patterns of the report runs' offline W&B folders under a reports root (full
    profile, then the other profiles' subfolders): W&B's own ``wandb/`` under its ``dir``."""
    root = Path(out_root)
    return [str(root / '*' / 'wandb' / 'offline-run-*'),
            str(root / '*' / '*' / 'wandb' / 'offline-run-*')]


def report_dir(out_root: Path, profile: str, table: Table | str) -> Path:
    name = table if isinstance(table, str) else report_name(table)
    return Path(out_root) / name if profile == 'full' else Path(out_root) / profile / name


def _row_status(jobs: pd.DataFrame) -> str:
    statuses = list(jobs['status'])
    if not statuses or all(s == 'not run' for s in statuses):
        return 'not run'
    if 'failed' in statuses:
        return f"failed: {jobs.loc[jobs['status'] == 'failed', 'error'].iloc[0]}"
    if 'running' in statuses:
        return 'running'
    done = statuses.count('finished')
    return 'finished' if done == len(statuses) else f'{done}/{len(statuses)} finished'


def _shortened_to(meta) -> int | None:
    return ((meta or {}).get('request') or {}).get('max_iters') if isinstance(meta, dict) \
        else None


def _shortened(jobs: pd.DataFrame) -> list[int]:
    """The shortened schedules (``run --max-iters``) the jobs of a row trained with."""
    return sorted({n for meta in jobs['meta'] if (n := _shortened_to(meta))})


def released_mious(table: Table, work_root: Path) -> dict[tuple[str, bool], float]:
    """mIoU of each evaluated released checkpoint, by (row, multi_scale)."""
    found = {}
    for row in table.rows:
        for multi_scale in (False, True):
            state = read_state(released_dir(work_root, table.name, row.id, multi_scale))
            if state.get('status') == 'finished':
                found[(row.id, multi_scale)] = state['metrics']['mIoU']
    return found


def seed_eval_curve(prefix: str) -> pd.DataFrame:
    """The seed repository's published evaluation curve, mIoU in % (the CSV holds fractions)."""
    curve = pd.read_csv(SEED_LOGS / f'{prefix}_eval.csv').set_index('iter')
    return curve[['mIoU', 'mAcc', 'aAcc']] * 100


def reference_curve(row, jobs: pd.DataFrame, curves: dict, profile: str):
    """(mIoU by fraction of the schedule, its label) that an unfinished job of ``row`` is
    measured against: the seed repository's published curve where one matches the row (a full
    run: the smoke schedule is not the paper's), else the row's own finished full-length
    seeds (their mean), else (None, None)."""
    if profile == 'full' and row.seed_curves:
        seed = seed_eval_curve(row.seed_curves)['mIoU']
        return seed.set_axis(seed.index / seed.index.max()), "the seed repository's curve"
    done = jobs[(jobs['row'] == row.id) & (jobs['status'] == 'finished')]
    own = []
    for j in done.itertuples():
        val = curves.get((j.row, j.seed), (None, pd.DataFrame()))[1]
        if len(val) and not _shortened_to(j.meta):
            own.append(val['mIoU'].set_axis(val.index / j.schedule))
    if not own:
        return None, None
    return (pd.concat(own, axis=1).mean(axis=1).sort_index(),
            f'the finished seed{"s" if len(own) > 1 else ""} ({len(own)})')


def job_progress(table: Table, jobs: pd.DataFrame, curves: dict, profile: str,
                 tolerance: float) -> dict[tuple[str, int], str]:
    """For each running (or interrupted, or shortened) job: its last evaluation against the
    reference curve at the same fraction of its schedule."""
    notes = {}
    for j in jobs.itertuples():
        if j.status not in UNFINISHED and not _shortened_to(j.meta):
            continue
        val = curves.get((j.row, j.seed), (None, pd.DataFrame()))[1]
        if not len(val):
            notes[(j.row, j.seed)] = 'no evaluation yet'
            continue
        reference, label = reference_curve(table.row(j.row), jobs, curves, profile)
        notes[(j.row, j.seed)] = on_track(float(val['mIoU'].iloc[-1]),
                                          float(val.index[-1]) / j.schedule, reference, label,
                                          tolerance)
    return notes


def summarise(table: Table, jobs: pd.DataFrame, profile: str, paper_version: str | None = None,
              tolerance: float = DEFAULT_TOLERANCE, released: dict | None = None,
              progress: dict | None = None) -> pd.DataFrame:
    """One line per table row: paper values, ours (mean, std and 95% t interval over finished
    seeds), Δ and verdict against the paper version matching the row's setup (or
    ``paper_version`` for every row), the rule the verdict used, the progress of unfinished
    jobs, and the released checkpoints' mIoU where they were evaluated."""
    released, progress = released or {}, progress or {}
    lines = []
    for row in table.rows:
        mine = jobs[jobs['row'] == row.id]
        done = mine[mine['status'] == 'finished']
        ours = spread([float(v) for v in done['mIoU_final'].dropna()])
        version = paper_version or row.matches
        paper = row.paper[version].miou
        delta = ours.mean - paper if (profile == 'full' and ours.mean is not None
                                      and paper is not None) else None
        if profile != 'full':
            verdict = 'smoke: not comparable'
            rule = rule_name(ours, tolerance) if ours.n else EMPTY
        else:
            verdict, rule = judge(ours, paper, tolerance)
        if shortened := _shortened(mine):  # a cheap trial says nothing about the paper's run
            verdict, rule = f"shortened ({', '.join(map(str, shortened))} iterations)", EMPTY
        firsts = list(done['miou_first'].dropna())
        lines.append({
            'row': row.id, 'model': row.model,
            'paper_miou_v1': row.paper['v1'].miou, 'paper_miou_v3': row.paper['v3'].miou,
            'paper_version': version, 'paper_miou': paper,
            **{kind: ref.miou if (ref := row.references.get(kind)) else None
               for kind in REFERENCE_COLUMNS},
            'miou_ss': ours.mean, 'miou_ss_std': ours.std, 'n_seeds': ours.n,
            'ci_low': ours.low, 'ci_high': ours.high, 'delta': delta,
            'status': _row_status(mine), 'verdict': verdict, 'rule': rule,
            'progress': '; '.join(f'seed{seed}: {note}' for (r, seed), note in
                                  sorted(progress.items()) if r == row.id) or None,
            'miou_first': sum(firsts) / len(firsts) if firsts else None,
            'miou_ms': done['miou_ms'].dropna().mean() if done['miou_ms'].notna().any() else None,
            'released_ss': released.get((row.id, False)),
            'released_ms': released.get((row.id, True)),
            'device_hours': float(mine['device_hours'].fillna(0).sum()),
            'wandb_runs': ' '.join(mine['wandb_run'].dropna()) or None,
        })
    summary = pd.DataFrame(lines, columns=RESULT_COLUMNS)
    summary[NUMERIC] = summary[NUMERIC].astype(float)  # unknown = NaN, whatever the rows hold
    return summary


def _fmt(value, digits=2, signed=False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return EMPTY
    return f'{value:+.{digits}f}' if signed else f'{value:.{digits}f}'


def _text(value) -> str:
    """A cell of text: empty (None, NaN, '') as —."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == '':
        return EMPTY
    return str(value)


def _interval(r) -> str:
    return EMPTY if math.isnan(r.ci_low) else f'[{r.ci_low:.2f}, {r.ci_high:.2f}]'


def _per_class_charts(table: Table, jobs: pd.DataFrame, work_root: Path,
                      profile: str) -> dict[str, bytes]:
    """Per row with a per-class IoU on disk: its chart, ours (mean over finished seeds) against
    the released checkpoint's single-scale evaluation where there is one."""
    charts = {}
    for row in table.rows:
        done = jobs[(jobs['row'] == row.id) & (jobs['status'] == 'finished')]
        per_seed = [read_per_class(Path(w)) for w in done['work_dir']]
        per_seed = [p for p in per_seed if p]
        if not per_seed:
            continue
        ours = pd.DataFrame(per_seed).mean().dropna().to_dict()
        released = read_per_class(released_dir(work_root, table.name, row.id, False)) \
            if profile == 'full' else {}
        buffer = io.BytesIO()
        figures.per_class_chart(row.model, ours, released, buffer, len(per_seed))
        charts[f'per-class-{row.id}.png'] = buffer.getvalue()
    return charts


def _markdown(table: Table, summary: pd.DataFrame, jobs: pd.DataFrame, profile: str,
              paper_version: str | None, tolerance: float, progress: dict,
              per_class: list[str]) -> str:
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
    lines += [f'# {table.title}', '',
              f'Profile `{profile}` · {against} · verdict with one seed: reproduced when '
              f'|Δ| ≤ {tolerance:g} mIoU (rule "tolerance"); with n ≥ 2 seeds: reproduced when '
              f'the paper value lies inside the {CONFIDENCE:.0%} Student t interval of the mean '
              f'(rule "interval") · built {dt.datetime.now():%Y-%m-%d %H:%M} from the job '
              'folders on disk.', '']
    notes = {}  # a footnote for every known paper value: its version, source and confidence
    for row in table.rows:
        for version, value in row.paper.items():
            if value.miou is not None:
                notes[(row.id, version)] = f'[^{len(notes) + 1}]'
    first_col = '| first eval ' if profile == 'smoke' else ''
    released = summary[['released_ss', 'released_ms']].notna().any().any()
    released_col = '| released checkpoint (ss / ms) ' if released else ''
    progress_col = summary['progress'].notna().any()
    refs = ' | '.join(REFERENCE_COLUMNS.values())
    lines += [f'| row | model | paper v1 | paper v3 | Δ against | {refs} {released_col}'
              f'{first_col}| ours (single-scale) | n | {CONFIDENCE:.0%} interval '
              '| ours (multi-scale) | Δ | status | verdict | rule '
              + ('| progress ' if progress_col else '') + '|',
              '|---|---|---|---|---|---|---|---|' + ('---|' if first_col else '')
              + ('---|' if released else '') + '---|---|---|---|---|---|---|---|'
              + ('---|' if progress_col else '')]
    for r in summary.itertuples():
        ours = _fmt(r.miou_ss)
        if not math.isnan(r.miou_ss_std):
            ours += f' ± {r.miou_ss_std:.2f}'
        first = f'| {_fmt(r.miou_first)} ' if first_col else ''
        first = (f'| {_fmt(r.released_ss)} / {_fmt(r.released_ms)} ' if released else '') + first
        ref_values = ' | '.join(_fmt(getattr(r, kind)) for kind in REFERENCE_COLUMNS)
        v1, v3 = (_fmt(getattr(r, f'paper_miou_{v}')) + notes.get((r.row, v), '')
                  for v in ('v1', 'v3'))
        lines.append(f'| {r.row} | {r.model} | {v1} | {v3} | {r.paper_version} '
                     f'| {ref_values} {first}| {ours} | {r.n_seeds} | {_interval(r)} '
                     f'| {_fmt(r.miou_ms)} | {_fmt(r.delta, signed=True)} | {r.status} '
                     f'| {r.verdict} | {r.rule} '
                     + (f'| {_text(r.progress)} ' if progress_col else '') + '|')
    lines += ['', '![Each row: paper values, references, released checkpoint and our seeds with '
              'their mean and 95% interval](comparison.png)', '',
              '![mIoU and loss against iteration](curves.png)', '',
              '## Which paper value each Δ is taken against', '']
    for row in table.rows:
        version = paper_version or row.matches
        value = _fmt(row.paper[version].miou)
        why = (f'set by `--paper-version`; the spec matches {row.matches}: {row.matches_reason}'
               if paper_version else row.matches_reason)
        lines.append(f'- {row.model}: paper {version} ({value}) — {why}')
    lines += ['', '## Paper values', '']
    for (row_id, version), mark in notes.items():
        row, number = table.row(row_id), mark[2:-1]
        value = row.paper[version]
        lines.append(f'[^{number}]: {row.model}, paper {version}: {value.miou:.2f} — '
                     f'{value.source} [{value.confidence}]')
    lines += ['', f'Unknown paper values are shown as {EMPTY}: they are not guessed.', '',
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
                         + (f"; {meta['amp']} training precision" if meta.get('amp') else ''))
    lines += ['', '## Per-class IoU of the last evaluation', '']
    for name in per_class:
        lines += [f'![per-class IoU]({name})', '']
    if not per_class:
        lines += ['No finished job has a per-class IoU yet.', '']
    lines += ['## Jobs', '',
              '| row | seed | status | last iteration | mIoU | progress | W&B run | work dir |',
              '|---|---|---|---|---|---|---|---|']
    for j in jobs.itertuples():
        status = j.status + (f' ({j.error})' if j.error else '')
        lines.append(f'| {j.row} | {j.seed} | {status} | {j.iters} | {_fmt(j.mIoU_final)} | '
                     f'{_text(progress.get((j.row, j.seed)))} | {_text(j.wandb_run_id)} | '
                     f'{_relative(j.work_dir)} |')
    return '\n'.join(lines) + '\n'


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells as the reader sees them: numbers with two decimals, counts as integers, every
    empty cell (None, NaN) as —."""
    shown = frame.astype(object)
    for column in shown.columns:
        shown[column] = [
            EMPTY if v is None or (isinstance(v, float) and math.isnan(v)) or v == ''
            else f'{v:.2f}' if isinstance(v, float) else str(v) for v in frame[column]]
    return shown


def _html(markdown: str, summary: pd.DataFrame, jobs: pd.DataFrame, images: dict[str, bytes],
          title: str, progress: dict) -> str:
    """A self-contained page: the report's table and notes, the figures embedded as data."""
    import base64
    import html

    shown = summary.dropna(axis=1, how='all').rename(columns=HEADERS)
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
    listed = jobs.drop(columns=['work_dir', 'miou_first', 'meta']).assign(
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


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return path


def publish(out: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into ``out`` so that a build killed or failing while writing leaves the
    previous files whole; temporary files of earlier builds whose process is gone are removed."""
    out.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    atomic.publish({out / name: data for name, data in files.items()})


def build_report(table: Table, profile: str, work_root: Path, out_root: Path | None = None,
                 paper_version: str | None = None, tolerance: float = DEFAULT_TOLERANCE,
                 wandb: bool = True) -> Path:
    """Write the report files of ``table`` and return their folder; with ``wandb``, also log
    the report as a W&B run (never failing the build when W&B is unavailable)."""
    jobs, curves = collect_jobs(list(table.rows), profile, work_root)
    released = released_mious(table, work_root) if profile == 'full' else {}
    progress = job_progress(table, jobs, curves, profile, tolerance)
    summary = summarise(table, jobs, profile, paper_version, tolerance, released, progress)
    out = report_dir(reports_root(work_root, out_root), profile, table)

    images = {}
    finals = {row.id: [float(v) for v in jobs[(jobs['row'] == row.id)
                                               & (jobs['status'] == 'finished')]
                       ['mIoU_final'].dropna()] for row in table.rows}
    buffer = io.BytesIO()
    figures.comparison_chart(table, summary, finals, buffer)
    images['comparison.png'] = buffer.getvalue()
    buffer = io.BytesIO()
    schedules = {(j.row, j.seed): j.schedule for j in jobs.itertuples()}
    seed_curves = {row.id: seed_eval_curve(row.seed_curves) for row in table.rows
                   if row.seed_curves}
    figures.curves_chart(table, curves, schedules, seed_curves, buffer)
    images['curves.png'] = buffer.getvalue()
    images.update(_per_class_charts(table, jobs, work_root, profile))

    markdown = _markdown(table, summary, jobs, profile, paper_version, tolerance, progress,
                         [name for name in images if name.startswith('per-class-')])
    page = _html(markdown, summary, jobs, images, table.title, progress)
    publish(out, {'results.csv': summary.to_csv(index=False).encode(), **images,
                  'report.md': markdown.encode(), 'report.html': page.encode()})
    if wandb:
        try:
            from .wandb_report import log_report_run
            log_report_run(table, profile, work_root, out, summary, jobs, images,
                           paper_version)
        except Exception as err:  # noqa: BLE001 - the report on disk is what counts
            print(f'warning: the W&B report run was not logged ({type(err).__name__}: '
                  f'{(str(err).splitlines() or [""])[0]}); the report files are complete',
                  file=sys.stderr)
    return out
