"""``run``: train and evaluate rows x seeds (finished jobs skipped, interrupted ones resumed)."""
from __future__ import annotations

import dataclasses

from .common import Precision, Seeds, WeightsRoot, cuda_available
from .launch_options import LaunchOptions
from .options import Command, option


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunOptions(Precision, WeightsRoot, Seeds, LaunchOptions):
    max_iters: int | None = option(None, minimum=1, metavar='N',
                                   help='a shortened schedule for cheap trials: train N '
                                        'iterations (the poly decay ends at N); the report marks '
                                        'the row shortened, no verdict')

    def check(self):
        super().check()
        # smoke jobs run on CPUs; SLURM jobs on the cluster's GPUs, not this machine's
        gpu = self.profile != 'smoke' and (self.launcher == 'slurm' or cuda_available())
        self.check_device(gpu)


def run(options: RunOptions) -> int:
    from ..launch.targets import train_targets
    from ..launch.preflight import check_configs, check_writable, preflight_full
    launcher = options.build_launcher()
    selected = options.tables()
    data_roots = options.data_roots([table for table, _ in selected])
    all_rows = [r for _, rows in selected for r in rows]
    # every check first, the cheap ones first; nothing is written before all have passed
    for table, rows in selected:
        data_root = data_roots[table.name]
        if options.profile == 'full':
            preflight_full(rows, data_root, options.weights_root, declared=table.data)
        else:
            from ..assets.synthetic import check_root, ensure_dataset
            if not check_root(data_root):  # to be generated there
                check_writable(data_root, 'the data root')
    check_configs(all_rows, options.profile, options.processes, options.weights_root)
    check_writable(options.work_root)
    if options.profile == 'smoke':
        for table, _ in selected:
            ensure_dataset(data_roots[table.name], declared=table.data)
    return options.launch_tables(launcher, selected, lambda table, rows: launcher.run(
        train_targets(rows, options.seeds, options.work_root, profile=options.profile,
                      data_root=data_roots[table.name], gpus=options.processes,
                      weights_root=options.weights_root, wandb_project=options.wandb_project,
                      amp=options.amp, max_iters=options.max_iters, workers=options.workers,
                      accept_drift=options.accept_drift)))

COMMAND = Command('run', 'train and evaluate rows x seeds (skips finished jobs, resumes '
                  'interrupted ones)', RunOptions, run)
