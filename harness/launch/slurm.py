"""SLURM through submitit: one SLURM job per row x seed, requeued on timeout or preemption.

Each SLURM task is one training process (``--gpus`` tasks per node, ``--nodes`` nodes); it runs
``python -m harness.launch.job`` on the job's request with the torch.distributed variables of its task. submitit warns a
job with SIGUSR2 before its time limit or a preemption: the job process saves a checkpoint of
the current iteration and stops (``harness.preempt``), and submitit requeues the SLURM job,
which resumes from that checkpoint. The SLURM job id and submitit's log folder are
kept in the job's state; the logs themselves in the job folder (``harness.layout``).
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from pathlib import Path

import submitit

from ..layout import LOG_FILE, REPO_ROOT, REQUEST_FILE, SLURM_DIR, read_state, write_state
from .job import job_command

STOP_WAIT_S = 80  # submitit's warning comes 90 s before the kill


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time_min: int = 60
    nodes: int = 1
    tasks_per_node: int = 1  # training processes per node (one per GPU)
    gpus_per_node: int = 0  # 0: CPU jobs (no GPU requested)
    cpus_per_task: int | None = None
    wait: bool = True


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
        raise ValueError(f"--time '{value}' is not a SLURM time (MM, HH:MM:SS, D-HH)") from None


class SlurmTask(submitit.helpers.Checkpointable):
    """One SLURM task of one job: runs the job process, stops it with a checkpoint on
    submitit's warning and asks to be requeued."""

    def __init__(self, request_file: Path, work_dir: Path, env: dict):
        self.request_file, self.work_dir, self.env = Path(request_file), Path(work_dir), dict(env)
        self._proc = None

    def __getstate__(self):  # the running process stays behind when submitit pickles us
        return {**self.__dict__, '_proc': None}

    def __call__(self) -> int:
        dist = submitit.helpers.TorchDistributedEnvironment()
        env = {**os.environ, **self.env}
        if dist.world_size > 1:
            dist.export(set_cuda_visible_devices=False, overwrite=True)
            env.update({k: os.environ[k] for k in ('MASTER_ADDR', 'MASTER_PORT', 'RANK',
                                                   'WORLD_SIZE', 'LOCAL_RANK')})
        cmd = job_command(self.request_file)
        if dist.rank == 0:  # rank 0 writes the job's log; the others stay in submitit's
            with open(self.work_dir / LOG_FILE, 'ab') as log:
                self._proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log,
                                              stderr=subprocess.STDOUT)
        else:
            self._proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env)
        # poll, not wait(): a blocking wait() holds the lock that checkpoint()'s wait needs
        while (rc := self._proc.poll()) is None:
            time.sleep(1)
        if rc != 0 and read_state(self.work_dir).get('status') != 'interrupted':
            raise RuntimeError(f'job process exited with {rc}: see {self.work_dir / LOG_FILE}')
        return rc

    def checkpoint(self, *args, **kwargs):
        """submitit's warning (time limit or preemption): the job process stops after its
        current iteration with a checkpoint; requeued, the job resumes from it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)  # it may have had SIGUSR2 already
            deadline = time.monotonic() + STOP_WAIT_S
            while self._proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
        if read_state(self.work_dir).get('status') == 'finished':
            return None
        return super().checkpoint(*args, **kwargs)


def submit(targets: list, opts: SlurmOptions, env_of) -> list:
    """Submit each ``Target`` (its request already in its folder; ``env_of(request)``: its
    environment); record each SLURM job id in the job's state. Returns (target, job) pairs."""
    submitted = []
    for target in targets:
        tag, work_dir = target.tag, target.work_dir
        executor = submitit.SlurmExecutor(folder=work_dir / SLURM_DIR, max_num_timeout=20)
        params = dict(job_name=target.request.name.replace('/', '-').replace(' ', '-'),
                      time=opts.time_min, nodes=opts.nodes, ntasks_per_node=opts.tasks_per_node,
                      signal_delay_s=90,
                      # a requeued job's task appends to its logs instead of truncating them
                      srun_args=['--open-mode=append'])
        if opts.partition:
            params['partition'] = opts.partition
        if opts.gpus_per_node:
            params['gpus_per_node'] = opts.gpus_per_node
        if opts.cpus_per_task:
            params['cpus_per_task'] = opts.cpus_per_task
        executor.update_parameters(**params)
        # 'queued' before sbatch: once submitted, the job itself may write 'running' any time
        write_state(work_dir, status='queued', error=None, slurm_logs=str(work_dir / SLURM_DIR))
        try:
            job = executor.submit(SlurmTask(work_dir / REQUEST_FILE, work_dir,
                                            env_of(target.request)))
        except Exception as err:  # noqa: BLE001 - sbatch refused it: recorded, next job
            message = (str(err).strip().splitlines() or [type(err).__name__])[-1][:300]
            write_state(work_dir, status='failed', error=f'sbatch: {message}')
            print(f'{tag}: not submitted: {message}', flush=True)
            continue
        write_state(work_dir, slurm_job_id=job.job_id)
        print(f'{tag}: submitted as SLURM job {job.job_id} -> {work_dir}', flush=True)
        submitted.append((target, job))
    return submitted


ENDED = ('COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'OUT_OF_MEMORY', 'NODE_FAIL',
         'BOOT_FAIL', 'DEADLINE', 'PREEMPTED', 'SPECIAL_EXIT')


def _in_queue(job_id: str) -> bool:
    """Whether SLURM still has the job pending, running or requeued (squeue: no accounting
    database needed; a requeued job is the same job again, its result file notwithstanding)."""
    try:
        out = subprocess.run(['squeue', '-h', '-j', job_id, '-o', '%T'], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return True  # unknown: keep waiting
    if out.returncode != 0:
        return 'Invalid job id' not in out.stderr
    states = out.stdout.split()
    return bool(states) and not all(state in ENDED for state in states)


def wait(submitted: list, poll_s: float = 5.0) -> dict:
    """Wait until every submitted job has left the queue, printing each state change.
    Returns {work_dir: seconds from submission to the end}."""
    start, seen, took = time.monotonic(), {}, {}
    pending = list(submitted)
    while pending:
        for item in list(pending):
            target, job = item
            tag, work_dir = target.tag, target.work_dir
            status = read_state(work_dir).get('status')
            if seen.get(work_dir) != status:
                seen[work_dir] = status
                print(f'{tag}: {status} (SLURM job {job.job_id})', flush=True)
            if not _in_queue(job.job_id):
                took[work_dir] = time.monotonic() - start
                pending.remove(item)
        if pending:
            time.sleep(poll_s)
    return took
