"""The targets of ``run`` and ``evaluate``: one :class:`~harness.launch.launchers.Target`
(a JobRequest and how the launcher's lines name it) per job, in its job folder.

A training job is a row x seed; an evaluation of ours is the final checkpoint a finished
training's result record names, checked by its bytes here, before anything is launched, and
evaluated in a folder of its SHA-256 inside the training's folder; an evaluation of a released
checkpoint is a converted file, in a folder of its SHA-256 under the row's table folder. So
another checkpoint is another evaluation, and the first one stays.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..core.errors import StateError
from ..core.hashing import sha256_file
from ..core.layout import job_dir, ours_eval_dir, released_dir
from ..core.request import JobRequest
from ..core.result import read_result
from ..core.spec import Row
from ..core.state import UNREADABLE, read_state
from .launchers import Target


def train_targets(rows: list[Row], seeds: int, work_root: Path, **options) -> list[Target]:
    """Every row x seed trained in ``<work_root>/<profile>/<table>/<row>/seed<k>/``;
    ``options``: the JobRequest fields common to all of them (profile, data_root, ...)."""
    requests = [JobRequest(row=row, seed=seed, work_dir=job_dir(work_root, options['profile'],
                                                                 row.folder, row.id, seed),
                           **options)
                for row in rows for seed in range(seeds)]
    return [Target(r, f'[{n}/{len(requests)}] {r.name}') for n, r in enumerate(requests, 1)]


def evaluate_ours_targets(rows: list[Row], seeds: int, work_root: Path, multi_scale: bool,
                          **options) -> tuple[list[Target], int]:
    """The final checkpoint of each finished row x seed. Returns (targets, the row x seeds
    refused: a damaged or unreadable record, a checkpoint that is not the one recorded)."""
    pairs = [(row, seed) for row in rows for seed in range(seeds)]
    targets, refused = [], 0
    for n, (row, seed) in enumerate(pairs, 1):
        tag = f'[{n}/{len(pairs)}] {row.table}/{row.id} seed{seed}'
        trained = job_dir(work_root, options['profile'], row.folder, row.id, seed)
        state = read_state(trained)
        if state.get('status') == UNREADABLE:
            print(f"{tag}: {state['error']}, skipped")
            continue
        if state.get('status') != 'finished':
            print(f'{tag}: not trained yet, skipped')
            continue
        try:
            record = read_result(trained)
        except StateError as err:
            refused += 1
            print(f'error: {tag}: {err}, skipped', file=sys.stderr, flush=True)
            continue
        if record is None:
            print(f'{tag}: no result record (make one with python -m harness record --job '
                  f'{trained}), skipped')
            continue
        entry = record.get('checkpoint') or {}
        name, expected = entry.get('file'), entry.get('sha256')
        checkpoint = trained / Path(name).name if name else None
        problem = _not_recorded(checkpoint, expected)
        if problem:
            refused += 1
            print(f'error: {tag}: {problem}; not evaluated', file=sys.stderr, flush=True)
            continue
        targets.append(Target(JobRequest(row=row, seed=seed, checkpoint=checkpoint,
                                         checkpoint_sha256=expected, multi_scale=multi_scale,
                                         work_dir=ours_eval_dir(trained, multi_scale, expected),
                                         **options), tag))
    return targets, refused


def _not_recorded(checkpoint: Path | None, expected: str | None) -> str | None:
    """Why ``checkpoint`` is not the file a result record names by ``expected`` (its SHA-256,
    hashed here from its bytes), or None when it is."""
    if checkpoint is None or expected is None:
        return 'its result record names no checkpoint' + (' SHA-256' if checkpoint else '')
    if not checkpoint.is_file():
        return f'{checkpoint}, the checkpoint its result record names, is missing'
    try:
        found = sha256_file(checkpoint, cache=None)
    except OSError as err:
        return f'cannot read {checkpoint}: {err.strerror or err}'
    if found != expected:
        return (f'{checkpoint} is not the checkpoint its result record names (SHA-256 '
                f'{found[:16]}, recorded {expected[:16]}: the file changed since the training '
                'finished)')
    return None


def evaluate_released_targets(rows: list[Row], work_root: Path, checkpoints: Path,
                              multi_scale: bool, **options) -> tuple[list[Target], int]:
    """Each row's converted released checkpoint ``<checkpoints>/<row>.pth``. Returns (targets,
    the rows whose file could not be read)."""
    targets, refused = [], 0
    for n, row in enumerate(rows, 1):
        tag = f'[{n}/{len(rows)}] {row.table}/{row.id}'
        checkpoint = Path(checkpoints) / f'{row.id}.pth'
        if not checkpoint.is_file():
            print(f'{tag}: no {checkpoint}, skipped')
            continue
        try:
            sha = sha256_file(checkpoint)
        except OSError as err:
            refused += 1
            print(f'error: {tag}: cannot read {checkpoint}: {err.strerror or err}; not '
                  'evaluated', file=sys.stderr, flush=True)
            continue
        request = JobRequest(row=row, seed=0, checkpoint=checkpoint, released=True,
                             checkpoint_sha256=sha, multi_scale=multi_scale,
                             work_dir=released_dir(work_root, row.folder, row.id, multi_scale,
                                                   sha), **options)
        targets.append(Target(request, f'[{n}/{len(rows)}] {request.name}'))
    return targets, refused
