"""What a job folder's files hold: the job state (``STATE_FILE``), its progress, its log, its
per-class IoU and its curves. The names of the files are :mod:`harness.core.layout`'s."""
from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from .atomic import atomic_write, pid_alive
from .errors import StateError
from .layout import CURVES_FILE, LOG_FILE, PER_CLASS_FILE, RECIPE_FILE, STATE_FILE


def job_status(state: dict) -> str:
    """finished / failed / interrupted / running / stale (running on record, process gone)."""
    status = state.get('status', 'not run')
    if status == 'running' and state.get('host') == socket.gethostname() \
            and not pid_alive(int(state.get('pid', 0))):
        return 'stale'
    return status


# The status of a job whose state file does not parse (cut short by a copy, edited, damaged):
# shown as such by status and report, never launched, never written over (whoever repairs it
# or moves it aside decides what it held).
UNREADABLE = 'unreadable'


def read_json_object(path: Path, what: str = 'state') -> dict:
    """The JSON object in ``path``; FileNotFoundError when there is none, StateError naming the
    file (``unreadable <what> (<path>): <reason>``) when it cannot be read as one."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as err:
        raise StateError(f'unreadable {what} ({path}): {err.strerror or err}') from None
    try:
        value = json.loads(text)
    except ValueError as err:  # JSONDecodeError, or bytes that are not UTF-8
        reason = 'the file is empty' if not text.strip() else f'not JSON ({err})'
        raise StateError(f'unreadable {what} ({path}): {reason}') from None
    if not isinstance(value, dict):
        raise StateError(f'unreadable {what} ({path}): not a JSON object')
    return value


def read_state(work_dir: Path) -> dict:
    """The job state; ``{}`` before the job's first start; ``{'status': UNREADABLE, 'error':
    'unreadable state (<path>): <reason>'}`` when the file does not parse, so that every
    reader shows that one job as such and goes on with the others."""
    try:
        return read_json_object(Path(work_dir) / STATE_FILE)
    except FileNotFoundError:
        return {}
    except StateError as err:
        return {'status': UNREADABLE, 'error': str(err)}


def write_state(work_dir: Path, **fields) -> dict:
    """Merge ``fields`` into the job state, atomically (a reader never sees half a file).
    Raises StateError, writing nothing, when the state on disk does not parse: merging into
    nothing would destroy what it still holds."""
    path = Path(work_dir) / STATE_FILE
    try:
        state = read_json_object(path)
    except FileNotFoundError:
        state = {}
    state = {**state, **fields, 'updated': time.time()}
    atomic_write(path, json.dumps(state, indent=1), fsync=False)
    return state


# A training job's progress: the job state's ``progress`` record (iter, max_iters, loss, mIoU,
# eta_s: mmengine's time-left estimate, at: when it was written), also printed every few
# iterations as a line starting with PROGRESS_PREFIX, which the local launcher shows.
PROGRESS_PREFIX = 'progress: '
NOTICE_PREFIX = 'notice: '  # a line the launcher shows too: something the user should know
# the line a job prints when it cannot record why it failed (a full disk): the launcher does
FAILURE_PREFIX = 'job failed: '


def progress_text(progress: dict, now: float | None = None, left: bool = True) -> str:
    """``iter 40/100 (40%), loss 2.3141, mIoU 12.30, 0:01:20 left``; with ``now``, the time
    left counts down from when the record was written; ``left=False``: no time left (a job
    that is not running)."""
    import datetime
    done, total = progress['iter'], progress['max_iters']
    parts = [f'iter {done}/{total} ({100 * done / total:.0f}%)']
    if progress.get('loss') is not None:
        parts.append(f"loss {progress['loss']:.4f}")
    if progress.get('mIoU') is not None:
        parts.append(f"mIoU {progress['mIoU']:.2f}")
    if done < total and left:
        left = progress.get('eta_s')
        if left is None:
            parts.append('time left unknown')
        else:
            left = max(left - (now - progress['at'] if now is not None else 0), 0)
            parts.append(f'{datetime.timedelta(seconds=round(left))} left')
    return ', '.join(parts)


def log_tail(work_dir: Path, chars: int = 4000) -> str:
    path = Path(work_dir) / LOG_FILE
    return path.read_text(errors='replace')[-chars:] if path.is_file() else ''


def read_per_class(work_dir: Path) -> dict[str, float]:
    """Per-class IoU of a job's last evaluation (classes seen in prediction or label)."""
    path = Path(work_dir) / PER_CLASS_FILE
    if not path.is_file():
        return {}
    try:
        per_class = json.loads(path.read_text()).get('IoU')
    except (ValueError, AttributeError):  # written in place: a kill or a full disk cuts it
        return {}
    return {k: v for k, v in per_class.items() if v is not None} \
        if isinstance(per_class, dict) else {}


def read_curves(work_dir: Path):
    """(train, val) curves of one job as pandas frames indexed by iteration (empty when none).

    The file is one JSON object a line, appended to across restarts; a restart re-logs the
    iterations between its checkpoint and the interruption, so for each step the last line
    wins."""
    import pandas as pd
    path = Path(work_dir) / CURVES_FILE
    train, val = {}, {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            step = record.get('step')
            if step is None:
                continue
            (val if 'mIoU' in record else train)[step] = record
    return (pd.DataFrame.from_dict(train, orient='index').sort_index(),
            pd.DataFrame.from_dict(val, orient='index').sort_index())


def read_recipe(work_dir: Path) -> dict | None:
    """The recipe frozen at the job's first start (None before it)."""
    path = Path(work_dir) / RECIPE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise StateError(f'unreadable state ({path}): the frozen recipe does not parse ({err}); '
                         'restore it, or start the job afresh in another work root') from None
