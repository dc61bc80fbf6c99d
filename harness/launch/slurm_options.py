"""What a SLURM submission asks for, apart from submitit (which only the submission needs).
Each field the user chooses carries its help, bounds and check: the command line's SLURM flags
are these fields (``cli/launch_options.py`` derives them)."""
from __future__ import annotations

import dataclasses
import re

from ..core.checks import option


def parse_time(value: str) -> int:
    """SLURM's time formats (MM, HH:MM:SS, D-HH[:MM]) -> minutes."""
    try:
        days, _, clock = value.rpartition('-')
        parts = [int(p) for p in clock.split(':')]
        if days:
            hours, minutes = (parts + [0])[:2]
            return int(days) * 1440 + hours * 60 + minutes
        if len(parts) == 1:
            return parts[0]
        if len(parts) == 2:
            return parts[0] + (parts[1] > 0)  # MM:SS, rounded up
        hours, minutes, seconds = parts
        return hours * 60 + minutes + (seconds > 0)
    except ValueError:
        raise ValueError('is not a SLURM time (MM, HH:MM:SS, D-HH)') from None


def _memory(value: str) -> None:
    if not re.fullmatch(r'\d+[KMGT]?', value):
        raise ValueError('is not a SLURM memory size (e.g. 64G, 500000M)')


def _slurm_name(value: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise ValueError('is not a SLURM name (no spaces)')


def _positive(value: float) -> None:
    if value <= 0:
        raise ValueError('{flag} must be a positive number of seconds')


@dataclasses.dataclass(frozen=True, kw_only=True)
class SlurmRequest:
    """What the user asks SLURM for, each job alike."""
    nodes: int = option(1, minimum=1, metavar='N', help='slurm: nodes per job')
    partition: str | None = option(None, check=_slurm_name,
                                   help="slurm: partition (default: the cluster's)")
    time: str = option('24:00:00', check=parse_time,
                       help='slurm: time limit per job (a job that reaches it checkpoints, is '
                            'requeued and resumes)')
    cpus_per_task: int | None = option(None, minimum=1, metavar='N',
                                       help='slurm: CPUs per training process')
    account: str | None = option(None, check=_slurm_name, help='slurm: account to charge')
    qos: str | None = option(None, check=_slurm_name, help='slurm: quality of service')
    constraint: str | None = option(None, check=_slurm_name,
                                    help="slurm: node features, e.g. 'a100|h100'")
    mem: str | None = option(None, check=_memory, help='slurm: memory per node (64G, 500000M; '
                                                       "default: the partition's)")
    exclusive: bool = option(False, help='slurm: whole nodes per job')
    wait: bool = option(True, flag='--no-wait',
                        help='slurm: submit and return (default: wait until the jobs end)')
    poll_interval: float = option(30.0, check=_positive, metavar='S',
                                  help='slurm: seconds between two squeue calls while waiting '
                                       '(one call for all jobs)')

    @property
    def time_min(self) -> int:
        return parse_time(self.time)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SlurmOptions(SlurmRequest):
    """The request and each job's processes."""
    tasks_per_node: int = 1  # training processes per node (one per GPU)
    gpus_per_node: int = 0  # 0: CPU jobs (no GPU requested)
