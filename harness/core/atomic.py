"""The one way the harness puts a file or folder in place: written under a temporary name
beside it, then renamed, so a reader, a kill or a full disk never leaves half a file under the
final name. Every writer of the harness goes through :func:`atomic_path`."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

SUFFIX = '.partial'


def temporary_name(path: Path, pid: int | None = None) -> Path:
    """``.<name>.<pid>.partial`` beside ``path``: hidden, owned by one process, on the same
    filesystem (so the rename is atomic)."""
    path = Path(path)
    return path.with_name(f'.{path.name}.{os.getpid() if pid is None else pid}{SUFFIX}')


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def move_into_place(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final`` (a file replaces a file; a folder takes a free name)."""
    os.replace(tmp, final)


# what a write raises without naming its file (``f.write``, ``os.fsync``, ``torch.save``)
_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


@contextlib.contextmanager
def _naming_final(tmp: Path, path: Path):
    """A failed write of ``tmp`` raised as an error naming ``path``: the temporary name is gone
    by the time anyone reads the message, and a full disk's own error names no file at all."""
    try:
        yield
    except OSError as err:
        if err.filename == str(tmp) or (err.filename is None and err.errno in _WRITE_ERRORS):
            raise OSError(err.errno, err.strerror, str(path)) from err  # errno: the subclass
        raise


@contextlib.contextmanager
def atomic_path(path: Path, fsync: bool = True):
    """Yield a temporary path beside ``path`` to write a file or a folder at; when the block
    ends without error it takes ``path``'s name, otherwise it is removed (and an OSError of
    the write names ``path``)."""
    path = Path(path)
    tmp = temporary_name(path)
    _remove(tmp)
    try:
        with _naming_final(tmp, path):
            yield tmp
            if fsync and tmp.is_file():
                with open(tmp, 'rb') as f:
                    os.fsync(f.fileno())  # on disk before it takes the final name
            move_into_place(tmp, path)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


def atomic_write(path: Path, data: bytes | str, fsync: bool = True) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def publish(files: dict[Path, bytes]) -> None:
    """Write several files so that none takes its final name before all are written: a build
    that fails half-way leaves every previous file whole."""
    with contextlib.ExitStack() as stack:
        staged = []
        for path, data in files.items():
            tmp = stack.enter_context(_staged(Path(path)))
            staged.append((tmp, Path(path)))
            with _naming_final(tmp, Path(path)):
                tmp.write_bytes(data)
        for tmp, path in staged:
            with _naming_final(tmp, path), open(tmp, 'rb') as f:
                os.fsync(f.fileno())
        for tmp, path in staged:
            move_into_place(tmp, path)


@contextlib.contextmanager
def _staged(path: Path):
    tmp = temporary_name(path)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with that pid exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(folder: Path) -> None:
    """Remove temporary files in ``folder`` left by processes of this host that are gone."""
    for stale in Path(folder).glob(f'.*{SUFFIX}'):
        pid = stale.name[:-len(SUFFIX)].rsplit('.', 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            _remove(stale)
