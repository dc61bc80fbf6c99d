"""``plan``: a dry run of a table's jobs: per row x seed the config, batch, iterations,
GPU-hours, disk, weights and data; launches nothing, writes nothing."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..core.layout import REHEARSALS
from .common import DataRoot, Gpus, Jobs, Launcher, Seeds, WeightsRoot
from .options import Command, option, redefault


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlanOptions(WeightsRoot, DataRoot, Launcher, Gpus, Seeds, Jobs):
    profile: str = redefault(Jobs, 'profile', 'full')
    rehearsals: Path = option(REHEARSALS, metavar='DIR',
                              help='where `rehearse` wrote its results (GPU-hours come from '
                                   'them)')
    device: str | None = option(None, help="the device kind whose rehearsals give the time, as "
                                "rehearsal.md names it ('cuda: NVIDIA H200', 'cpu'; default: "
                                'any GPU)')


def plan(options: PlanOptions) -> int:
    from ..measure.plan import print_plan
    selected = options.tables()
    print_plan(tables_rows=selected, profile=options.profile, gpus=options.gpus,
               seeds=options.seeds, launcher=options.launcher, work_root=options.work_root,
               data_roots=options.data_roots([table for table, _ in selected]),
               weights_root=options.weights_root,
               rehearsals=options.rehearsals, device=options.device)
    return 0


COMMAND = Command('plan', 'dry run: per row x seed the config, batch, iterations, GPU-hours, '
                  'disk, weights and data; launches nothing, writes nothing', PlanOptions, plan)
