"""SLURM through submitit: the rows x seeds of one command as one job array, each task requeued
on timeout or preemption (docs/cluster.md says what goes to sbatch and where the files are).

Each array task is one job (its own job folder, request, log and state); each SLURM task of it
is one training process running ``python -m harness.launch.job`` on the job's request with the
torch.distributed variables of its task. On submitit's SIGUSR2 warning the job process saves a
checkpoint and stops (``harness.runtime.preempt``); submitit requeues that array task alone.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import submitit

from ..core.layout import LOG_FILE, REPO_ROOT, REQUEST_FILE, slurm_folder
from ..core.state import read_state, write_state
from .job import job_command, job_env
from .slurm_options import SlurmOptions

STOP_WAIT_S = 80  # submitit's warning comes 90 s before the kill
MAX_QUEUE_FAILURES = 3  # squeue failing this many polls in a row ends the wait


class SlurmTask(submitit.helpers.Checkpointable):
    """One SLURM task of one job: runs the job process, stops it with a checkpoint on
    submitit's warning and asks to be requeued."""

    def __init__(self, work_dir: Path, env: dict):
        self.work_dir, self.env = Path(work_dir), dict(env)
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
        cmd = job_command(self.work_dir / REQUEST_FILE)
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


def _parameters(opts: SlurmOptions, name: str) -> dict:
    params = dict(job_name=name, time=opts.time_min, nodes=opts.nodes,
                  ntasks_per_node=opts.tasks_per_node, signal_delay_s=90,
                  # a requeued task appends to its logs instead of truncating them
                  srun_args=['--open-mode=append'])
    optional = dict(partition=opts.partition, gpus_per_node=opts.gpus_per_node or None,
                    cpus_per_task=opts.cpus_per_task, account=opts.account, qos=opts.qos,
                    constraint=opts.constraint, exclusive=opts.exclusive or None)
    params.update({k: v for k, v in optional.items() if v is not None})
    if opts.mem:  # as given: submitit's own `mem` expects gigabytes
        params['additional_parameters'] = {'mem': opts.mem}
    return params


def submit(targets: list, opts: SlurmOptions) -> list:
    """Submit the ``Target``s (their requests already in their folders) as one job array;
    record each task's SLURM job id in its job's state. Returns (target, SLURM job id) pairs
    (none when sbatch refused the array)."""
    folder = slurm_folder([t.work_dir for t in targets])
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=20)
    first = targets[0].request
    executor.update_parameters(**_parameters(opts, f'segmenter-{first.row.table}-{first.profile}'))
    for target in targets:  # 'queued' before sbatch: a started task may write 'running' any time
        write_state(target.work_dir, status='queued', error=None, slurm_logs=str(folder))
    try:
        with executor.batch():
            jobs = [executor.submit(SlurmTask(t.work_dir, job_env(t.request))) for t in targets]
    except Exception as err:  # noqa: BLE001 - sbatch refused it: recorded in every job
        message = (str(err).strip().splitlines() or [type(err).__name__])[-1][:300]
        for target in targets:
            write_state(target.work_dir, status='failed', error=f'sbatch: {message}')
            print(f'{target.tag}: not submitted: {message}', flush=True)
        return []
    for target, job in zip(targets, jobs):
        write_state(target.work_dir, slurm_job_id=job.job_id)
        print(f'{target.tag}: submitted as SLURM job {job.job_id} -> {target.work_dir}',
              flush=True)
    return [(target, job.job_id) for target, job in zip(targets, jobs)]


ENDED = ('COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'OUT_OF_MEMORY', 'NODE_FAIL',
         'BOOT_FAIL', 'DEADLINE', 'PREEMPTED', 'SPECIAL_EXIT')


class QueueError(RuntimeError):
    """squeue did not answer (one line)."""


def in_queue(job_ids: list[str]) -> set[str]:
    """The jobs SLURM still has pending, running or requeued, from one ``squeue`` call (array
    tasks one by one, ``<array>_<index>``); a job absent from it has left the queue. squeue
    needs no accounting database; a requeued job is listed again as pending."""
    arrays = sorted({job_id.split('_')[0] for job_id in job_ids})
    if not arrays:
        return set()
    try:
        out = subprocess.run(['squeue', '-h', '-r', '-j', ','.join(arrays), '-o', '%i %T'],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise QueueError(f'squeue: {err}') from None
    if out.returncode != 0:
        if 'Invalid job id' in out.stderr:  # every one of them has left SLURM's memory
            return set()
        lines = (out.stderr or out.stdout).strip().splitlines()
        raise QueueError(f"squeue exited with {out.returncode}: {(lines or [''])[-1][:200]}")
    states = dict(line.split()[:2] for line in out.stdout.splitlines() if len(line.split()) > 1)
    return {job_id for job_id in job_ids if job_id in states and states[job_id] not in ENDED}


def wait(submitted: list, poll_s: float, max_failures: int = MAX_QUEUE_FAILURES,
         status_hint: str = '') -> tuple[dict, list]:
    """Wait until every (target, SLURM job id) has left the queue, printing each state
    change. Returns ({work_dir: seconds from now to its end}, the pairs still queued when squeue
    failed ``max_failures`` polls in a row: the wait ends with one line, they go on)."""
    start, seen, took, failures = time.monotonic(), {}, {}, 0
    pending = list(submitted)
    while pending:
        for target, job_id in pending:
            status = read_state(target.work_dir).get('status')
            if seen.get(target.work_dir) != status:
                seen[target.work_dir] = status
                print(f'{target.tag}: {status} (SLURM job {job_id})', flush=True)
        try:
            queued = in_queue([job_id for _, job_id in pending])
        except QueueError as err:
            failures += 1
            if failures >= max_failures:
                print(f'error: {err} ({failures} polls in a row); stopped waiting: '
                      f'{len(pending)} SLURM job(s) go on without this command'
                      f'{status_hint}', file=sys.stderr, flush=True)
                return took, pending
        else:
            failures = 0
            for item in [item for item in pending if item[1] not in queued]:
                took[item[0].work_dir] = time.monotonic() - start
                pending.remove(item)
        if pending:
            time.sleep(poll_s)
    return took, []
