"""Report: reproduced single-scale mIoU against the paper, row by row, built only from disk.

Its files, and where they go (:func:`reports_root`, :func:`report_dir`):
docs/tracking-and-reports.md, "Reports".
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from ..core import atomic
from ..core.layout import DEFAULT_REPORTS, DEFAULT_WORK_ROOT, released_dirs
from ..core.result import differences, seed_free
from ..core.sources import code_differences
from ..core.spec import SEED_LOGS, Table
from . import figures
from .collect import PROBLEMS, collect_jobs, readable_result, scale_metrics
from .render import (
    EMPTY,
    NUMERIC,
    REFERENCE_COLUMNS,
    RESULT_COLUMNS,
    UNFINISHED,
    html_page,
    markdown_page,
    named_problem,
)
from .verdict import judge, on_track, rule_name, spread, target

DEFAULT_TOLERANCE = 1.0


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


def report_dir(out_root: Path, profile: str, table: Table) -> Path:
    return (out_root if profile == 'full' else out_root / profile) / table.folder


def seeds_differ(done: pd.DataFrame) -> str | None:
    """Which finished seeds of a row were trained by another recipe (the seed aside) or other
    code than its lowest seed, and in what; None when they all agree."""
    if len(done) < 2:
        return None
    base, parts = done.iloc[0], []
    for j in done.iloc[1:].itertuples():
        what = []
        if j.seed_free != base['seed_free']:
            keys = (differences(seed_free(base['view']), seed_free(j.view))
                    if base['view'] and j.view else [])
            what.append(', '.join(keys[:3]) if keys else f'recipe {j.seed_free}')
        if base['code'] is None or base['code'].get('sha256') != (j.code or {}).get('sha256'):
            what += [f'code {c}' for c in code_differences(base['code'], j.code)[:3]]
        if what:
            parts.append(f'seed{j.seed} ({"; ".join(what)})')
    return (f"seeds differ from seed{base['seed']}: " + ', '.join(parts)) if parts else None


def _row_status(jobs: pd.DataFrame, disagreement: str | None = None) -> str:
    """The row's status: what keeps a seed out of its number, the seeds that disagree, where
    its jobs are, and the marks of the seeds it counts (drift, changes, packages)."""
    statuses = list(jobs['status'])
    if not statuses or all(s == 'not run' for s in statuses):
        return 'not run'
    parts = [f'seed{j.seed} {named_problem(j.status, j.error)}' for j in jobs.itertuples()
             if j.status in PROBLEMS]
    if disagreement:
        parts.append(disagreement)
    done = statuses.count('finished')
    where = ('running' if 'running' in statuses else
             'finished' if done == len(statuses) else f'{done}/{len(statuses)} finished')
    marks = [f'seed{j.seed}: ' + '; '.join(j.marks) for j in jobs.itertuples()
             if j.status == 'finished' and j.marks]
    if len(jobs) == 1 and parts and not marks:  # one job: its problem is the row's status
        return named_problem(jobs['status'].iloc[0], jobs['error'].iloc[0])
    return ' · '.join([where, *parts, *marks])


def released_records(table: Table, work_root: Path) -> dict[tuple[str, bool], dict]:
    """The result record of each row's released checkpoint evaluated last (the newest record:
    a file converted again is evaluated again, in a folder of its own), by (row, multi_scale),
    from the spec's own folder."""
    found = {}
    for row in table.rows:
        for multi_scale in (False, True):
            folders = released_dirs(work_root, row.folder, row.id, multi_scale)
            records = [r for r in map(readable_result, folders) if r is not None]
            if records:
                found[(row.id, multi_scale)] = max(records, key=lambda r: r.get('written', 0))
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
    own = [val['mIoU'].set_axis(val.index / j.schedule) for j in done.itertuples()
           if len(val := curves[(j.row, j.seed)][1]) and not j.shortened]
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
        if j.status not in UNFINISHED and not j.shortened:
            continue
        val = curves[(j.row, j.seed)][1]
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
    """One line per table row (:data:`RESULT_COLUMNS`), Δ and verdict against the paper version
    matching the row's setup, or ``paper_version`` for every row (where that value is unknown,
    the authors' release: :func:`~harness.results.verdict.target`)."""
    released, progress = released or {}, progress or {}
    lines = []
    for row in table.rows:
        mine = jobs[jobs['row'] == row.id]
        done = mine[mine['status'] == 'finished']
        disagreement = seeds_differ(done)
        # seeds of other recipes or code are never pooled: no mean, interval or verdict
        ours = spread([] if disagreement else [float(v) for v in done['mIoU_final'].dropna()])
        version = paper_version or row.matches
        goal = target(row, version)
        delta = ours.mean - goal.miou if (profile == 'full' and ours.mean is not None
                                          and goal.miou is not None) else None
        if profile != 'full':
            verdict = 'smoke: not comparable'
            rule = rule_name(ours, tolerance) if ours.n else EMPTY
        else:
            verdict, rule = judge(ours, goal.miou, tolerance, goal.name)
        # a shortened schedule (`run --max-iters`) is a cheap trial, which says nothing of the
        # paper's run
        if shortened := sorted({int(n) for n in mine['shortened'] if n}):
            verdict, rule = f"shortened ({', '.join(map(str, shortened))} iterations)", EMPTY
        if disagreement:
            verdict, rule = 'seeds differ', EMPTY
        firsts = list(done['miou_first'].dropna())
        lines.append({
            'row': row.id, 'model': row.model,
            'paper_miou_v1': row.paper['v1'].miou, 'paper_miou_v3': row.paper['v3'].miou,
            'paper_version': goal.label, 'paper_miou': goal.miou,
            **{kind: ref.miou if (ref := row.references.get(kind)) else None
               for kind in REFERENCE_COLUMNS},
            'miou_ss': ours.mean, 'miou_ss_std': ours.std, 'n_seeds': ours.n,
            'ci_low': ours.low, 'ci_high': ours.high, 'delta': delta,
            'status': _row_status(mine, disagreement), 'verdict': verdict, 'rule': rule,
            'progress': '; '.join(f'seed{seed}: {note}' for (r, seed), note in
                                  sorted(progress.items()) if r == row.id) or None,
            'miou_first': sum(firsts) / len(firsts) if firsts else None,
            'miou_ms': (done['miou_ms'].dropna().mean()
                        if done['miou_ms'].notna().any() and not disagreement else None),
            'released_ss': released.get((row.id, False)),
            'released_ms': released.get((row.id, True)),
            'device_hours': float(mine['device_hours'].fillna(0).sum()),
            'wandb_runs': ' '.join(mine['wandb_run'].dropna()) or None,
        })
    summary = pd.DataFrame(lines, columns=RESULT_COLUMNS)
    summary[NUMERIC] = summary[NUMERIC].astype(float)  # unknown = NaN, whatever the rows hold
    return summary


def _per_class_charts(table: Table, jobs: pd.DataFrame, released: dict,
                      profile: str) -> dict[str, bytes]:
    """Per row with a per-class IoU on record: its chart, ours (mean over the finished seeds
    counted) against the released checkpoint's single-scale evaluation where there is one."""
    charts = {}
    for row in table.rows:
        done = jobs[(jobs['row'] == row.id) & (jobs['status'] == 'finished')]
        per_seed = [p for p in done['per_class'] if p] if not seeds_differ(done) else []
        if not per_seed:
            continue
        ours = pd.DataFrame(per_seed).mean().dropna().to_dict()
        record = released.get((row.id, False)) if profile == 'full' else None
        released_iou = scale_metrics(record).get('per_class_IoU') or {}
        charts[f'per-class-{row.id}.png'] = figures.per_class_chart(row.model, ours, released_iou,
                                                                    len(per_seed))
    return charts


def publish(out: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into ``out`` so that a build killed or failing while writing leaves the
    previous files whole; temporary files of earlier builds whose process is gone are removed."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic.remove_stale(out)
        atomic.publish({out / name: data for name, data in files.items()})
    except OSError as err:  # a full disk: say which file, and that nothing was replaced
        if not err.strerror:
            raise
        raise OSError(err.errno, f'{err.strerror} (the previous report is left as it was)',
                      err.filename) from err


def build_report(table: Table, profile: str, work_root: Path, out_root: Path | None = None,
                 paper_version: str | None = None, tolerance: float = DEFAULT_TOLERANCE,
                 wandb: bool = True, verify: bool = False) -> Path:
    """Write the report files of ``table`` and return their folder; with ``wandb``, also log
    the report as a W&B run (never failing the build when W&B is unavailable); ``verify``:
    every byte of every file a counted seed's record names is hashed again."""
    jobs, curves = collect_jobs(list(table.rows), profile, work_root, verify=verify)
    records = released_records(table, work_root) if profile == 'full' else {}
    released = {key: scale_metrics(record, key[1]).get('mIoU') for key, record in records.items()}
    progress = job_progress(table, jobs, curves, profile, tolerance)
    summary = summarise(table, jobs, profile, paper_version, tolerance, released, progress)
    out = report_dir(reports_root(work_root, out_root), profile, table)

    done = jobs[jobs['status'] == 'finished']  # each seed's own dot in the comparison
    finals = {row: list(miou.dropna()) for row, miou in done.groupby('row')['mIoU_final']}
    schedules = {(j.row, j.seed): j.schedule for j in jobs.itertuples()}
    seed_curves = {row.id: seed_eval_curve(row.seed_curves) for row in table.rows
                   if row.seed_curves}
    images = {'comparison.png': figures.comparison_chart(table, summary, finals),
              'curves.png': figures.curves_chart(table, curves, schedules, seed_curves),
              **_per_class_charts(table, jobs, records, profile)}

    markdown = markdown_page(table, summary, jobs, profile, paper_version, tolerance, progress,
                         [name for name in images if name.startswith('per-class-')], out)
    page = html_page(markdown, summary, jobs, images, table.title, progress)
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
