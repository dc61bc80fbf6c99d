"""The job request: the one description of a job, from the command line to the mmengine config.

The command line builds a :class:`JobRequest` per row x seed, every launcher hands it on
(written into the job folder, read back by the job process) and
:func:`harness.prepare.job_config.build_config` turns it into the job's config. A new job
option is one field here, one field of the command's options and the one place that applies it.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .errors import SpecError
from .layout import REPO_ROOT
from .atomic import atomic_write
from .checks import at_least, divides_batch, one_of
from .profiles import DEFAULT_WANDB_PROJECT, PRECISIONS, PROFILES
from .spec import Row, load_table, table_arg


@dataclasses.dataclass(frozen=True)
class JobRequest:
    """One job: a row, a profile and a seed, trained (or, with ``checkpoint``, evaluated) in
    ``work_dir`` by ``gpus`` processes."""
    row: Row
    profile: str
    seed: int
    work_dir: Path | None
    data_root: Path | None
    gpus: int = 1  # processes (GPUs) sharing the dataset's total batch (ADE20K's 8)
    weights_root: Path = REPO_ROOT  # the spec's weight paths (weights/...) are relative to it
    wandb_project: str = DEFAULT_WANDB_PROJECT
    wandb_run_id: str | None = None  # chosen by the job process, kept across restarts
    checkpoint: Path | None = None  # evaluate this trained model instead of training
    multi_scale: bool = False  # with checkpoint: the official multi-scale + flip evaluation
    released: bool = False  # with checkpoint: the authors' released model, not one trained here
    checkpoint_sha256: str | None = None  # with checkpoint: its bytes, checked before loading
    amp: str | None = None  # one of PRECISIONS (paper: fp32)
    max_iters: int | None = None  # a shortened schedule for cheap trials; None: the row's
    workers: int | None = None  # data-loader workers per process; None: the profile's
    # resume with the recipe frozen at the first start although the checkout builds another
    accept_drift: bool = False
    # per-process batch instead of the total batch's share (rehearsals on a small device);
    # None: the dataset's total batch / processes, the paper's
    batch: int | None = None

    def __post_init__(self):
        one_of('profile', self.profile, PROFILES)
        if self.amp is not None:
            one_of('precision', self.amp, PRECISIONS)
        if self.max_iters is not None:
            at_least('max_iters', self.max_iters, 1)
        if self.batch is not None:
            at_least('batch', self.batch, 1)
        if self.workers is not None:
            at_least('workers', self.workers, 0)
        if self.released and self.checkpoint is None:
            raise SpecError('a released model is evaluated from its checkpoint: none given')
        data = self.row.data
        divides_batch(f'a job of {self.gpus} processes', self.gpus, data.recipe.batch,
                      whose=data.title)

    @property
    def kind(self) -> str:
        return 'train' if self.checkpoint is None else 'evaluate'

    @property
    def name(self) -> str:
        """How the job is named in the launcher's lines: table/row seed."""
        return f'{self.row.table}/{self.row.id} seed{self.seed}'

    def to_json(self) -> dict:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields['row'] = self.row.id
        fields['table'] = table_arg(self.row)
        return {k: str(v) if isinstance(v, Path) else v for k, v in fields.items()}

    @classmethod
    def from_json(cls, data: dict) -> 'JobRequest':
        data = dict(data)
        row = load_table(data.pop('table')).row(data.pop('row'))
        paths = {'work_dir', 'data_root', 'weights_root', 'checkpoint'}
        return cls(row=row, **{k: Path(v) if k in paths and v is not None else v
                               for k, v in data.items()})

    def write(self, path: Path) -> None:
        atomic_write(path, json.dumps(self.to_json(), indent=1), fsync=False)

    @classmethod
    def read(cls, path: Path) -> 'JobRequest':
        return cls.from_json(json.loads(Path(path).read_text()))
