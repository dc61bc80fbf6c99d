"""Checkpoints that are never written in place.

mmengine's ``CheckpointHook`` writes each checkpoint with ``open(path, 'wb')`` and the
checkpoint pointer with ``open(path, 'w')``: a full disk (or a kill) mid-write leaves a
truncated file under the final name, a checkpoint saved again over a good one (a job resumed
from an earlier checkpoint) destroys it, and a truncated pointer makes the next start lose its
place. Here each file is written under a temporary name and renamed over the final one, so a
name only ever holds a complete file; a failed save says which checkpoint is still good.
"""
from __future__ import annotations

import time
from pathlib import Path

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS

from ..core.atomic import atomic_write
from ..core.hashing import sha256_bytes
from ..core.layout import CHECKPOINT_STAGING, POINTER
from ..core.state import read_state, write_state


class CheckpointSaveError(OSError):
    """A checkpoint could not be written; the message names it and the one still good."""


def record_checkpoint(path: Path, sha256: str) -> None:
    """Note a saved checkpoint's SHA-256 in its job's state; checkpoints no longer on disk
    (the hook keeps the newest few) leave the record."""
    work_dir = path.parent
    known = read_state(work_dir).get('checkpoints') or {}
    kept = {name: entry for name, entry in known.items() if (work_dir / name).is_file()}
    kept[path.name] = {'sha256': sha256, 'bytes': path.stat().st_size, 'saved': time.time()}
    write_state(work_dir, checkpoints=kept)


@register_backend('atomic_local')
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose writes go through a temporary file + rename."""

    def put(self, obj: bytes, filepath) -> None:
        path = Path(filepath)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, obj)
        if path.suffix == '.pth':  # what `verify` and a resume check the file against
            record_checkpoint(path, sha256_bytes(obj))

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` with atomic checkpoint files and pointer (same options)."""

    def __init__(self, *args, backend_args=None, **kwargs):
        super().__init__(*args, backend_args=backend_args or dict(backend='atomic_local'),
                         **kwargs)

    def _save_checkpoint_with_step(self, runner, step, meta):
        work_dir = Path(runner.work_dir)
        pointer = work_dir / POINTER
        previous = pointer.read_text().strip() if pointer.is_file() else ''
        staging = work_dir / CHECKPOINT_STAGING
        staging.mkdir(exist_ok=True)
        # the parent class writes its pointer in place into runner.work_dir (and uses the work
        # dir for nothing else here): let it write into the staging folder, then rename
        runner._work_dir = str(staging)
        try:
            start = time.perf_counter()
            super()._save_checkpoint_with_step(runner, step, meta)
            # the job's record of what a save costs (rehearsals report it)
            runner.message_hub.update_scalar('checkpoint/save_time',
                                             time.perf_counter() - start)
            if is_main_process():  # every rank writes a pointer; rank 0's becomes the one
                # the file's name only: a copied or moved job folder resumes from its own file
                saved = Path((staging / POINTER).read_text().strip()).name
                atomic_write(pointer, saved)
                (staging / POINTER).unlink()
        except OSError as err:
            kept = (f'the previous checkpoint {Path(previous).name} is intact'
                    if previous and (work_dir / Path(previous).name).is_file()
                    else 'no earlier checkpoint is kept')
            reason = (err.strerror or str(err)).lower()
            raise CheckpointSaveError(
                err.errno, f'{reason} while saving checkpoint '  # the job line names the folder
                f'{self.filename_tmpl.format(step)}; {kept}') from err
        finally:
            runner._work_dir = str(work_dir)
