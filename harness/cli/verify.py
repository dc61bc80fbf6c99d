"""``verify``: each job folder against its record (recipe, checkpoints, weights, dataset)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .common import Jobs, Tables
from .options import Command, OptionError, option, redefault


@dataclasses.dataclass(frozen=True, kw_only=True)
class VerifyOptions(Jobs):
    table: list[str] | None = redefault(Tables, 'table', None)
    job: Path | None = option(None, metavar='DIR', help='one job folder instead of a table')

    def check(self):
        super().check()
        if (self.table is None) == (self.job is None):
            raise OptionError('verify takes --table (and --rows) or --job DIR: one of them')


def verify(options: VerifyOptions) -> int:
    from ..launch.verify import job_folders, verify as verify_folders
    if options.job is not None:
        folders = [options.job]
    else:
        folders = job_folders(options.selected_rows(), options.profile, options.work_root)
        if not folders:
            raise OptionError(f"no job folder of these rows under "
                              f"{options.work_root / options.profile}")
    differing = verify_folders(folders)
    print(f'{len(folders) - differing} of {len(folders)} job folder(s) verified')
    return 1 if differing else 0


COMMAND = Command('verify', 'check each job folder against its record: the frozen recipe, '
                  'the recorded checkpoints, weights and dataset, and that the current spec '
                  'builds the same recipe', VerifyOptions, verify)
