"""Collect: what the job folders on disk say, as tables (no job is contacted, nothing recomputed).

A finished job counts through its result record (:mod:`harness.core.result`) alone: present,
parsable, its checkpoint present with the recorded SHA-256, its pretrained file (where this
machine has it) too. Whether it ran the row as the spec defines it now is decided from data
any machine reads alike (the recipe sources and code identity of :mod:`harness.core.sources`,
the package releases the job recorded against the pins), never from the reading machine's
packages.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..core import profiles
from ..core.errors import SpecError, StateError
from ..core.hashing import CACHE, sha256_file
from ..core.layout import REPO_ROOT, REQUEST_FILE, job_dir, ours_eval_dir, seed_dirs
from ..core.result import read_result
from ..core.sources import SOURCES_FORMAT, code_differences, code_files, off_pins, recipe_sources
from ..core.spec import Row
from ..core.state import UNREADABLE, job_status, read_curves, read_recipe, read_state

OTHER_RECIPE = 'other recipe'  # a job whose recipe sources are not the row's now
NO_RECORD = 'no result record'  # finished before records existed: not counted until made
CHECK_FAILED = 'check failed'  # its files are not what its record says: not counted
CONFIG_ERROR = 'config error'  # the row's config (or the code) does not parse now
# what keeps a job's number out of its row, named in the row's status
PROBLEMS = ('failed', UNREADABLE, CONFIG_ERROR, OTHER_RECIPE, NO_RECORD, CHECK_FAILED)
VAL_METRICS = ('mIoU', 'mAcc', 'aAcc')
JOB_COLUMNS = ['row', 'seed', 'status', 'error', 'marks', 'iters', 'mIoU_final', 'mAcc_final',
               'aAcc_final', 'miou_first', 'miou_ms', 'wandb_run_id', 'wandb_run',
               'device_hours', 'schedule', 'shortened', 'seed_free', 'code', 'view',
               'per_class', 'meta', 'work_dir']


def train_hours(train: pd.DataFrame) -> float:
    """Training time in hours from the logged seconds per iteration (evaluation excluded)."""
    if not len(train) or 'time' not in train:
        return 0.0
    steps = pd.Series(train.index, index=train.index).diff().fillna(train.index[0])
    return float((train['time'] * steps).sum() / 3600)


def _sha256(path: Path, verify: bool) -> str:
    # the hash cache is keyed by path, size and modification time, so a file changed in place
    # is hashed again; --verify reads every byte whatever the cache holds
    return sha256_file(path, cache=None if verify else CACHE)


def _file_differs(path: Path, entry: dict, hashes: bool, verify: bool) -> str | None:
    """Why ``path`` is not the file ``entry`` (sha256, bytes) records, or None."""
    if not path.is_file():
        return f'{path.name} is missing'
    if entry.get('bytes') is not None and path.stat().st_size != entry['bytes']:
        return f'{path.name} is not the size recorded'
    if not hashes:
        return None
    if entry.get('sha256') is None:
        return f'{path.name} has no recorded SHA-256'
    if _sha256(path, verify) != entry['sha256']:
        return f'{path.name}: SHA-256 differs from the one recorded'
    return None


def _weights_path(work_dir: Path, entry: dict) -> Path | None:
    """Where this machine keeps the job's pretrained file, if it does."""
    roots = [REPO_ROOT]
    try:
        roots.insert(0, Path(json.loads((work_dir / REQUEST_FILE).read_text())['weights_root']))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return next((root / entry['file'] for root in roots if (root / entry['file']).is_file()),
                None)


def check_record(work_dir: Path, record: dict, verify: bool, hashes: bool) -> list[str]:
    """What differs between a job folder and its result record: the checkpoint (present, its
    size, and with ``hashes`` its SHA-256), the pretrained file where this machine has it, and
    with ``verify`` the metric files the record summarises."""
    problems = []
    checkpoint = record.get('checkpoint') or {}
    if record.get('kind') == 'train':
        found = (_file_differs(Path(work_dir) / checkpoint['file'], checkpoint, hashes, verify)
                 if checkpoint.get('file') else 'none recorded')
        if found:
            problems.append(f'checkpoint {found}')
    pretrained = ((record.get('inputs') or {}).get('files') or {}).get('pretrained') or {}
    if hashes and pretrained.get('sha256'):
        path = _weights_path(Path(work_dir), pretrained)
        if path is not None and _sha256(path, verify) != pretrained['sha256']:
            problems.append(f"pretrained {pretrained['file']}: SHA-256 differs from the one the "
                            'job loaded')
    if verify:
        for name, sha in (record.get('files') or {}).items():
            path = Path(work_dir) / name
            if not path.is_file() or sha256_file(path, cache=None) != sha:
                problems.append(f'{name} is not the file the record summarises')
    return problems


def record_marks(record: dict, code_now: dict | None) -> list[str]:
    """What a reader must know of a counted job, from its record: accepted drift, code or
    packages that changed between its starts, packages off the pins, code changed since, a
    record made after the job."""
    marks = [f"drift accepted at start {entry['start']} ({', '.join(entry['drift'][:3])})"
             for entry in record.get('drift') or []]
    if record.get('changes'):
        marks.append('changed during the job: ' + '; '.join(record['changes']))
    code = record.get('code')
    if code is None:
        marks.append('code identity unknown')
    else:
        if off := off_pins(code.get('packages')):
            marks.append('packages off the pins: ' + ', '.join(off))
        if code_now is not None:
            # the files alone: the packages are the pins' matter, above
            if changed := code_differences({'files': code.get('files')}, {'files': code_now}):
                marks.append('code changed since: ' + ', '.join(changed[:3])
                             + (f' and {len(changed) - 3} more' if len(changed) > 3 else ''))
    if record.get('made_by', 'job') != 'job':
        marks.append(f"record made by the {record['made_by']}")
    return marks


def scale_metrics(record: dict | None, multi_scale: bool = False) -> dict:
    """A result record's metrics at one scale ({} where there are none)."""
    return ((record or {}).get('metrics') or {}).get(
        'multi_scale' if multi_scale else 'single_scale') or {}


def readable_result(folder: Path) -> dict | None:
    """An evaluation folder's result record; None when it has none or it cannot be read."""
    try:
        return read_result(folder)
    except StateError:
        return None


def _multi_scale_miou(trained: Path, record: dict | None) -> float | None:
    """The mIoU of the multi-scale evaluation of the job's recorded checkpoint, from its
    result record."""
    sha = ((record or {}).get('checkpoint') or {}).get('sha256')
    evaluation = readable_result(ours_eval_dir(trained, True, sha)) if sha else None
    return scale_metrics(evaluation, True).get('mIoU')


def _row_identity(row: Row) -> tuple[str | None, dict | None, str | None]:
    """(recipe sources, code files, error) of ``row`` as the checkout has it now."""
    try:
        return recipe_sources(row), code_files(row), None
    except SpecError as err:
        return None, None, str(err)


def collect_jobs(rows: list[Row], profile: str, work_root: Path, seeds: int | None = None,
                 verify: bool = False, hashes: bool = True):
    """One record per row x seed found on disk (seeds 0..n-1 when ``seeds`` is given).
    ``hashes``: compare the checkpoints' (and pretrained files') SHA-256 with their records
    (through the hash cache; ``verify``: every byte, and the summarised metric files too);
    without, their presence and size only."""
    records, curves = [], {}
    for row in rows:
        sources, code_now, row_error = _row_identity(row)
        for seed in range(seeds) if seeds else seed_dirs(work_root, profile, row.folder, row.id):
            work_dir = job_dir(work_root, profile, row.folder, row.id, seed)
            state = read_state(work_dir)
            train, val = read_curves(work_dir)
            curves[(row.id, seed)] = (train, val)
            last_val = val.iloc[-1] if len(val) else {}
            status, error, marks = job_status(state), state.get('error'), []
            finals = {m: float(last_val[m]) if m in last_val else None for m in VAL_METRICS}
            result, meta, frozen = None, state.get('meta'), {}
            try:
                frozen = read_recipe(work_dir) or {}
                # sources frozen by an older harness are of another format: not comparable
                ran = frozen.get('sources') if frozen.get('sources_format') == SOURCES_FORMAT \
                    else None
                if status == 'finished':
                    result = read_result(work_dir)
            except StateError as err:  # that job alone is unreadable: the others are shown
                ran, status, error = None, UNREADABLE, str(err)
            if row_error is not None and status != 'not run':
                status, error = CONFIG_ERROR, row_error
            elif status == 'finished' and result is None:
                status = NO_RECORD
                error = (f'finished before result records existed; `python -m harness record '
                         f'--job {work_dir}` makes one after checking the folder')
            elif result is not None:
                ran = (result.get('recipe') or {}).get('sources')
                problems = check_record(work_dir, result, verify, hashes)
                if problems:
                    status, error = CHECK_FAILED, '; '.join(problems)
                marks = record_marks(result, code_now)
                finals = {m: scale_metrics(result).get(m) for m in VAL_METRICS}
            if status not in (UNREADABLE, CONFIG_ERROR) and ran is not None and sources \
                    and ran != sources:  # never attributed to the row as it is now
                status = OTHER_RECIPE
                error = f'ran another recipe (sources {ran}; the row now: {sources})'
            trained = (result or {}).get('trained') or {}
            # a record's schedule, else the request's `run --max-iters`, else the profile's
            # (the full one: the row's dataset's)
            full = row.data.recipe.iterations
            schedule = trained.get('max_iters') or profiles.schedule_length(
                profile, ((meta or {}).get('request') or {}).get('max_iters'), full)
            records.append({
                'row': row.id, 'seed': seed, 'status': status,
                'error': error if status in PROBLEMS else None, 'marks': marks,
                'iters': int(train.index.max()) if len(train) else 0,
                **{f'{m}_final': finals[m] for m in VAL_METRICS},
                'miou_first': float(val['mIoU'].iloc[0]) if len(val) else None,
                'miou_ms': _multi_scale_miou(work_dir, result),
                'wandb_run_id': state.get('wandb_run_id'),
                'wandb_run': state.get('wandb_run'),
                'device_hours': train_hours(train) * state.get('gpus', 1),
                'schedule': schedule,
                'shortened': schedule if schedule != profiles.schedule_length(profile, None, full)
                else None,
                'seed_free': ((result or {}).get('recipe') or {}).get('seed_free'),
                'code': (result or {}).get('code'),
                'view': frozen.get('view'),
                'per_class': scale_metrics(result).get('per_class_IoU'),
                'meta': meta,
                'work_dir': str(work_dir),
            })
    jobs = pd.DataFrame.from_records(records, columns=JOB_COLUMNS)
    # pandas turns None into NaN beside strings: a job without an error would print "nan"
    for column in ('error', 'seed_free', 'shortened'):
        jobs[column] = jobs[column].astype(object).where(jobs[column].notna(), None)
    return jobs, curves
