"""``plan``: a dry run of a table's jobs: per row x seed the config, batch, iterations,
GPU-hours, disk, weights and data; launches nothing, writes nothing."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .common import DEFAULT_REHEARSALS, DataRoot, Gpus, Jobs, Launcher, Seeds, WeightsRoot
from .options import Command, option, redefault


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlanOptions(WeightsRoot, DataRoot, Launcher, Gpus, Seeds, Jobs):
    profile: str = redefault(Jobs, 'profile', 'full')
    rehearsals: Path = option(DEFAULT_REHEARSALS, metavar='DIR',
                              help='where `rehearse` wrote its results (GPU-hours come from '
                                   'them)')
    device: str | None = option(None, help="the device kind whose rehearsals give the time, as "
                                "rehearsal.md names it ('cuda: NVIDIA H200', 'cpu'; default: "
                                'any GPU)')


def plan(options: PlanOptions) -> int:
    from ..measure.plan import load_rehearsals, print_plan
    print_plan(options.tables(), options.profile, options.gpus, options.seeds, options.launcher,
               options.work_root, options.data_for(options.profile), options.weights_root,
               load_rehearsals(options.rehearsals), options.device)
    return 0


COMMAND = Command('plan', 'dry run: per row x seed the config, batch, iterations, GPU-hours, '
                  'disk, weights and data; launches nothing, writes nothing', PlanOptions, plan)
