"""``evaluate``: the authors' released checkpoints, or with ``--ours`` the trained jobs."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..core.errors import StateError
from ..core.layout import OFFICIAL_CHECKPOINTS
from .launch_options import LaunchOptions
from .common import Seeds
from .options import Command, option, redefault


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluateOptions(Seeds, LaunchOptions):
    profile: str = redefault(LaunchOptions, 'profile', 'full')
    ours: bool = option(False, help="evaluate each finished row x seed's final checkpoint "
                                    '(the one its result record names) instead')
    checkpoints: Path = option(OFFICIAL_CHECKPOINTS, metavar='DIR',
                               help='the converted released checkpoints, <row>.pth')
    multi_scale: bool = option(False, help='official multi-scale evaluation (ratios '
                                           '0.5-1.75, flip)')


def evaluate(options: EvaluateOptions) -> int:
    from ..launch.launchers import REFUSED
    from ..launch.targets import evaluate_ours_targets, evaluate_released_targets
    from ..launch.preflight import preflight_full
    launcher = options.build_launcher()
    selected = options.tables()
    data_roots = options.data_roots([table for table, _ in selected])
    if options.profile == 'full':  # the data only: the checkpoints replace the pretrained weights
        for table, _ in selected:
            preflight_full([], data_roots[table.name], splits=('validation',),
                           declared=table.data)
    if not options.ours and not options.checkpoints.is_dir():
        raise StateError(f'no checkpoint folder {options.checkpoints} (convert the released '
                         'checkpoint.pth files into it with `python -m harness '
                         'convert-official`)')
    common = dict(profile=options.profile, gpus=options.processes,
                  wandb_project=options.wandb_project, multi_scale=options.multi_scale,
                  workers=options.workers, accept_drift=options.accept_drift)

    def launch(table, rows) -> int:
        common['data_root'] = data_roots[table.name]
        if options.ours:
            targets, refused = evaluate_ours_targets(rows, options.seeds, options.work_root,
                                                     **common)
        else:
            targets, refused = evaluate_released_targets(rows, options.work_root,
                                                         options.checkpoints, **common)
        launcher.unfinished[REFUSED] += refused
        return refused + launcher.run(targets)
    return options.launch_tables(launcher, selected, launch)

COMMAND = Command('evaluate', "evaluate the authors' released checkpoints (converted, "
                  '<checkpoints>/<row>.pth), or with --ours the trained jobs', EvaluateOptions,
                  evaluate)
