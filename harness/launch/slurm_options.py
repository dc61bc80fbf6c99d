"""What a SLURM submission asks for, apart from submitit (which only the submission needs)."""
from __future__ import annotations

import dataclasses

POLL_S = 30.0  # between two squeue calls while waiting: one call for all jobs


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time_min: int = 60
    nodes: int = 1
    tasks_per_node: int = 1  # training processes per node (one per GPU)
    gpus_per_node: int = 0  # 0: CPU jobs (no GPU requested)
    cpus_per_task: int | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None  # node features, e.g. 'a100|h100'
    mem: str | None = None  # per node, SLURM's format (64G, 500000M)
    exclusive: bool = False  # whole nodes
    wait: bool = True
    poll_s: float = POLL_S


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
