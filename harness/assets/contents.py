"""A dataset's contents, hashed once and kept beside it: each file's size, modification time
and SHA-256 in ``<data_root>/`` :data:`~harness.core.layout.DATA_CONTENTS_FILE`, with one
digest of them all (the ``contents_sha256`` a job records; docs/reproduce.md, "1. ADE20K").
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..core.atomic import atomic_write
from ..core.datasets import layout_of
from ..core.layout import DATA_CONTENTS_FILE

VERSION = 1
NOT_HASHED = 'not hashed: run check-data'


def contents_path(root: Path) -> Path:
    return Path(root) / DATA_CONTENTS_FILE


def dataset_files(root: Path) -> list[str]:
    """The relative paths of the dataset's files (every entry of its declared folders, every
    file below them where the layout nests, and its split lists), sorted."""
    root, found = Path(root), []
    declared = layout_of(root)
    for folder in declared.folders:
        here = root / folder
        if here.is_file():  # a split list
            found.append(folder)
        elif here.is_dir() and declared.nested:
            found += [p.relative_to(root).as_posix() for p in here.rglob('*') if p.is_file()]
        elif here.is_dir():
            found += [f'{folder}/{p.name}' for p in here.iterdir()]
    return sorted(found)


def hash_file(path: Path) -> tuple[dict, bytes]:
    """(``{'size', 'mtime_ns', 'sha256'}``, the bytes) of one file, its size and time taken
    from the open file, so they belong to the bytes read."""
    with open(path, 'rb') as f:
        stat = os.fstat(f.fileno())
        data = f.read()
    return ({'size': stat.st_size, 'mtime_ns': stat.st_mtime_ns,
             'sha256': hashlib.sha256(data).hexdigest()}, data)


def contents_digest(files: dict[str, dict]) -> str:
    """One SHA-256 over every file's name and SHA-256 (sizes and times left out)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{files[name]['sha256']}  {name}\n".encode())
    return digest.hexdigest()


def write_contents(root: Path, files: dict[str, dict], written_by: str = 'check-data') -> Path:
    """Write the contents file of ``root`` atomically; an OSError (a read-only dataset) is the
    caller's to report."""
    path = contents_path(root)
    body = {'version': VERSION, 'written_by': written_by,
            'contents_sha256': contents_digest(files),
            'files': {name: files[name] for name in sorted(files)}}
    atomic_write(path, json.dumps(body, indent=0, sort_keys=True))
    return path


def read_contents(root: Path) -> dict | None:
    """The contents file of ``root`` (``files`` and ``contents_sha256``), or None when there is
    none or it cannot be read or is not one (its digest must be that of its files)."""
    try:
        body = json.loads(contents_path(root).read_text())
        files = body['files']
        if body.get('version') != VERSION or body['contents_sha256'] != contents_digest(files):
            return None
        return body
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def stat_differences(root: Path, recorded: dict, names: list[str] | None = None) -> list[str]:
    """The files whose list, size or modification time is not what ``recorded`` (a contents
    file) says: one short phrase each, in name order."""
    root = Path(root)
    names = dataset_files(root) if names is None else names
    files = recorded['files']
    found = [f'{name} not hashed' for name in names if name not in files]
    found += [f'{name} gone' for name in sorted(set(files) - set(names))]
    for name in names:
        if name not in files:
            continue
        try:
            stat = (root / name).stat()
        except OSError:
            found.append(f'{name} unreadable')
            continue
        entry = files[name]
        if stat.st_size != entry.get('size'):
            found.append(f'{name} size {stat.st_size}, hashed at {entry.get("size")}')
        elif stat.st_mtime_ns != entry.get('mtime_ns'):
            found.append(f'{name} modified since it was hashed')
    return sorted(found)


def recorded_contents(root: Path, names: list[str]) -> tuple[str | None, str]:
    """(the contents digest of the contents file, who hashed them) when its files are
    ``names`` with the sizes and times they have now; else (None, why not)."""
    recorded = read_contents(root)
    if recorded is None:
        return None, NOT_HASHED
    changed = stat_differences(root, recorded, names)
    if changed:
        return None, (f'{NOT_HASHED} again ({len(changed)} file(s) changed since it hashed '
                      f'them, the first: {changed[0]})')
    return recorded['contents_sha256'], f"hashed by {recorded.get('written_by')}"


def process_pool(workers: int | None):
    """``workers`` processes (None: one per core) for the file checks and hashes. Started by a
    fork server, not forked from this process: a fork copies every lock that another thread
    holds at that moment (rich's refresh thread, pytest-xdist's I/O thread, an import under
    way), and a worker that then needs one waits for ever."""
    import multiprocessing
    context = multiprocessing.get_context('forkserver')
    context.set_forkserver_preload(['harness.assets.data'])  # imported once, not per worker
    return context.Pool(workers)


def progress_bar(unit: str):
    """rich's progress bar on stdout (stderr carries the error lines alone), counting files
    (done of all, defects, time taken) or ``'bytes'`` (size, speed); in a log, one final line
    wide enough for every column."""
    import sys

    from rich import progress as rp
    from rich.console import Console
    counts = ((rp.DownloadColumn(), rp.TransferSpeedColumn()) if unit == 'bytes' else
              (rp.MofNCompleteColumn(), rp.TextColumn('{task.fields[defects]} defects'),
               rp.TimeElapsedColumn()))
    return rp.Progress(rp.TextColumn('{task.description}'), rp.BarColumn(), *counts,
                       rp.TextColumn('left'), rp.TimeRemainingColumn(),
                       console=Console(file=sys.stdout,
                                       width=None if sys.stdout.isatty() else 120))


def hash_all(root: Path) -> dict[str, dict]:
    """Every file of the dataset hashed now (``verify --contents``), one process per core."""
    root = Path(root)
    names = dataset_files(root)
    paths = [root / name for name in names]
    with process_pool(None) as pool:
        entries = pool.map(_entry_only, paths, chunksize=64)
    return dict(zip(names, entries))


def _entry_only(path: Path) -> dict:
    try:
        return hash_file(path)[0]
    except OSError as err:  # a folder or an unreadable file: a digest no record has
        return {'sha256': f'unreadable ({err.strerror})'}
