"""``report``: rebuild a table's report from the job folders on disk."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from ..core.layout import released_dirs, seed_dirs
from ..core.spec import PAPER_VERSIONS, Table
from .common import Jobs, Reports
from .options import Command, OptionError, option


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportOptions(Reports, Jobs):
    paper_version: str | None = option(
        None, choices=PAPER_VERSIONS,
        help="paper version the delta is computed against for every row (default: the version "
             "matching each row's setup, its spec's `matches`)")
    tolerance: float = option(1.0, minimum=0.0,
                              help='|delta| in mIoU points that counts as reproduced')
    verify: bool = option(False, help="hash every byte of each counted seed's checkpoint, "
                                      'pretrained file and metric files again (default: '
                                      'through the hash cache, which a file changed in place '
                                      'misses only when its size and time are kept)')


def _has_jobs(table: Table, profile: str, work_root: Path) -> bool:
    """Whether any row of ``table`` has a job folder to report: a seed of ours, or (full
    profile) an evaluation of its released checkpoint."""
    def released(row):
        return profile == 'full' and any(released_dirs(work_root, row.folder, row.id, scale)
                                         for scale in (False, True))
    return any(seed_dirs(work_root, profile, row.folder, row.id) or released(row)
               for row in table.rows)


def report(options: ReportOptions) -> int:
    """Each table's report, from its job folders; a table without any leaves its report as it
    is (an empty one would replace it), and none with any is an error."""
    from ..results.report import build_report
    tables = [table for table, _ in options.tables()]
    where = options.work_root / options.profile
    found = [_has_jobs(t, options.profile, options.work_root) for t in tables]
    if not any(found):
        raise OptionError(f"nothing to report: no job folder of "
                          f"{', '.join(t.name for t in tables)} under {where}")
    for table, has_jobs in zip(tables, found):
        if not has_jobs:
            print(f'note: nothing to report for {table.name}: no job folder under '
                  f'{where / table.folder}', file=sys.stderr)
            continue
        out = build_report(table, options.profile, options.work_root, options.reports,
                           options.paper_version, options.tolerance, wandb=options.wandb_report,
                           verify=options.verify)
        print(f'report: {out / "report.md"}')
    return 0


COMMAND = Command('report', 'rebuild the report from the job folders on disk', ReportOptions,
                  report)
