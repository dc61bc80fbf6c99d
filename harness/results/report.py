"""Report: reproduced single-scale mIoU against the paper, row by row, built only from disk.

``reports/<table>/`` for full runs, ``reports/smoke/<table>/`` for smoke runs, each with
``report.md``, ``report.html`` (self-contained), ``results.csv`` and ``curves.png``.
"""
from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..layout import REPO_ROOT, read_per_class, read_state, released_dir  # noqa: E402
from ..prepare.job_config import FULL_MAX_ITERS, SMOKE  # noqa: E402
from ..prepare.spec import SEED_LOGS, Table  # noqa: E402
from .collect import collect_jobs  # noqa: E402

DEFAULT_TOLERANCE = 1.0
REFERENCE_COLUMNS = {'seed_repo': 'seed repo', 'official_zoo': 'official zoo',
                     'mmseg_zoo': 'mmseg zoo'}
HEADERS = {'paper_miou_v1': 'paper v1', 'paper_miou_v3': 'paper v3', **REFERENCE_COLUMNS,
           'miou_ss': 'ours (single-scale)', 'miou_ss_std': 'std', 'n_seeds': 'n',
           'miou_ms': 'ours (multi-scale)',
           'delta': 'Δ', 'miou_first': 'first eval', 'released_ss': 'released (ss)',
           'released_ms': 'released (ms)', 'device_hours': 'device-hours',
           'wandb_runs': 'W&B runs'}
RESULT_COLUMNS = ['row', 'model', 'paper_miou_v1', 'paper_miou_v3', *REFERENCE_COLUMNS,
                  'miou_ss', 'miou_ss_std', 'n_seeds', 'miou_ms', 'delta', 'status', 'verdict',
                  'miou_first',
                  'released_ss', 'released_ms', 'device_hours', 'wandb_runs']


def report_dir(out_root: Path, profile: str, table: str) -> Path:
    return Path(out_root) / table if profile == 'full' else Path(out_root) / profile / table


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


def _verdict(delta: float | None, paper: float | None, profile: str, tolerance: float) -> str:
    if profile != 'full':
        return 'smoke: not comparable'
    if paper is None:
        return 'no paper value'
    if delta is None:
        return 'no result'
    return 'reproduced' if abs(delta) <= tolerance else 'not reproduced'


def _shortened(jobs: pd.DataFrame) -> list[int]:
    """The shortened schedules (``run --max-iters``) the jobs of a row trained with."""
    return sorted({meta['request']['max_iters'] for meta in jobs['meta']
                   if isinstance(meta, dict) and (meta.get('request') or {}).get('max_iters')})


def released_mious(table: Table, work_root: Path) -> dict[tuple[str, bool], float]:
    """mIoU of each evaluated released checkpoint, by (row, multi_scale)."""
    found = {}
    for row in table.rows:
        for multi_scale in (False, True):
            state = read_state(released_dir(work_root, table.name, row.id, multi_scale))
            if state.get('status') == 'finished':
                found[(row.id, multi_scale)] = state['metrics']['mIoU']
    return found


def summarise(table: Table, jobs: pd.DataFrame, profile: str, paper_version: str = 'v1',
              tolerance: float = DEFAULT_TOLERANCE,
              released: dict | None = None) -> pd.DataFrame:
    """One line per table row: paper values, ours (mean/std over finished seeds), delta, verdict,
    and the released checkpoints' mIoU where they were evaluated."""
    released = released or {}
    lines = []
    for row in table.rows:
        mine = jobs[jobs['row'] == row.id]
        done = mine[mine['status'] == 'finished']
        finals = list(done['mIoU_final'].dropna())
        miou = sum(finals) / len(finals) if finals else None
        std = pd.Series(finals).std(ddof=1) if len(finals) > 1 else None
        paper = row.paper[paper_version].miou
        delta = miou - paper if (profile == 'full' and miou is not None and paper is not None) \
            else None
        firsts = list(done['miou_first'].dropna())
        verdict = _verdict(delta, paper, profile, tolerance)
        if shortened := _shortened(mine):  # a cheap trial says nothing about the paper's run
            verdict = f"shortened ({', '.join(map(str, shortened))} iterations)"
        lines.append({
            'row': row.id, 'model': row.model,
            'paper_miou_v1': row.paper['v1'].miou, 'paper_miou_v3': row.paper['v3'].miou,
            **{kind: ref.miou if (ref := row.references.get(kind)) else None
               for kind in REFERENCE_COLUMNS},
            'miou_ss': miou, 'miou_ss_std': std, 'n_seeds': len(finals), 'delta': delta,
            'status': _row_status(mine),
            'verdict': verdict,
            'miou_first': sum(firsts) / len(firsts) if firsts else None,
            'miou_ms': done['miou_ms'].dropna().mean() if done['miou_ms'].notna().any() else None,
            'released_ss': released.get((row.id, False)),
            'released_ms': released.get((row.id, True)),
            'device_hours': float(mine['device_hours'].fillna(0).sum()),
            'wandb_runs': ' '.join(mine['wandb_run'].dropna()),
        })
    summary = pd.DataFrame(lines, columns=RESULT_COLUMNS)
    numeric = ['paper_miou_v1', 'paper_miou_v3', *REFERENCE_COLUMNS, 'miou_ss', 'miou_ss_std',
               'miou_ms', 'delta', 'miou_first', 'released_ss', 'released_ms', 'device_hours']
    summary[numeric] = summary[numeric].astype(float)  # unknown = NaN, whatever the rows hold
    return summary


def _fmt(value, digits=2, signed=False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '—'
    return f'{value:+.{digits}f}' if signed else f'{value:.{digits}f}'


def seed_eval_curve(prefix: str) -> pd.DataFrame:
    """The seed repository's published evaluation curve, mIoU in % (the CSV holds fractions)."""
    curve = pd.read_csv(SEED_LOGS / f'{prefix}_eval.csv').set_index('iter')
    return curve[['mIoU', 'mAcc', 'aAcc']] * 100


def _seed_band(ax, frames: list[pd.Series], x_scale: float, colour: str, label: str) -> None:
    """Mean over seeds as a line, min..max over seeds as a band (one seed: just the line)."""
    table = pd.concat(frames, axis=1)
    x = table.index / x_scale
    ax.plot(x, table.mean(axis=1), 'o-', color=colour, label=label, ms=3)
    if table.shape[1] > 1:
        ax.fill_between(x, table.min(axis=1), table.max(axis=1), color=colour, alpha=0.2)


def _plot(table: Table, curves: dict, max_iters: int, path: Path) -> None:
    fig, (ax_miou, ax_loss, ax_progress) = plt.subplots(1, 3, figsize=(17, 4.8))
    for i, row in enumerate(table.rows):
        colour = f'C{i % 10}'
        runs = [v for k, v in curves.items() if k[0] == row.id]
        mious = [val['mIoU'] for _, val in runs if len(val)]
        losses = [train['loss'] for train, _ in runs if len(train) and 'loss' in train]
        if mious:
            _seed_band(ax_miou, mious, 1, colour, row.model)
            _seed_band(ax_progress, mious, max_iters, colour, row.model)
        if losses:  # smoothed: a rolling mean over 5 logged points
            loss = pd.concat(losses, axis=1).mean(axis=1).rolling(5, min_periods=1).mean()
            ax_loss.plot(loss.index, loss, color=colour, label=row.model, lw=1)
        if row.seed_curves:
            seed = seed_eval_curve(row.seed_curves)
            ax_progress.plot(seed.index / seed.index.max(), seed['mIoU'], '--', color=colour,
                             label=f'{row.model}: seed repo (published)')
    ax_miou.set(title='single-scale mIoU (val); band: min-max over seeds', xlabel='iteration',
                ylabel='mIoU (%)')
    ax_loss.set(title='training loss (smoothed, mean over seeds)', xlabel='iteration',
                ylabel='loss')
    ax_progress.set(title='mIoU against training progress (dashed: seed repository)',
                    xlabel='fraction of the schedule', ylabel='mIoU (%)', xlim=(0, 1.02))
    for ax in (ax_miou, ax_loss, ax_progress):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(table.title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(table: Table, summary: pd.DataFrame, jobs: pd.DataFrame, profile: str,
              paper_version: str, tolerance: float) -> str:
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
    lines += [f'# {table.title}', '',
              f'Profile `{profile}` · Δ against paper {paper_version} · reproduced when '
              f'|Δ| ≤ {tolerance} mIoU · built {dt.datetime.now():%Y-%m-%d %H:%M} from '
              'the job folders on disk.', '']
    notes = {}  # a footnote for every known paper value: its version, source and confidence
    for row in table.rows:
        for version, value in row.paper.items():
            if value.miou is not None:
                notes[(row.id, version)] = f'[^{len(notes) + 1}]'
    first_col = '| first eval ' if profile == 'smoke' else ''
    released = summary[['released_ss', 'released_ms']].notna().any().any()
    released_col = '| released checkpoint (ss / ms) ' if released else ''
    refs = ' | '.join(REFERENCE_COLUMNS.values())
    lines += [f'| row | model | paper v1 | paper v3 | {refs} {released_col}{first_col}'
              '| ours (single-scale) | n | ours (multi-scale) | Δ | status | verdict |',
              '|---|---|---|---|---|---|---|' + ('---|' if first_col else '')
              + ('---|' if released else '') + '---|---|---|---|---|---|']
    for r in summary.itertuples():
        ours = _fmt(r.miou_ss)
        if not math.isnan(r.miou_ss_std):
            ours += f' ± {r.miou_ss_std:.2f}'
        first = f'| {_fmt(r.miou_first)} ' if first_col else ''
        first = (f'| {_fmt(r.released_ss)} / {_fmt(r.released_ms)} ' if released else '') + first
        ref_values = ' | '.join(_fmt(getattr(r, kind)) for kind in REFERENCE_COLUMNS)
        v1, v3 = (_fmt(getattr(r, f'paper_miou_{v}')) + notes.get((r.row, v), '')
                  for v in ('v1', 'v3'))
        lines.append(f'| {r.row} | {r.model} | {v1} | {v3} '
                     f'| {ref_values} {first}| {ours} | {r.n_seeds} | {_fmt(r.miou_ms)} | '
                     f'{_fmt(r.delta, signed=True)} | {r.status} | {r.verdict} |')
    lines += ['', '![mIoU and loss against iteration](curves.png)', '', '## Paper values', '']
    for (row_id, version), mark in notes.items():
        row, number = table.row(row_id), mark[2:-1]
        value = row.paper[version]
        lines.append(f'[^{number}]: {row.model}, paper {version}: {value.miou:.2f} — '
                     f'{value.source} [{value.confidence}]')
    lines += ['', 'Unknown paper values are shown as —: they are not guessed.', '',
              '## Reference values', '']
    for row in table.rows:
        for kind, ref in row.references.items():
            lines.append(f'- {row.model}, {REFERENCE_COLUMNS[kind]}: {ref.miou:.2f} — {ref.source}')
    lines += ['', '## Provenance', '']
    for j in jobs.itertuples():
        meta = j.meta or {}
        if meta:
            v, git, hw = meta.get('versions', {}), meta.get('git', {}), meta.get('hardware', {})
            device = ', '.join(hw.get('gpus') or []) or f"CPU x{hw.get('cpu_count')}"
            lines.append(f"- {j.row} seed{j.seed}: commit {str(git.get('commit'))[:10]}"
                         f"{' (dirty)' if git.get('dirty') else ''}, torch {v.get('torch')}, "
                         f"mmcv {v.get('mmcv')}, mmengine {v.get('mmengine')}, mmseg "
                         f"{v.get('mmsegmentation')}, wandb {v.get('wandb')}; {device}; data "
                         f"{meta.get('dataset', {}).get('file_list_sha256', '')[:12]}"
                         + (f"; {meta['amp']} training precision" if meta.get('amp') else ''))
    lines += ['', '## Per-class IoU of the last evaluation (best and worst three)', '']
    for j in jobs.itertuples():
        per_class = read_per_class(j.work_dir)
        if per_class:
            ranked = sorted(per_class.items(), key=lambda item: item[1])
            fmt = ', '.join
            lines.append(f'- {j.row} seed{j.seed}: best '
                         f'{fmt(f"{n} {v:.1f}" for n, v in ranked[:-4:-1])}; worst '
                         f'{fmt(f"{n} {v:.1f}" for n, v in ranked[:3])}')
    lines += ['', '## Jobs', '',
              '| row | seed | status | last iteration | mIoU | W&B run | work dir |',
              '|---|---|---|---|---|---|---|']
    for j in jobs.itertuples():
        status = j.status + (f' ({j.error})' if j.error else '')
        lines.append(f'| {j.row} | {j.seed} | {status} | {j.iters} | {_fmt(j.mIoU_final)} | '
                     f'{j.wandb_run_id or "—"} | {_relative(j.work_dir)} |')
    return '\n'.join(lines) + '\n'


def _html(markdown: str, summary: pd.DataFrame, jobs: pd.DataFrame, png: bytes,
          title: str) -> str:
    """A self-contained page: the report's table and notes, the figure embedded as data."""
    import base64
    import html

    shown = summary.dropna(axis=1, how='all').rename(columns=HEADERS)
    table_html = shown.to_html(index=False, na_rep='—', float_format=lambda v: f'{v:.2f}',
                               classes='results', border=0)
    notes = []
    for line in markdown.splitlines():
        if line.startswith('> '):
            notes.append(f'<p class="banner">{html.escape(line[2:]).replace("**", "")}</p>')
        elif line.startswith(('- ', '[^')):  # list items and the paper-value footnotes
            text = line[2:] if line.startswith('- ') else line.replace('[^', '[', 1)
            notes.append(f'<ul><li>{html.escape(text)}</li></ul>')
        elif line.startswith('## '):
            notes.append(f'<h2>{html.escape(line[3:])}</h2>')
    jobs_html = jobs.drop(columns=['work_dir', 'miou_first', 'meta']).to_html(
        index=False, na_rep='—', float_format=lambda v: f'{v:.2f}', classes='results', border=0)
    image = base64.b64encode(png).decode()
    style = ('body{font-family:sans-serif;margin:2em;max-width:1800px}'
             'table.results{border-collapse:collapse;font-size:14px}'
             'table.results td,table.results th{border:1px solid #bbb;padding:3px 8px}'
             '.banner{background:#fff3cd;padding:8px;border:1px solid #e0c36a}'
             'img{max-width:100%}ul{margin:0}')
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}'
            f'</title><style>{style}</style></head><body><h1>{html.escape(title)}</h1>'
            f'{"".join(n for n in notes if "banner" in n)}{table_html}'
            f'<h2>Curves</h2><img alt="mIoU and loss against iteration" '
            f'src="data:image/png;base64,{image}">'
            f'{"".join(n for n in notes if "banner" not in n)}{jobs_html}</body></html>\n')


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return path


def build_report(table: Table, profile: str, work_root: Path, out_root: Path,
                 paper_version: str = 'v1', tolerance: float = DEFAULT_TOLERANCE) -> Path:
    """Write report.md, results.csv and curves.png for ``table``; return their folder."""
    jobs, curves = collect_jobs(list(table.rows), profile, work_root)
    released = released_mious(table, work_root) if profile == 'full' else {}
    summary = summarise(table, jobs, profile, paper_version, tolerance, released)
    out = report_dir(out_root, profile, table.name)
    out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / 'results.csv', index=False)
    _plot(table, curves, SMOKE.max_iters if profile == 'smoke' else FULL_MAX_ITERS,
          out / 'curves.png')
    markdown = _markdown(table, summary, jobs, profile, paper_version, tolerance)
    (out / 'report.md').write_text(markdown)
    (out / 'report.html').write_text(
        _html(markdown, summary, jobs, (out / 'curves.png').read_bytes(), table.title))
    return out
