"""SHA-256 of files, each hashed once: a cache keyed by the file's resolved path, size and
modification time (``.cache/sha256.json`` in the checkout), so a job start that names a 1 GB
weights file again costs a ``stat``."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .atomic import atomic_write
from .layout import REPO_ROOT

CACHE = REPO_ROOT / '.cache' / 'sha256.json'
CHUNK = 1 << 22


def _key(path: Path) -> str:
    stat = path.stat()
    return f'{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}'


def _read_cache(cache: Path) -> dict:
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: hashing again is always right
        return {}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, cache: Path | None = CACHE) -> str:
    """The file's SHA-256 (hex); from ``cache`` when the same file (path, size, mtime) was
    hashed before."""
    path = Path(path)
    key = _key(path)
    known = _read_cache(cache) if cache is not None else {}
    if key in known:
        return known[key]
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(CHUNK), b''):
            digest.update(chunk)
    value = digest.hexdigest()
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cache, json.dumps({**_read_cache(cache), key: value}, indent=0),
                         fsync=False)
        except OSError:  # a read-only checkout or a full disk: the hash is still right
            pass
    return value
