"""The report as a W&B run (job type ``report``): the results table, the figures, and the runs
it summarises, so W&B holds the result beside the curves. Offline unless ``WANDB_MODE`` says
otherwise; the run folder is the report folder's ``wandb/`` (``wandb sync`` it with the jobs)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from ..core.layout import ours_eval_dirs, released_dirs
from ..core.profiles import DEFAULT_WANDB_PROJECT
from ..core.spec import Table
from ..core.state import read_state


def summarised_runs(table: Table, jobs: pd.DataFrame, work_root: Path) -> list[str]:
    """``project/run id`` of every run the report reads: training jobs, the evaluations of
    their checkpoints and of the released checkpoints (every evaluation folder, one per
    checkpoint evaluated)."""
    runs = list(jobs['wandb_run'].dropna())
    folders = [d for j in jobs.itertuples() for ms in (False, True)
               for d in ours_eval_dirs(Path(j.work_dir), ms)]
    folders += [d for row in table.rows for ms in (False, True)
                for d in released_dirs(work_root, table.folder, row.id, ms)]
    runs += [state['wandb_run'] for d in folders if (state := read_state(d)).get('wandb_run')]
    return runs


def _init(wandb, **kwargs):
    try:
        return wandb.init(**kwargs)
    except Exception:  # noqa: BLE001 - no server or no key: keep the record offline
        logging.getLogger(__name__).warning('W&B unavailable: the report run is kept offline')
        wandb.teardown()
        return wandb.init(**{**kwargs, 'mode': 'offline'})


def log_report_run(table: Table, profile: str, work_root: Path, out: Path,
                   summary: pd.DataFrame, jobs: pd.DataFrame, images: dict[str, bytes],
                   paper_version: str | None) -> None:
    import wandb
    runs = summarised_runs(table, jobs, work_root)
    project = runs[0].split('/')[0] if runs else os.environ.get('WANDB_PROJECT',
                                                                DEFAULT_WANDB_PROJECT)
    run = _init(wandb, project=project, dir=str(out), job_type='report',
                name=f'report-{table.name}-{profile}', group=table.name,
                tags=['report', table.name, profile], reinit='finish_previous',
                mode=os.environ.get('WANDB_MODE', 'offline'),
                config={'table': table.name, 'profile': profile, 'report_dir': str(out),
                        'paper_version': paper_version or 'matching each row',
                        'summarises': runs})
    try:
        cells = summary.astype(object).where(summary.notna(), None)
        logged = {'results': wandb.Table(dataframe=cells)}
        for name in images:  # the published PNGs beside the Markdown
            logged[f'figures/{name[:-4]}'] = wandb.Image(str(out / name), caption=name)
        run.log(logged)
        run.summary.update({
            'rows': len(summary), 'rows_with_result': int(summary['miou_ss'].notna().sum()),
            'reproduced': int((summary['verdict'] == 'reproduced').sum())})
    finally:
        run.finish()
