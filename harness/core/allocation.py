"""How many data-loader workers a training process gets from the CPUs allocated to it."""
from __future__ import annotations

import os

MAX_WORKERS = 8  # past this, a loader's workers mostly wait on the GPU step


def loader_workers(processes: int = 1, env: dict | None = None,
                   cpus: int | None = None) -> tuple[int, str]:
    """Loader workers per training process, ``min(8, usable CPUs / processes on the node)``,
    and where the CPU count came from: SLURM's ``SLURM_CPUS_PER_TASK`` (each task is one
    process), else the process's CPU affinity shared by the node's processes
    (``LOCAL_WORLD_SIZE`` under torchrun, else ``processes``)."""
    env = os.environ if env is None else env
    if env.get('SLURM_CPUS_PER_TASK'):
        per_process = int(env['SLURM_CPUS_PER_TASK'])
        source = f"SLURM_CPUS_PER_TASK={env['SLURM_CPUS_PER_TASK']}"
    else:
        usable = cpus if cpus is not None else len(os.sched_getaffinity(0))
        local = int(env.get('LOCAL_WORLD_SIZE') or processes)
        per_process = usable // max(local, 1)
        source = f'{usable} usable CPUs / {local} process(es) on the node'
    return max(0, min(MAX_WORKERS, per_process)), source
