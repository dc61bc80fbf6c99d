"""The result record (``layout.RESULT_FILE``): one file per finished job that binds its numbers to
what produced them, so a reader can trust them without the job.

It is written once, when a training or evaluation job ends (or, for a job that finished before
records existed, by ``python -m harness record`` after checking the folder), and never
rewritten: a new evaluation is a new folder with its own record. It holds the metrics with the
iteration and the checkpoint they came from (SHA-256), the recipe fingerprint and the seed-free
one, the code identity of the first start, the inputs as frozen then, the precision, total batch
and schedule that trained, every accepted drift and change between starts, and the SHA-256 of the
files it summarises. ``report`` reads it; ``verify`` checks it against those files.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .atomic import atomic_write
from .errors import StateError
from .layout import RESULT_FILE
from .state import read_json_object

FORMAT = 1
# where the seed sits in a recipe view (mmengine's `randomness`): the seed-free fingerprint
# leaves it out, so the seeds of one row can be shown to share every other value
SEED_KEY = ('randomness', 'seed')


def view_fingerprint(view: dict) -> str:
    """A short, stable hash of a recipe view (16 hex digits of its SHA-256)."""
    text = json.dumps(view, sort_keys=True, separators=(',', ':'), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def seed_free(view: dict) -> dict:
    section, key = SEED_KEY
    if isinstance(view.get(section), dict) and key in view[section]:
        view = {**view, section: {k: v for k, v in view[section].items() if k != key}}
    return view


def seed_free_fingerprint(view: dict) -> str:
    """The recipe fingerprint of ``view`` with the seed left out."""
    return view_fingerprint(seed_free(view))


def _flat(value, prefix: str = '') -> dict:
    if isinstance(value, dict):
        return {k: v for key, item in value.items()
                for k, v in _flat(item, f'{prefix}.{key}' if prefix else str(key)).items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value)
                for k, v in _flat(item, f'{prefix}[{i}]').items()} or {prefix: []}
    return {prefix: value}


def differences(old: dict, new: dict) -> list[str]:
    """The dotted keys whose values differ between two recipe views, in the old one's order
    (keys only one of them has included)."""
    a, b = _flat(old), _flat(new)
    return [k for k in list(a) + [k for k in b if k not in a] if a.get(k) != b.get(k)]


def write_result(work_dir: Path, record: dict) -> Path:
    """Write the job's result record once; StateError when one is already there (a record is
    history: a new result is a new job folder)."""
    path = Path(work_dir) / RESULT_FILE
    if path.exists():
        raise StateError(f'{path} exists: a result record is written once (a new evaluation '
                         'is a new folder)')
    atomic_write(path, json.dumps({'format': FORMAT, **record}, indent=1, default=str))
    return path


def read_result(work_dir: Path) -> dict | None:
    """The job's result record; None when it has none; StateError naming the file when it
    cannot be read or is of an unknown format."""
    path = Path(work_dir) / RESULT_FILE
    try:
        record = read_json_object(path, 'result record')
    except FileNotFoundError:
        return None
    if record.get('format') != FORMAT:
        raise StateError(f'unreadable result record ({path}): not a format-{FORMAT} record')
    return record
