"""``status``: the state of every row x seed of a table."""
from __future__ import annotations

from .common import Seeds
from .options import Command


def status(options: Seeds) -> int:
    from ..results.status import status_lines
    for table, rows in options.tables():
        print(f'{table.name} ({options.profile}):')
        for line in status_lines(rows, options.profile, options.work_root, options.seeds):
            print(line)
    return 0


COMMAND = Command('status', 'state of every row x seed of a table', Seeds, status)
