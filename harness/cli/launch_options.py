"""The options of the commands that launch jobs (``run`` and ``evaluate``): which launcher,
how many processes, the SLURM request, whether a restart may accept drift, and the report
rebuilt afterwards."""
from __future__ import annotations

import dataclasses
import shutil
import sys

from ..core.errors import HarnessError
from ..core.layout import DEFAULT_WORK_ROOT, STATE_FILE
from ..launch.slurm_options import SlurmOptions, SlurmRequest
from .common import DataRoot, Gpus, Jobs, Launcher, Reports, Tracking
from .options import OptionError, option


@dataclasses.dataclass(frozen=True, kw_only=True)
class LaunchOptions(SlurmRequest, Tracking, Reports, DataRoot, Gpus, Launcher, Jobs):
    # SlurmRequest's fields (the SLURM flags) come after Tracking's; its nodes takes Gpus's place
    workers: int | None = option(None, minimum=0, metavar='N',
                                 help='data-loader worker processes per training process '
                                      '(default: min(8, usable CPUs / processes on the node), '
                                      "SLURM's --cpus-per-task where set; smoke: 0, in the "
                                      'process)')
    accept_drift: bool = option(False, help='resume jobs whose recipe the checkout now builds '
                                            'differently with the recipe they started with (the '
                                            'history and the report say so)')
    report: bool = option(True, flag='--no-report', help='do not rebuild the report afterwards')
    verbose: bool = option(False, short='-v', help='stream job logs')

    def check(self):
        super().check()
        if self.launcher == 'local' and self.gpus > 1:
            raise OptionError(f'--gpus {self.gpus} needs --launcher torchrun or slurm (local '
                              'runs one process per job)')
        if self.launcher != 'slurm' and self.nodes > 1:
            raise OptionError('--nodes needs --launcher slurm')

    def build_launcher(self):
        from ..launch.launchers import LocalLauncher, SlurmLauncher
        if self.launcher != 'slurm':
            return LocalLauncher(processes=self.processes, verbose=self.verbose)
        try:
            import submitit  # noqa: F401 - the submission's package, asked for before any work
        except ImportError as err:  # an optional package of this launcher alone
            raise OptionError(f'--launcher slurm needs the Python package {err.name} (pip '
                              f'install {err.name}; environment.yml and requirements.txt '
                              'include it)') from None
        if shutil.which('sbatch') is None:
            raise OptionError('--launcher slurm: no sbatch on PATH (run on a SLURM login node)')
        hint = f'; {self._status_command()} follows them'
        request = {f.name: getattr(self, f.name) for f in dataclasses.fields(SlurmRequest)}
        return SlurmLauncher(SlurmOptions(
            **request, tasks_per_node=self.gpus,
            gpus_per_node=0 if self.profile == 'smoke' else self.gpus), status_hint=hint)

    def _status_command(self) -> str:
        tables = ' '.join(f'--table {t}' for t in self.table)
        root = '' if self.work_root == DEFAULT_WORK_ROOT else f' --work-root {self.work_root}'
        return f'`python -m harness status {tables} --profile {self.profile}{root}`'

    def launch_tables(self, launcher, selected, launch) -> int:
        """Each table's jobs (``launch(table, rows)``: how many did not finish), then its
        report (unless ``--no-report``; one not built: one line says why, and the next table
        still runs); the closing advice last. Returns the command's exit code."""
        failed, reports_missed = 0, []
        for table, rows in selected:
            failed += launch(table, rows)
            if not self.report:
                continue
            from ..results.report import build_report
            try:
                out = build_report(table, self.profile, self.work_root, self.reports,
                                   wandb=self.wandb_report)
            except (HarnessError, OSError) as err:  # a full disk: the next table's jobs may fit
                from . import os_error_line
                why = os_error_line(err) if isinstance(err, OSError) else err
                print(f'error: report of {table.name} not built: {why}', file=sys.stderr,
                      flush=True)
                reports_missed.append(table.name)
            else:
                print(f'report: {out / "report.md"}', flush=True)
        for line in self.closing_advice(launcher, reports_missed):
            print(line)
        return 1 if failed or reports_missed else 0

    def closing_advice(self, launcher, reports_missed: list[str]) -> list[str]:
        """What to do about the jobs that did not finish and the reports not built, by
        reason: a re-run of the same command helps only some of them."""
        from ..launch.launchers import DRIFT, FAILED, REFUSED, RUNNING, UNREADABLE, WAITING
        status = self._status_command()
        said = {
            FAILED: 'failed or stopped: once what their error lines name is fixed, the same '
                    'command resumes them from their last checkpoint',
            DRIFT: 'refused to resume: the checkout builds them differently from what they '
                   'started with (their error lines say what differs); add --accept-drift to '
                   'go on with what they started with, or give another --work-root to start '
                   'them afresh',
            RUNNING: f'running in another process (host and pid above): wait until they end '
                     f'({status} follows them); the same command then skips or resumes them',
            UNREADABLE: f'have a {STATE_FILE} that does not parse: repair it, or move it '
                        'aside to resume the job from its checkpoints',
            WAITING: f'are still queued or running in SLURM: {status} follows them',
            REFUSED: 'not evaluated: the checkpoint or result record their error lines name is '
                     'missing, unreadable or not what the training recorded; once it is '
                     'restored, the same command evaluates them (a checkpoint changed for '
                     'good: train the row again under another --work-root)',
        }
        lines = [f'{n} job(s) {said[reason]}.' for reason, n in launcher.unfinished.items()
                 if n]
        if reports_missed:
            lines.append(f"report(s) of {', '.join(reports_missed)} not built (the error line "
                         'says why): `python -m harness report` builds them once it is fixed.')
        return lines
