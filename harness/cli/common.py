"""Options several commands share, declared once each (help, choices, bounds), as mixins of
the commands' options dataclasses."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..core.checks import divides_batch
from ..core.errors import SpecError
from ..core.layout import DEFAULT_WORK_ROOT, REPO_ROOT
from ..core.profiles import (
    DEFAULT_WANDB_PROJECT,
    GPU_ONLY_PRECISIONS,
    LAUNCHERS,
    PRECISIONS,
    PROFILES,
)
from ..core.spec import Row, Table, available_tables, load_table, select_rows
from .options import Options, OptionError, option, redefault


def parse_rows(value: str) -> list[str]:
    """``--rows a,b``: the ids, in the order given."""
    rows = [v for v in value.split(',') if v]
    if not rows:
        raise OptionError(f"--rows '{value}' names no row (give row ids, comma-separated; "
                          'leave --rows out for every row)')
    return rows


def cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tables(Options):
    table: list[str] = option(
        help=f"table spec to use, repeatable ({', '.join(available_tables())}, or a spec's "
             'path)', repeat=True)
    rows: list[str] | None = option(None, parse=parse_rows, metavar='ROWS', repeat=True,
                                    help='comma-separated row ids, repeatable (default: all '
                                         'rows)')

    def tables(self) -> list[tuple[Table, list[Row]]]:
        """The rows chosen of each table; with several tables ``--rows`` may name rows of any
        of them."""
        return select_rows([load_table(t) for t in self.table], self.rows)

    def selected_rows(self) -> list[Row]:
        return [row for _, rows in self.tables() for row in rows]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Jobs(Tables):
    """Which jobs: tables and rows, a profile, a work root."""
    profile: str = option('smoke', choices=PROFILES,
                          help='smoke: tiny models on synthetic data, CPU; full: the paper run')
    work_root: Path = option(DEFAULT_WORK_ROOT, metavar='DIR',
                             help='jobs live in <work-root>/<profile>/<table>/<row>/seed<k>/')


def _a_folder(path: Path) -> None:
    if not Path(path).is_dir():
        raise ValueError('{flag} {value}: no such folder')


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobFolders(Jobs):
    """Which job folders: every one of the rows (their seeds, the evaluations of their
    checkpoints and of their released ones), or one given by ``--job``."""
    table: list[str] | None = redefault(Tables, 'table', None)
    job: Path | None = option(None, metavar='DIR', check=_a_folder,
                              help='one job folder instead of a table')

    def check(self):
        super().check()
        if (self.table is None) == (self.job is None):
            raise OptionError('give --table (and --rows) or --job DIR: one of them')

    def folders(self) -> list[Path]:
        from ..launch.verify import job_folders
        if self.job is not None:
            return [self.job]
        found = job_folders(self.selected_rows(), self.profile, self.work_root)
        if not found:
            raise OptionError(f'no job folder of these rows under '
                              f'{self.work_root / self.profile}')
        return found


@dataclasses.dataclass(frozen=True, kw_only=True)
class Seeds(Jobs):
    seeds: int = option(1, minimum=1, metavar='N',
                        help='number of seeds per row (seeds 0..N-1)')


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataRoot(Jobs):
    data_root: Path | None = option(
        None, metavar='DIR', help="the dataset folder of the tables' dataset (smoke: its "
        'synthetic copy; full: $ADE20K_ROOT or data/ade/ADEChallengeData2016 for ADE20K, '
        '$PASCAL_CONTEXT_ROOT or data/VOCdevkit/VOC2010, $CITYSCAPES_ROOT or data/cityscapes)')

    def data_roots(self, tables: list[Table]) -> dict[str, Path]:
        """The data root of each table's dataset under the profile, by table name; one
        --data-root serves tables of one dataset only."""
        names = {table.dataset for table in tables}
        if self.data_root is not None and len(names) > 1:
            raise OptionError(f"--data-root names one folder, and the tables train on "
                              f"{', '.join(sorted(names))}: run them one dataset at a time")
        if self.data_root is not None:
            return {table.name: self.data_root for table in tables}
        if self.profile == 'smoke':
            from ..assets.synthetic import default_root
            return {table.name: default_root(table.data) for table in tables}
        return {table.name: table.data.root() for table in tables}


@dataclasses.dataclass(frozen=True, kw_only=True)
class WeightsRoot(Options):
    weights_root: Path = option(REPO_ROOT, metavar='DIR',
                                help="folder the spec's weight paths (weights/...) are "
                                     'relative to')


@dataclasses.dataclass(frozen=True, kw_only=True)
class Gpus(Jobs):
    gpus: int = option(1, minimum=1, metavar='N',
                       help="processes (GPUs) per job, per node with slurm; the total batch of "
                            "the table's dataset (ADE20K 8, Pascal Context 16, Cityscapes 8) "
                            'is divided among all of them')
    nodes: int = 1

    @property
    def processes(self) -> int:
        """The processes that share each job's batch."""
        return self.gpus * self.nodes

    def check(self):
        super().check()
        # where --nodes is an option, the count is gpus x nodes; plan has --gpus alone
        per_node = 'help' not in type(self).__dataclass_fields__['nodes'].metadata
        name = (f'--gpus {self.gpus}' if per_node else
                f'{self.processes} processes (--gpus x --nodes)')
        # each named table's dataset has its own batch (experiments/datasets.yaml)
        for data in {t.data.name: t.data for t in map(load_table, self.table)}.values():
            try:
                divides_batch(name, self.processes, data.recipe.batch,
                              plural=not per_node, whose=data.title)
            except SpecError as err:
                raise OptionError(str(err)) from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Launcher(Options):
    launcher: str = option('local', choices=LAUNCHERS,
                           help='local: one process per job, jobs one after another; torchrun: '
                                '--gpus processes per job on this machine; slurm: one SLURM job '
                                'array, a task per row x seed')


@dataclasses.dataclass(frozen=True, kw_only=True)
class Precision(Options):
    amp: str | None = option(None, choices=PRECISIONS,
                             help='reduced-precision training (tf32: fp32 tensors, TF32 '
                                  'tensor-core matmuls): faster, departs from the paper (fp32); '
                                  'evaluation stays fp32; the report says so')

    def check_device(self, gpu: bool) -> None:
        """Refuse a GPU-only precision where the jobs will have no GPU."""
        if self.amp in GPU_ONLY_PRECISIONS and not gpu:
            raise OptionError(f'--amp {self.amp} needs {GPU_ONLY_PRECISIONS[self.amp]}; '
                              '--amp bf16 also runs on CPUs')


@dataclasses.dataclass(frozen=True, kw_only=True)
class Reports(Options):
    reports: Path | None = option(None, metavar='DIR',
                                  help='report folder root (default: reports/ for the default '
                                       'work root, <work-root>/reports/ for another)')
    wandb_report: bool = option(True, flag='--no-wandb-report',
                                help='do not log the report as a W&B run')


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tracking(Options):
    wandb_project: str = option(
        default_factory=lambda: os.environ.get('WANDB_PROJECT', DEFAULT_WANDB_PROJECT),
        help='W&B project of the runs (default: $WANDB_PROJECT, else segmenter-repro)')

