"""``report``: rebuild a table's report from the job folders on disk."""
from __future__ import annotations

import dataclasses

from ..core.spec import PAPER_VERSIONS
from .common import Jobs, Reports
from .options import Command, option


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


def report(options: ReportOptions) -> int:
    from ..results.report import build_report
    for table, _ in options.tables():
        out = build_report(table, options.profile, options.work_root, options.reports,
                           options.paper_version, options.tolerance, wandb=options.wandb_report,
                           verify=options.verify)
        print(f'report: {out / "report.md"}')
    return 0


COMMAND = Command('report', 'rebuild the report from the job folders on disk', ReportOptions,
                  report)
