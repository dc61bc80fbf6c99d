"""``record``: the result record of each finished job that has none (it finished before jobs
wrote one), written only once the folder passes verify's checks."""
from __future__ import annotations

from .common import JobFolders
from .options import Command


def record(options: JobFolders) -> int:
    from ..launch.verify import record_missing
    folders = options.folders()
    counts = record_missing(folders)
    print(f"{counts['written']} record(s) written, {counts['kept']} kept, "
          f"{counts['skipped']} job(s) not finished, {counts['differs']} refused "
          f'(differ from their record) of {len(folders)} job folder(s)')
    return 1 if counts['differs'] else 0


COMMAND = Command('record', 'write the result record of each finished job that has none (it '
                  'finished before jobs wrote one), after checking the folder as verify does; '
                  'a folder that differs gets none, and no existing record is rewritten',
                  JobFolders, record)
