"""Checks before any job starts: a failure here is one line, and no job has run yet."""
from __future__ import annotations

import errno
import tempfile
from pathlib import Path

from ..assets.data import DataError, require_files, require_folders
from ..core.datasets import Dataset
from ..core.errors import HarnessError
from ..core.layout import REPO_ROOT
from ..core.spec import Row


class PreflightError(HarnessError):
    """Something the jobs need is missing; the message is one line."""


def preflight_full(rows: list[Row], data_root: Path, weights_root: Path = REPO_ROOT,
                   splits: tuple[str, ...] = ('training', 'validation'), *,
                   declared: Dataset) -> None:
    """Check the data and every row's weights before any full job starts training: the
    folders of the ``declared`` dataset's layout there, and those of the ``splits`` the jobs
    read not empty."""
    try:
        require_folders(data_root, declared=declared)
        require_files(data_root, splits, declared)
    except DataError as err:  # the same helpful line as `check-data`, whichever runs first
        raise PreflightError(str(err)) from None
    for row in rows:
        weights = Path(weights_root) / row.pretrained_file
        if not weights.is_file():
            origin = (f'convert the {row.pretrained_id} release with `python -m harness '
                      f'weights --table {row.table} --rows {row.id} --from FILE`'
                      if row.pretrained_id else
                      'no public release matches the paper\'s: supply your own file there')
            raise PreflightError(f'{row.table}/{row.id}: pretrained weights missing: '
                                 f'{row.pretrained_file} ({origin})')


def check_configs(rows: list[Row], profile: str, gpus: int, weights_root: Path) -> None:
    """Build each row's job config and model (random init, nothing loaded) before any job
    starts: a config that cannot build stops the run with one line instead of failing in the
    job process, after the rows before it have run. Full profile: the row's weights file
    (``preflight_full`` found it) must hold the built encoder, every key with its shape:
    mmseg's ``init_cfg`` loading skips a tensor of another shape with a mere warning, so a file
    of another backbone would train days from random values."""
    from ..assets.convert import load_checkpoint
    from ..assets.weights import check_against_row
    from ..prepare.job_config import does_not_build
    from ..prepare.model import build_model
    for row in rows:
        try:
            model = build_model(row, profile, gpus=gpus, weights_root=weights_root)
        except Exception as err:  # noqa: BLE001 - whatever mmengine/mmseg raise, one line
            raise does_not_build(row, err) from None
        if profile != 'full':
            continue
        try:
            state = load_checkpoint(Path(weights_root) / row.pretrained_file)
            check_against_row(state.get('state_dict', state), row, model.backbone.state_dict())
        except (HarnessError, AttributeError) as err:
            raise PreflightError(f'{row.table}/{row.id}: pretrained weights '
                                 f'{row.pretrained_file} do not fit the row: '
                                 f'{str(err).splitlines()[0]}') from None


def check_writable(folder: Path, what: str = 'the work dir') -> None:
    """Refuse before any job starts when ``folder`` cannot take files. Nothing is created:
    where the folder is not there yet, the nearest folder above it that is must be writable
    (the launch creates the rest), so a command refused by a later check leaves no trace."""
    existing = Path(folder).absolute()
    while not existing.exists():  # the root always exists
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f'{existing} is not a folder')
        with tempfile.TemporaryFile(dir=existing):  # O_TMPFILE where it can: never named
            pass
    except OSError as err:
        raise PreflightError(f'cannot write to {what} {folder}: '
                             f'{err.strerror or err}') from None
