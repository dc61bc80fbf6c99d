"""Collect: what the job folders on disk say, as tables (no job is contacted, nothing recomputed).

A job's curves and state are read through :mod:`harness.layout`, which owns the job folder.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..core import profiles
from ..core.errors import StateError
from ..core.layout import job_dir, ours_eval_dir, seed_dirs
from ..core.spec import Row
from ..core.sources import recipe_sources
from ..core.state import UNREADABLE, job_status, read_curves, read_recipe, read_state

OTHER_RECIPE = 'other recipe'  # a job whose frozen recipe sources are not the row's now
VAL_METRICS = ('mIoU', 'mAcc', 'aAcc')
JOB_COLUMNS = ['row', 'seed', 'status', 'error', 'iters', 'mIoU_final', 'mAcc_final',
               'aAcc_final', 'miou_first', 'miou_ms', 'wandb_run_id', 'wandb_run',
               'device_hours', 'schedule', 'meta', 'work_dir']


def _evaluated_miou(eval_dir: Path) -> float | None:
    state = read_state(eval_dir)
    return state['metrics']['mIoU'] if state.get('status') == 'finished' else None


def train_hours(train: pd.DataFrame) -> float:
    """Training time in hours from the logged seconds per iteration (evaluation excluded)."""
    if not len(train) or 'time' not in train:
        return 0.0
    steps = pd.Series(train.index, index=train.index).diff().fillna(train.index[0])
    return float((train['time'] * steps).sum() / 3600)


def schedule_length(profile: str, meta: dict | None) -> int:
    """The iterations a job is scheduled for: its ``run --max-iters``, else its profile's."""
    return profiles.schedule_length(profile, ((meta or {}).get('request') or {}).get('max_iters'))


def collect_jobs(rows: list[Row], profile: str, work_root: Path, seeds: int | None = None):
    """One record per row x seed found on disk (seeds 0..n-1 when ``seeds`` is given)."""
    records, curves = [], {}
    for row in rows:
        sources = recipe_sources(row)
        found = seed_dirs(work_root, profile, row.folder, row.id)
        for seed in (range(seeds) if seeds else found):
            work_dir = job_dir(work_root, profile, row.folder, row.id, seed)
            state = read_state(work_dir)
            train, val = read_curves(work_dir)
            curves[(row.id, seed)] = (train, val)
            last_val = val.iloc[-1] if len(val) else None
            status, error = job_status(state), state.get('error')
            try:
                ran = (read_recipe(work_dir) or {}).get('sources')
            except StateError as err:  # that job alone is unreadable: the others are shown
                ran, status, error = None, UNREADABLE, str(err)
            if ran is not None and ran != sources:  # never attributed to the row as it is now
                status = OTHER_RECIPE
                error = f'ran another recipe (sources {ran}; the row now: {sources})'
            records.append({
                'row': row.id, 'seed': seed, 'status': status,
                'error': error if status in ('failed', OTHER_RECIPE, UNREADABLE) else None,
                'iters': int(train.index.max()) if len(train) else 0,
                **{f'{m}_final': (float(last_val[m]) if last_val is not None else None)
                   for m in VAL_METRICS},
                'miou_first': float(val['mIoU'].iloc[0]) if len(val) else None,
                'miou_ms': _evaluated_miou(ours_eval_dir(work_dir, multi_scale=True)),
                'wandb_run_id': state.get('wandb_run_id'),
                'wandb_run': state.get('wandb_run'),
                'device_hours': train_hours(train) * state.get('gpus', 1),
                'schedule': schedule_length(profile, state.get('meta')),
                'meta': state.get('meta'),
                'work_dir': str(work_dir),
            })
    jobs = pd.DataFrame.from_records(records, columns=JOB_COLUMNS)
    # pandas turns None into NaN beside strings: a job without an error would print "nan"
    jobs['error'] = jobs['error'].astype(object).where(jobs['error'].notna(), None)
    return jobs, curves
