"""The report's figures (matplotlib, Agg): the comparison of each row with the paper and the
references, per-class IoU per row, and the curves. Each is a PNG, returned as bytes."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..core.spec import Table

# what each mark of the comparison chart stands for: column, label, marker, colour, x offset
COMPARISON_MARKS = (
    ('paper_miou_v1', 'paper v1', 'v', '0.45', -0.3),
    ('paper_miou_v3', 'paper v3', '^', 'black', -0.3),
    ('seed_repo', 'seed repository', 's', 'tab:purple', -0.15),
    ('official_zoo', 'official zoo', 'D', 'tab:green', -0.15),
    ('mmseg_zoo', 'mmseg zoo', 'P', 'tab:olive', -0.15),
    ('released_ss', 'released checkpoint (evaluated here)', '*', 'tab:red', 0.0),
)


def _png(fig, axes, grid: str = 'both') -> bytes:
    """Small titles, a light grid and a legend where there is one; the figure as PNG."""
    for ax in axes:
        ax.title.set_fontsize(9)
        ax.grid(axis=grid, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def comparison_chart(table: Table, summary: pd.DataFrame,
                     seeds: dict[str, list[float]]) -> bytes:
    """Per row: the paper value(s) (the one Δ is taken against filled, the other hollow), the
    reference reproductions, the released checkpoint's evaluation, our seeds as points and their
    mean with its 95% interval (n ≥ 2) as an error bar."""
    fig, ax = plt.subplots(figsize=(max(7.0, 1.3 * len(summary) + 3), 5))
    labelled = set()

    def mark(x, y, label, **style):
        ax.plot([x], [y], linestyle='none', label=None if label in labelled else label, **style)
        labelled.add(label)

    for i, r in enumerate(summary.itertuples()):
        for column, label, marker, colour, dx in COMPARISON_MARKS:
            value = getattr(r, column)
            if pd.isna(value):
                continue
            hollow = column.startswith('paper_') and column != f'paper_miou_{r.paper_version}'
            mark(i + dx, value, label, marker=marker, ms=9 if column.startswith('paper') else 7,
                 color=colour, markerfacecolor='white' if hollow else colour)
        if points := seeds.get(r.row, []):
            spread = np.linspace(-0.05, 0.05, len(points)) if len(points) > 1 else [0.0]
            for dx, y in zip(spread, points):
                mark(i + 0.2 + dx, y, 'ours: one seed', marker='o', ms=4, color='tab:blue',
                     alpha=0.6)
            low, high = r.ci_low, r.ci_high
            if pd.notna(low):
                ax.errorbar([i + 0.3], [r.miou_ss], yerr=[[r.miou_ss - low], [high - r.miou_ss]],
                            fmt='none', ecolor='tab:blue', capsize=4,
                            label=None if 'ci' in labelled else 'ours: 95% t interval')
                labelled.add('ci')
            mark(i + 0.3, r.miou_ss, 'ours: mean', marker='_', ms=16, mew=2.5, color='tab:blue')
    ax.set_xticks(range(len(summary)), [f'{m}\n({v})' for m, v in
                                        zip(summary['model'], summary['paper_version'])],
                  fontsize=8)
    ax.set(ylabel='single-scale mIoU (%)', xlim=(-0.7, len(summary) - 0.3),
           title=f'{table.title}\n(under each row: the paper version Δ is taken against, '
                 'its mark filled)')
    return _png(fig, [ax], grid='y')


def per_class_chart(model: str, ours: dict[str, float], released: dict[str, float],
                    seeds: int) -> bytes:
    """One row's per-class IoU of its last evaluation, classes sorted by ours (mean over
    ``seeds``), against the released checkpoint's where that was evaluated."""
    names = sorted(ours, key=lambda n: -ours[n]) + sorted(set(released) - set(ours))
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(8.0, 0.12 * len(names) + 2), 4.2))
    ax.bar(x, [ours.get(n, np.nan) for n in names], color='tab:blue', width=0.8,
           label=f'ours (mean over {seeds} seed{"s" if seeds > 1 else ""})')
    if released:
        ax.plot(x, [released.get(n, np.nan) for n in names], 'o', ms=3, color='tab:red',
                label='released checkpoint')
    ax.set_xticks(x, names, rotation=90, fontsize=5 if len(names) > 60 else 7)
    ax.set(xlim=(-0.8, len(names) - 0.2), ylim=(0, 100), ylabel='IoU (%)',
           title=f'{model}: per-class IoU of the last evaluation ({len(names)} classes seen, '
                 'sorted by ours)')
    return _png(fig, [ax], grid='y')


def curves_chart(table: Table, curves: dict, schedules: dict, seed_curves: dict) -> bytes:
    """mIoU against iteration and against the fraction of the schedule (with the seed
    repository's published curve where a row matches one), and the training loss with the
    evaluation iterations marked. ``schedules``: (row, seed) -> the job's schedule length."""
    fig, (ax_miou, ax_loss, ax_progress) = plt.subplots(1, 3, figsize=(17, 4.8))
    for i, row in enumerate(table.rows):
        colour = f'C{i % 10}'
        runs = {k: v for k, v in curves.items() if k[0] == row.id}
        mious = [val['mIoU'] for _, val in runs.values() if len(val)]
        losses = [train['loss'] for train, _ in runs.values() if len(train) and 'loss' in train]
        if mious:  # the mean over seeds, and (two or more) their min..max as a band
            seeds = pd.concat(mious, axis=1)
            ax_miou.plot(seeds.index, seeds.mean(axis=1), 'o-', color=colour, label=row.model,
                         ms=4)
            if seeds.shape[1] > 1:
                ax_miou.fill_between(seeds.index, seeds.min(axis=1), seeds.max(axis=1),
                                     color=colour, alpha=0.2)
            for key, (_, val) in runs.items():
                if len(val):  # each job against its own schedule (a shortened one ends at 1)
                    ax_progress.plot(val.index / schedules[key], val['mIoU'], 'o-', ms=4,
                                     color=colour, label=f'{row.model} seed{key[1]}')
        if losses:  # smoothed: a rolling mean over 5 logged points
            loss = pd.concat(losses, axis=1).mean(axis=1).rolling(5, min_periods=1).mean()
            ax_loss.plot(loss.index, loss, color=colour, label=row.model, lw=1)
            evaluated = sorted({it for _, val in runs.values() for it in val.index})
            ax_loss.plot(evaluated, np.interp(evaluated, loss.index, loss), 'o', ms=5,
                         color=colour, markerfacecolor='white')
        if row.id in seed_curves:
            seed = seed_curves[row.id]
            ax_progress.plot(seed.index / seed.index.max(), seed['mIoU'], '--', color=colour,
                             label=f'{row.model}: seed repo (published)')
    ax_miou.set(title='single-scale mIoU (val, dots: evaluations); band: min-max over seeds',
                xlabel='iteration', ylabel='mIoU (%)')
    ax_loss.set(title='training loss (smoothed, mean over seeds; circles: evaluations)',
                xlabel='iteration', ylabel='loss')
    ax_progress.set(title='mIoU against training progress (dashed: seed repository)',
                    xlabel='fraction of the schedule', ylabel='mIoU (%)', xlim=(0, 1.02))
    for ax in (ax_miou, ax_loss):  # 160k iterations: long tick labels would run together
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(
            lambda v, _: f'{v / 1000:g}k' if v >= 10000 else f'{v:g}'))
    fig.suptitle(table.title, fontsize=10)
    return _png(fig, (ax_miou, ax_loss, ax_progress))
