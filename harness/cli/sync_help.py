"""``sync-help``: how to upload the offline W&B runs of the jobs and of the reports."""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from ..core.layout import DEFAULT_WORK_ROOT
from .common import Reports
from .options import Command, option


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyncHelpOptions(Reports):
    work_root: Path = option(DEFAULT_WORK_ROOT, metavar='DIR', help='the jobs\' work root')


def sync_help(options: SyncHelpOptions) -> int:
    from ..core.layout import wandb_run_globs
    from ..results.report import report_run_globs, reports_root
    wandb = Path(sys.executable).with_name('wandb')
    shown = os.path.relpath(wandb) if wandb.is_relative_to(Path.cwd()) else wandb
    print(f"W&B runs are offline ({os.environ.get('WANDB_MODE', 'offline')}). To upload them: "
          f'{shown} login, then')
    reports = reports_root(options.work_root, options.reports)
    for pattern in (wandb_run_globs(Path(os.path.relpath(options.work_root)))
                    + report_run_globs(Path(os.path.relpath(reports)))):
        print(f'  {shown} sync {pattern}')
    return 0


COMMAND = Command('sync-help', 'how to upload the offline W&B runs of the jobs',
                  SyncHelpOptions, sync_help)
