"""A real one-node SLURM cluster (Debian's slurm-wlm + munge) on 127.0.0.1, for the tests.

Everything it writes (munge key and socket, slurm.conf, state, spool, logs, pid files) lives in
one scratch folder; clients find it through ``SLURM_CONF``. Needs root: slurmd starts jobs as
their users. ``make slurm`` installs the packages.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


class ClusterError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def _tail(path: Path, lines: int = 25) -> str:
    if not path.is_file():
        return f'--- {path.name}: (none)'
    text = path.read_text(errors='replace').splitlines()[-lines:]
    return f'--- {path.name}:\n' + '\n'.join(text)


class SlurmCluster:
    FEATURE = 'harnesstest'

    def __init__(self, root: Path):
        self.root = Path(root)
        self.conf = self.root / 'slurm.conf'
        self.env = {**os.environ, 'SLURM_CONF': str(self.conf)}
        self.logs = [self.root / 'log' / name for name in ('munged.log', 'slurmctld.log',
                                                           'slurmd.log')]
        self.pid_files = [self.root / 'run' / name for name in ('slurmd.pid', 'slurmctld.pid',
                                                                'munged.pid')]

    def log_tail(self) -> str:
        return '\n'.join(_tail(log) for log in self.logs)

    def _fail(self, what: str):
        raise ClusterError(f'{what}\n{self.log_tail()}')

    def start(self, timeout: float = 60) -> float:
        """Start munged, slurmctld and slurmd; return the seconds until the node was idle."""
        start = time.monotonic()
        missing = [b for b in ('munged', 'slurmctld', 'slurmd', 'sinfo', 'sbatch')
                   if shutil.which(b) is None]
        if missing:
            raise ClusterError(f'not installed: {", ".join(missing)} (run `make slurm`)')
        if os.geteuid() != 0:
            raise ClusterError('a SLURM node needs root (slurmd starts jobs as their users)')
        for sub in ('log', 'run', 'state', 'spool', 'munge'):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        munge = self.root / 'munge'
        # munged refuses a key or socket folder others can write to; clients need to enter it
        munge.chmod(0o755)
        key = munge / 'munge.key'
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        socket_path = munge / 'munge.socket'
        self._run(['munged', '--force', f'--key-file={key}', f'--socket={socket_path}',
                   f'--pid-file={self.pid_files[2]}', f'--log-file={self.logs[0]}',
                   f'--seed-file={munge / "munged.seed"}'], 'munged')
        host = socket.gethostname().split('.')[0]
        mem_mb = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**20
        self.conf.write_text('\n'.join([
            'ClusterName=harness-test',
            f'SlurmctldHost={host}(127.0.0.1)',
            f'SlurmctldPort={_free_port()}',
            f'SlurmdPort={_free_port()}',
            'SlurmUser=root',
            'SlurmdUser=root',
            'AuthType=auth/munge',
            'CredType=cred/munge',
            # a requeued job waits for its old credential to expire (default 120 s)
            f'AuthInfo=socket={socket_path},cred_expire=10',
            'SchedulerParameters=sched_interval=2,bf_interval=2',
            'ProctrackType=proctrack/linuxproc',
            'TaskPlugin=task/none',
            'JobAcctGatherType=jobacct_gather/none',
            'AccountingStorageType=accounting_storage/none',
            'SelectType=select/cons_tres',
            'SelectTypeParameters=CR_Core',
            'MpiDefault=none',
            'ReturnToService=2',
            'SchedulerType=sched/backfill',
            'KillWait=30',
            f'StateSaveLocation={self.root / "state"}',
            f'SlurmdSpoolDir={self.root / "spool"}',
            f'SlurmctldPidFile={self.pid_files[1]}',
            f'SlurmdPidFile={self.pid_files[0]}',
            f'SlurmctldLogFile={self.logs[1]}',
            f'SlurmdLogFile={self.logs[2]}',
            # a node feature, for jobs submitted with --constraint
            f'NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} '
            f'RealMemory={mem_mb} Feature={self.FEATURE} State=UNKNOWN',
            f'PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP',
            '']))
        self._run(['slurmctld', '-f', str(self.conf)], 'slurmctld')
        self._run(['slurmd', '-f', str(self.conf)], 'slurmd')
        deadline = time.monotonic() + timeout
        state = ''
        while time.monotonic() < deadline:
            out = subprocess.run(['sinfo', '-h', '-o', '%T'], env=self.env, capture_output=True,
                                 text=True, timeout=30)
            state = (out.stdout or out.stderr).strip()
            if out.returncode == 0 and state == 'idle':
                return time.monotonic() - start
            time.sleep(0.5)
        self._fail(f'the SLURM node is not idle after {timeout:.0f} s (sinfo: {state!r})')

    def _run(self, cmd: list[str], name: str) -> None:
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            self._fail(f'{name} did not start (exit {out.returncode}): '
                       f'{(out.stderr or out.stdout).strip()}')

    def stop(self) -> None:
        """Stop the daemons by their pid files (slurmd first) and wait until they are gone."""
        for pid_file in self.pid_files:
            try:
                pid = int(pid_file.read_text().strip())
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError):
                continue
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
            else:
                os.kill(pid, signal.SIGKILL)
