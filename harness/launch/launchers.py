"""Launchers: run a list of job targets, each one :class:`JobRequest` in its own job folder.

``local`` runs one process per job, one job after another; ``torchrun`` runs each job as
``--gpus`` processes on this machine sharing the total batch; ``slurm`` submits each job as a
SLURM job through submitit (``harness.launch.slurm``). All three write the request into the job
folder and start ``python -m harness.launch.job`` on it. Finished jobs are skipped; interrupted
or failed ones start again and resume from their last checkpoint; a crashing job is recorded
and the next one starts. ``run`` and ``evaluate`` differ only in the targets they build
(``harness.launch.targets``).
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from filelock import FileLock, Timeout

from ..core.errors import StateError
from ..core.layout import (
    LOCK_FILE,
    LOG_FILE,
    REPO_ROOT,
    REQUEST_FILE,
    latest_checkpoint,
    own_checkpoints,
    slurm_log,
)
from ..core.request import JobRequest
from ..core.state import (
    FAILURE_PREFIX,
    NOTICE_PREFIX,
    PROGRESS_PREFIX,
    UNREADABLE,
    log_tail,
    read_curves,
    read_state,
    write_state,
)
from .job import EXIT_LOCKED, failure_line, job_command, job_env

SHOWN = (PROGRESS_PREFIX.encode(), NOTICE_PREFIX.encode())  # job output lines shown here

STOP_WAIT_S = 120  # a stopped job saves a checkpoint first (torchrun kills after 30 s)


@dataclasses.dataclass(frozen=True)
class Target:
    """One job to launch: its request and how the launcher's lines name it."""
    request: JobRequest
    tag: str  # '[n/N] table/row seedK'

    @property
    def work_dir(self) -> Path:
        return self.request.work_dir


def _held_elsewhere(work_dir: Path) -> bool:
    """Whether another process owns the job (torchrun hides the job's own exit code)."""
    if not (work_dir / LOCK_FILE).exists():
        return False
    try:
        with FileLock(work_dir / LOCK_FILE, timeout=0):
            return False
    except Timeout:
        return True


def resumable_from(work_dir: Path) -> Path | None:
    """The checkpoint a restart of the job will resume from: the newest of its folder (the
    job's own rule, :func:`harness.launch.job_records.resume_point`, without hashing: a damaged
    one is passed over there, with a line), else the one the pointer names."""
    own = own_checkpoints(work_dir)
    if own:
        return own[0]
    pointed = latest_checkpoint(work_dir)
    return pointed if pointed is not None and pointed.is_file() else None


def _resume_note(work_dir: Path) -> str:
    checkpoint = resumable_from(work_dir)
    if checkpoint is not None:
        return f' (resuming from {checkpoint.name})'
    return ' (restarting: no checkpoint yet)' if read_state(work_dir) else ''


def killed_error(rc: int, work_dir: Path) -> str:
    """What a job killed by a signal (a negative exit code) could not record itself."""
    try:
        name = f' ({signal.Signals(-rc).name})'
    except ValueError:
        name = ''
    progress = read_state(work_dir).get('progress') or {}
    reached = f" after iteration {progress['iter']}" if progress.get('iter') else ''
    checkpoint = resumable_from(work_dir)
    then = (f'resumable from {checkpoint.name}' if checkpoint is not None
            else 'no checkpoint yet: a restart begins again')
    return f'killed by signal {-rc}{name}{reached}; {then}'


def report_end(target: Target, rc: int, took: float, log: Path | None = None,
               output: JobOutput | None = None) -> bool:
    """Print how one job ended (recording a death it could not record itself); True when
    it finished. ``output``: what the local launcher saw of the job's output."""
    work_dir, tag = target.work_dir, target.tag
    log = log or work_dir / LOG_FILE
    log_note = f' ({output.log_error})' if output and output.log_error else ''
    state = read_state(work_dir)
    if rc == 0 and state.get('status') == 'finished':
        if 'metrics' in state:
            miou = f"mIoU {state['metrics']['mIoU']:.2f}"
        else:
            _, val = read_curves(work_dir)
            miou = f"mIoU {val['mIoU'].iloc[-1]:.2f}" if len(val) else 'no evaluation'
        print(f'{tag}: finished in {took:.0f}s, {miou}'
              + (f'; its log {log}{log_note}' if log_note else ''), flush=True)
        return True
    if rc == EXIT_LOCKED:  # another process owns this job: leave its state alone
        print(f"{tag}: already running (host {state.get('host')}, pid {state.get('pid')}),"
              ' skipped', flush=True)
        return False
    unrecorded = state.get('status') in ('running', 'queued') or (
        output is not None and state.get('updated', 0) < output.started)
    if unrecorded:  # died before it could record anything (a kill, a full disk)
        if rc < 0:  # a signal no handler saw (SIGKILL: the kernel's OOM killer, kill -9)
            error = killed_error(rc, work_dir)
        else:
            # its own failure line however much followed it, else its output's last line
            said = (output and (output.failure or failure_line(output.tail()))) or \
                failure_line(log_tail(work_dir))
            error = said or f'exit code {rc}'
        try:
            state = write_state(work_dir, status='failed', error=error)
        except (OSError, StateError) as err:  # the line below is then all there is
            why = err.strerror if isinstance(err, OSError) and err.strerror else err
            state = {'status': 'failed', 'error': f'{error} (not recorded in its state: {why})'}
    # one line on stderr per job that did not finish, naming its problem
    print(f"error: {target.request.name} {state.get('status')} after {took:.0f}s "
          f"(exit {rc}): {state.get('error')} -- log: {log}{log_note}", file=sys.stderr,
          flush=True)
    return False


# why a job did not finish, as the command's closing advice groups them (REFUSED: an
# evaluation whose checkpoint or result record was refused before any launch)
FAILED, DRIFT, RUNNING, WAITING, REFUSED = 'failed', 'drift', 'running', 'waiting', 'refused'


def unfinished_reason(rc: int, work_dir: Path) -> str:
    """Why a job that did not finish did not (its exit code and the state it left)."""
    if rc == EXIT_LOCKED:
        return RUNNING
    state = read_state(work_dir)
    if state.get('refused') == 'drift':
        return DRIFT
    return UNREADABLE if state.get('status') == UNREADABLE else FAILED


@dataclasses.dataclass
class Launcher:
    """Runs job targets; ``run`` returns how many did not finish (or were not submitted), and
    ``unfinished`` counts them by reason (``FAILED``, ``DRIFT``, ...) over every call."""
    unfinished: collections.Counter = dataclasses.field(default_factory=collections.Counter,
                                                        init=False, repr=False)

    def run(self, targets: list[Target]) -> int:
        ready, failed = [], 0
        for target in targets:
            state = read_state(target.work_dir)
            if state.get('status') == 'finished':
                print(f'{target.tag}: finished before, skipped', flush=True)
            elif state.get('status') == UNREADABLE:  # never written over: it is all we have
                failed += 1
                self.unfinished[UNREADABLE] += 1
                print(f"error: {target.request.name}: {state['error']}; not launched (repair "
                      'the file, or move it aside to resume the job from its checkpoints)',
                      file=sys.stderr, flush=True)
            elif _held_elsewhere(target.work_dir) and not self.follows(state):
                failed += 1
                self.unfinished[RUNNING] += 1
                print(f"{target.tag}: already running (host {state.get('host')}, pid "
                      f"{state.get('pid')}), skipped", flush=True)
            else:
                request_file = target.work_dir / REQUEST_FILE
                try:
                    target.work_dir.mkdir(parents=True, exist_ok=True)
                    target.request.write(request_file)  # atomic, errors naming the file
                except OSError as err:  # a full disk: the next rows may still fit
                    failed += 1
                    self.unfinished[FAILED] += 1
                    print(f'error: {target.request.name}: cannot write '
                          f'{err.filename or request_file}: {err.strerror or err}; not launched',
                          file=sys.stderr, flush=True)
                    continue
                ready.append(target)
        return failed + self.launch(ready)

    def launch(self, targets: list[Target]) -> int:
        raise NotImplementedError

    def follows(self, state: dict) -> bool:
        """Whether a job another process holds is one this launcher waits for (its own kind,
        started by an earlier command) rather than refuses."""
        return False


@dataclasses.dataclass
class LocalLauncher(Launcher):
    """One job at a time on this machine, as ``processes`` processes (torchrun when > 1)."""
    processes: int = 1
    verbose: bool = False

    def launch(self, targets: list[Target]) -> int:
        failed = 0
        for target in targets:
            request = target.request
            action = (f'evaluating {request.checkpoint}' if request.kind == 'evaluate'
                      else f'training{_resume_note(target.work_dir)}')
            print(f'{target.tag}: {action} -> {target.work_dir}', flush=True)
            start = time.monotonic()
            rc, output = self._run_one(target)
            if not report_end(target, rc, time.monotonic() - start, output=output):
                failed += 1
                self.unfinished[unfinished_reason(rc, target.work_dir)] += 1
        return failed

    def _run_one(self, target: Target):
        """Run one job process, its output teed to the job's log (and the terminal: all of it
        when verbose, else its progress lines) by a thread, so that a stopped launcher still
        records what the job says while it stops. Returns (exit code, JobOutput)."""
        output = JobOutput(target.work_dir / LOG_FILE)
        proc = subprocess.Popen(job_command(target.work_dir / REQUEST_FILE, self.processes),
                                cwd=REPO_ROOT, env=job_env(target.request),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        def show(chunk: bytes) -> None:
            if self.verbose:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            elif chunk.startswith(SHOWN):
                print(f'{target.tag}: {chunk.decode(errors="replace").rstrip()}', flush=True)

        copier = threading.Thread(target=output.copy, args=(proc.stdout, show), daemon=True)
        copier.start()
        try:
            rc = proc.wait()
        except BaseException as err:
            # Ctrl-C reached the job too; SIGTERM stopped the launcher alone: pass it on.
            # Either way the job saves a checkpoint and records its state before it exits.
            if not isinstance(err, KeyboardInterrupt):
                proc.terminate()
            try:
                proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            copier.join(timeout=10)
            raise
        copier.join()
        return rc, output


class JobOutput:
    """A job's output as the local launcher copies it: to the job's log, to the terminal, and
    its last lines kept here. A log that cannot be written (a full disk) is given up, once,
    while the output is still read to its end: a job blocked on a full pipe would never end,
    and its last lines then say how it ended."""
    TAIL_LINES = 40

    def __init__(self, log: Path):
        self.log = log
        self.log_error: str | None = None  # why the log is incomplete
        self.started = time.time()
        self._tail = collections.deque(maxlen=self.TAIL_LINES)
        self.failure: str | None = None  # the job's own line on why it failed, when it said one

    def tail(self) -> str:
        return b''.join(self._tail).decode(errors='replace')

    def copy(self, stream, show) -> None:
        try:
            log = open(self.log, 'ab')
        except OSError as err:
            self._give_up(err)
            log = None
        for chunk in iter(stream.readline, b''):
            self._tail.append(chunk)
            if chunk.startswith(FAILURE_PREFIX.encode()):
                self.failure = failure_line(chunk.decode(errors='replace'))
            if log is not None:
                try:
                    log.write(chunk)
                    log.flush()
                except OSError as err:
                    self._give_up(err)
                    _close_quietly(log)
                    log = None
            with contextlib.suppress(OSError):  # a terminal gone, a full disk under a redirect
                show(chunk)
        _close_quietly(log)

    def _give_up(self, err: OSError) -> None:
        self.log_error = f'not written further: {err.strerror or err}'


def _close_quietly(file) -> None:
    """Close ``file``, dropping what a full disk kept it from writing."""
    if file is not None:
        with contextlib.suppress(OSError):
            file.close()


@dataclasses.dataclass
class SlurmLauncher(Launcher):
    """All jobs as one SLURM job array (submitit); waits for them unless ``options.wait`` is
    off. A job that SLURM still has queued or running is not submitted twice."""
    options: object  # harness.launch.slurm_options.SlurmOptions
    status_hint: str = ''  # how `harness status` follows these jobs, for the lines that say so

    def launch(self, targets: list[Target]) -> int:
        from . import slurm
        queued, targets = self._in_queue(targets)
        submitted = slurm.submit(targets, self.options) if targets else []
        failed = len(targets) - len(submitted)
        self.unfinished[FAILED] += failed
        if not self.options.wait:
            print(f'{len(submitted)} SLURM job(s) submitted{self.status_hint}', flush=True)
            return failed
        took, left = slurm.wait(queued + submitted, self.options.poll_interval,
                                status_hint=self.status_hint)
        for target, job_id in queued + submitted:
            if target.work_dir not in took:  # still queued or running: not an end
                continue
            state = read_state(target.work_dir)
            rc = 0 if state.get('status') == 'finished' else 1
            if not report_end(target, rc, took[target.work_dir],
                              log=slurm_log(state.get('slurm_logs', ''), job_id)):
                failed += 1
                self.unfinished[unfinished_reason(rc, target.work_dir)] += 1
        self.unfinished[WAITING] += len(left)
        return failed + len(left)

    def follows(self, state: dict) -> bool:
        return bool(state.get('slurm_job_id'))  # a SLURM task of an earlier submission

    @staticmethod
    def _in_queue(targets: list[Target]) -> tuple[list, list[Target]]:
        """(target, SLURM job id) of the jobs SLURM still has from an earlier submission (not
        submitted again: waited for), and the targets to submit."""
        from . import slurm
        ids = {t.work_dir: read_state(t.work_dir).get('slurm_job_id') for t in targets}
        try:
            alive = slurm.in_queue([i for i in ids.values() if i])
        except slurm.QueueError:  # sbatch will say what is wrong with SLURM
            alive = set()
        queued = []
        for target in targets:
            if ids[target.work_dir] in alive:
                print(f'{target.tag}: in SLURM already as job {ids[target.work_dir]}, not '
                      'submitted again', flush=True)
                queued.append((target, ids[target.work_dir]))
        return queued, [t for t in targets if ids[t.work_dir] not in alive]
