"""``verify``: each job folder against its record (recipe, checkpoints, weights, dataset, the
result record)."""
from __future__ import annotations

import dataclasses

from .common import JobFolders
from .options import Command, option


@dataclasses.dataclass(frozen=True, kw_only=True)
class VerifyOptions(JobFolders):
    contents: bool = option(False, help="hash every dataset file again and compare with the "
                            "contents digest the job recorded (default: each file's size and "
                            "time against the contents check-data kept beside the data)")


def verify(options: VerifyOptions) -> int:
    from ..launch.verify import verify as verify_folders
    folders = options.folders()
    differing = verify_folders(folders, contents=options.contents)
    print(f'{len(folders) - differing} of {len(folders)} job folder(s) verified')
    return 1 if differing else 0


COMMAND = Command('verify', 'check each job folder (training and evaluation) against its '
                  'record: the frozen recipe, the recorded checkpoints (and none unrecorded), '
                  'weights and dataset, that the current spec builds the same recipe, and the '
                  'result record against the files it summarises; a record missing or '
                  'unreadable differs', VerifyOptions, verify)
