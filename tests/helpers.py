"""What the tests share: running the CLI, reading W&B offline runs, broken specs, private
mounts (read-only and full file systems), the key layouts of the real releases with an
independent forward of the official model, and a real one-node SLURM cluster.

Fixtures and pytest hooks stay in conftest.py; no test module imports another. torch and
mmengine are imported inside the functions that need them, so importing this module is cheap.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from harness.core.spec import EXPERIMENTS
from harness.core.state import read_curves, write_state

REPO_ROOT = Path(__file__).resolve().parents[1]


# --- the command line, as a user runs it --------------------------------------------------------

def harness_popen(*args, **popen_kwargs):
    """Start ``python -m harness`` in the background (its output discarded)."""
    env = {**os.environ, 'PYTHONPATH': str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, '-m', 'harness', *map(str, args)], cwd=REPO_ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            **popen_kwargs)


def harness_cli(*args, timeout=900, env=None, fresh=False):
    """Run the command line ``python -m harness ARGS`` as a user would; returns the
    CompletedProcess. The command runs in this process (its ``main``, as ``__main__`` calls
    it), its output captured at the file descriptors, so that the processes it starts write
    there too, and ``env`` (when given) its environment: the suite pays for importing torch
    and mmseg once a worker, not once a command. ``fresh`` runs it in an interpreter of its
    own instead (stopped after ``timeout`` seconds), for what only a new process shows (its
    start-up warnings) or keeps (W&B's settings)."""
    if fresh:
        env = {**(env or os.environ), 'PYTHONPATH': str(REPO_ROOT)}
        return subprocess.run([sys.executable, '-m', 'harness', *map(str, args)],
                              cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
    return _in_this_process([str(a) for a in args], env)


def _in_this_process(argv: list[str], env: dict | None) -> subprocess.CompletedProcess:
    """``main(argv)`` with what a process of its own would keep to itself put back after it:
    the output streams (at fds 1 and 2), the working folder, the environment, the SIGTERM
    handler and the warning filters."""
    import traceback
    import warnings

    from harness.cli import main
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_term = signal.getsignal(signal.SIGTERM)
    saved_streams = sys.stdout, sys.stderr
    for stream in saved_streams:
        stream.flush()
    saved_fds = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile('w+', buffering=1, errors='replace') as out, \
            tempfile.TemporaryFile('w+', buffering=1, errors='replace') as err, \
            warnings.catch_warnings():
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout, sys.stderr = out, err
        os.chdir(REPO_ROOT)
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's refusals, the SIGTERM handler
            code = exit_.code
            if code is not None and not isinstance(code, int):
                print(code, file=err)
                code = 1
        except Exception:  # noqa: BLE001 - as the interpreter would: a traceback, exit 1
            traceback.print_exc(file=err)
            code = 1
        finally:
            out.flush()
            err.flush()
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            for fd in saved_fds:
                os.close(fd)
            sys.stdout, sys.stderr = saved_streams
            os.chdir(saved_cwd)
            signal.signal(signal.SIGTERM, saved_term)
            if dict(os.environ) != saved_env:
                os.environ.clear()
                os.environ.update(saved_env)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(['python', '-m', 'harness', *argv], code or 0,
                                           out.read(), err.read())


def smoke_run_args(table, row, work, reports, data):
    """The CLI arguments of a smoke job of one row, reported into ``reports``."""
    return ('run', '--table', table, '--rows', row, '--profile', 'smoke', '--work-root', work,
            '--reports', reports, '--data-root', data)


def start_and_wait(args, work_dir, until_iter):
    """Start a smoke job in its own session; return it once it logged ``until_iter`` with a
    checkpoint on disk."""
    proc = harness_popen(*args, start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        train, _ = read_curves(work_dir)
        if len(train) and train.index.max() >= until_iter and \
                (work_dir / 'last_checkpoint').is_file():
            return proc
        time.sleep(0.2)
    pytest.fail(f'the job ended (exit {proc.poll()}) before it could be stopped')


# --- real mounts, seen by one script alone --------------------------------------------------

UNSHARE = ['unshare', '--user', '--map-root-user', '--mount']


@functools.cache
def _mounts_refused() -> str:
    """Why this machine refuses a private tmpfs mount; '' where it allows one."""
    if shutil.which('unshare') is None:
        return 'no unshare on PATH (util-linux)'
    with tempfile.TemporaryDirectory() as probe:
        done = subprocess.run([*UNSHARE, 'mount', '-t', 'tmpfs', '-o', 'size=16k', 'tmpfs',
                               probe], capture_output=True, text=True, timeout=60, check=False)
    return '' if done.returncode == 0 else (done.stderr or done.stdout).strip()


def in_namespace(script, *args, timeout=900):
    """Run a bash script as root of fresh user + mount namespaces: its mounts (a read-only bind,
    a small tmpfs) are real, seen by no other process, and die with it. Where the machine
    refuses them the test fails saying so: a check skipped is a defect (CI runs as root)."""
    if refused := _mounts_refused():
        pytest.fail(f'this test mounts file systems in a private namespace ({" ".join(UNSHARE)}'
                    f'), which needs unprivileged user namespaces or root: {refused}',
                    pytrace=False)
    return subprocess.run([*UNSHARE, 'bash', '-c', script, 'ns', *map(str, args)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False, env={**os.environ, 'PYTHONPATH': str(REPO_ROOT)})


# --- W&B offline runs ---------------------------------------------------------------------------

def wandb_records(run_dir):
    """Every record of an offline run's transaction log, as W&B's own reader prints it."""
    wandb_cli = Path(sys.executable).with_name('wandb')
    out = subprocess.run([wandb_cli, 'leet', 'inspect', '--json', str(run_dir)], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith('{')]


def wandb_history(run_dir):
    return [r['history']['item'] for r in wandb_records(run_dir) if r['type'] == 'history']


# --- specs --------------------------------------------------------------------------------------

def broken_spec(tmp_path, mutate):
    """table3.yaml with ``mutate`` applied to its rows, written to ``tmp_path``."""
    data = yaml.safe_load((EXPERIMENTS / 'table3.yaml').read_text())
    mutate(data['rows'])
    path = tmp_path / 'table3.yaml'
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


# --- key layouts and shapes of the real releases ------------------------------------------------
# ``official_shapes`` is the layout of the authors' ``segm/model`` checkpoints (``encoder.*`` ViT,
# ``decoder.*`` DecoderLinear/MaskTransformer), ``encoder_shapes`` that of timm/DeiT releases;
# ``official_forward`` is a plain-torch forward of the official architecture written from its
# formulas, so a conversion that maps a key to the wrong place, or forgets a transpose, changes
# the output.

PRETRAINED_GRID = 24  # all releases are 384 px


def row_dims(row):
    from harness.core.request import JobRequest
    from harness.prepare.job_config import build_config

    cfg = build_config(JobRequest(row=row, profile='full', seed=0, work_dir=None,
                                  data_root=None))
    b = cfg.model.backbone
    return cfg, dict(d=b.embed_dims, layers=b.num_layers, heads=b.num_heads, patch=b.patch_size,
                     distilled=b.type == 'DistilledVisionTransformer', decoder=row.decoder,
                     classes=cfg.model.decode_head.num_classes)


def _block(prefix, d, hidden):
    return {f'{prefix}norm1.weight': (d,), f'{prefix}norm1.bias': (d,),
            f'{prefix}attn.qkv.weight': (3 * d, d), f'{prefix}attn.qkv.bias': (3 * d,),
            f'{prefix}attn.proj.weight': (d, d), f'{prefix}attn.proj.bias': (d,),
            f'{prefix}norm2.weight': (d,), f'{prefix}norm2.bias': (d,),
            f'{prefix}mlp.fc1.weight': (hidden, d), f'{prefix}mlp.fc1.bias': (hidden,),
            f'{prefix}mlp.fc2.weight': (d, hidden), f'{prefix}mlp.fc2.bias': (d,)}


def encoder_shapes(d, layers, patch, distilled, prefix='', grid=PRETRAINED_GRID, **_):
    extra = 2 if distilled else 1
    shapes = {f'{prefix}cls_token': (1, 1, d),
              f'{prefix}pos_embed': (1, extra + grid ** 2, d),
              f'{prefix}patch_embed.proj.weight': (d, 3, patch, patch),
              f'{prefix}patch_embed.proj.bias': (d,),
              f'{prefix}norm.weight': (d,), f'{prefix}norm.bias': (d,),
              f'{prefix}head.weight': (1000, d), f'{prefix}head.bias': (1000,)}
    if distilled:
        shapes.update({f'{prefix}dist_token': (1, 1, d), f'{prefix}head_dist.weight': (1000, d),
                       f'{prefix}head_dist.bias': (1000,)})
    for i in range(layers):
        shapes.update(_block(f'{prefix}blocks.{i}.', d, 4 * d))
    return shapes


def official_shapes(d, decoder, grid, classes=150, **dims):
    """A released checkpoint of ``classes`` classes (ADE20K 150, Pascal Context 60, Cityscapes
    19): trained at the row's crop, so its position grid is crop/patch."""
    shapes = encoder_shapes(d, prefix='encoder.', grid=grid, **dims)
    if decoder == 'linear':
        shapes.update({'decoder.head.weight': (classes, d), 'decoder.head.bias': (classes,)})
        return shapes
    shapes.update({'decoder.cls_emb': (1, classes, d), 'decoder.proj_dec.weight': (d, d),
                   'decoder.proj_dec.bias': (d,), 'decoder.proj_patch': (d, d),
                   'decoder.proj_classes': (d, d), 'decoder.decoder_norm.weight': (d,),
                   'decoder.decoder_norm.bias': (d,), 'decoder.mask_norm.weight': (classes,),
                   'decoder.mask_norm.bias': (classes,)})
    for i in range(2):
        shapes.update(_block(f'decoder.blocks.{i}.', d, 4 * d))
    return shapes


def random_state(shapes, generator):
    import torch

    return {k: torch.randn(s, generator=generator) * 0.05 + (1.0 if 'norm' in k and
            k.endswith('weight') else 0.0) for k, s in shapes.items()}


def _ln(x, sd, key):
    import torch.nn.functional as F

    return F.layer_norm(x, x.shape[-1:], sd[f'{key}.weight'], sd[f'{key}.bias'], eps=1e-5)


def _official_block(x, sd, p, heads):
    import torch.nn.functional as F

    b, n, c = x.shape
    qkv = F.linear(_ln(x, sd, p + 'norm1'), sd[p + 'attn.qkv.weight'], sd[p + 'attn.qkv.bias'])
    q, k, v = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    attn = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(-1)
    y = (attn @ v).transpose(1, 2).reshape(b, n, c)
    x = x + F.linear(y, sd[p + 'attn.proj.weight'], sd[p + 'attn.proj.bias'])
    h = F.gelu(F.linear(_ln(x, sd, p + 'norm2'), sd[p + 'mlp.fc1.weight'], sd[p + 'mlp.fc1.bias']))
    return x + F.linear(h, sd[p + 'mlp.fc2.weight'], sd[p + 'mlp.fc2.bias'])


def official_forward(sd, image, pos_side, d, layers, heads, patch, distilled, decoder,
                     classes=150):
    """The official Segmenter of ``classes`` classes at token resolution (eval mode), from the
    formulas; its position embedding is a ``pos_side`` x ``pos_side`` grid."""
    import torch
    import torch.nn.functional as F

    b = image.shape[0]
    x = F.conv2d(image, sd['encoder.patch_embed.proj.weight'],
                 sd['encoder.patch_embed.proj.bias'], stride=patch)
    gh, gw = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    names = ['cls_token', 'dist_token'] if distilled else ['cls_token']
    extra = torch.cat([sd[f'encoder.{t}'] for t in names], 1)
    pos = sd['encoder.pos_embed']
    grid = pos[:, len(names):].reshape(1, pos_side, pos_side, d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(gh, gw), mode='bilinear', align_corners=False)
    pos = torch.cat([pos[:, :len(names)], grid.flatten(2).transpose(1, 2)], 1)
    x = torch.cat([extra.expand(b, -1, -1), x], 1) + pos
    for i in range(layers):
        x = _official_block(x, sd, f'encoder.blocks.{i}.', heads)
    x = _ln(x, sd, 'encoder.norm')[:, len(names):]
    if decoder == 'linear':
        out = F.linear(x, sd['decoder.head.weight'], sd['decoder.head.bias'])
    else:
        x = F.linear(x, sd['decoder.proj_dec.weight'], sd['decoder.proj_dec.bias'])
        x = torch.cat([x, sd['decoder.cls_emb'].expand(b, -1, -1)], 1)
        for i in range(2):
            x = _official_block(x, sd, f'decoder.blocks.{i}.', d // 64)
        x = _ln(x, sd, 'decoder.decoder_norm')
        patches = F.normalize(x[:, :-classes] @ sd['decoder.proj_patch'], dim=-1)
        embeds = F.normalize(x[:, -classes:] @ sd['decoder.proj_classes'], dim=-1)
        out = _ln(patches @ embeds.transpose(1, 2), sd, 'decoder.mask_norm')
    return out.transpose(1, 2).reshape(b, classes, gh, gw)


# --- a real one-node SLURM cluster --------------------------------------------------------------
# Debian's slurm-wlm + munge on 127.0.0.1. Everything it writes (munge key and socket,
# slurm.conf, state, spool, logs, pid files) lives in one scratch folder; clients find it through
# ``SLURM_CONF``. Needs root: slurmd starts jobs as their users. ``make slurm`` installs the
# packages.

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


# --- a report-only environment, as on another machine ------------------------------------------
# A virtual environment with what ``requirements-report.txt`` names and nothing of the training
# stack, under another CPython release where this machine has one; it runs the harness from a
# copy of the checkout, with the running environment's paths kept out.

REPORT_REQUIREMENTS = REPO_ROOT / 'requirements-report.txt'
# the releases tried for the report-only environment, in this order (one with wheels for the
# report's packages first); the running release is passed over
OTHER_PYTHONS = ('3.13', '3.12', '3.11', '3.10', '3.14')
# what the running environment would lend a child process (a user site holds anything)
_KEPT_OUT = ('PYTHONPATH', 'PYTHONHOME', 'PYTHONSTARTUP', 'PYTHONUSERBASE', 'VIRTUAL_ENV',
             'CONDA_PREFIX', 'CONDA_DEFAULT_ENV')


def _release_of(python) -> tuple[int, int] | None:
    """(major, minor) of an interpreter that runs and can build a venv, else None (a pyenv shim
    of a release that is not selected fails)."""
    try:
        out = subprocess.run([str(python), '-c', 'import sys, venv, ensurepip; '
                              'print(*sys.version_info[:2])'], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    try:
        return tuple(map(int, out.stdout.split())) if out.returncode == 0 else None
    except ValueError:
        return None


def other_python() -> tuple[str, str]:
    """(interpreter, what it is): ``$REPORT_ENV_PYTHON`` when set; else the first release of
    OTHER_PYTHONS other than the running one, found on PATH or among pyenv's versions; else the
    running interpreter, saying so."""
    if os.environ.get('REPORT_ENV_PYTHON'):
        python = os.environ['REPORT_ENV_PYTHON']
        return python, f'{python} (REPORT_ENV_PYTHON), release {_release_of(python)}'
    running = sys.version_info[:2]
    pyenv = Path(os.environ.get('PYENV_ROOT') or Path.home() / '.pyenv') / 'versions'
    for release in OTHER_PYTHONS:
        wanted = tuple(map(int, release.split('.')))
        if wanted == running:
            continue
        installed = sorted(pyenv.glob(f'{release}.*/bin/python{release}'), reverse=True,
                           key=lambda p: [int(x) if x.isdigit() else -1
                                          for x in p.parents[1].name.split('.')])
        for python in [shutil.which(f'python{release}'), *installed]:
            if python and _release_of(python) == wanted:
                return str(python), f'CPython {release} ({python}); the tests run {running[0]}.' \
                                    f'{running[1]}'
    tried = ', '.join(r for r in OTHER_PYTHONS if r != '.'.join(map(str, running)))
    return sys.executable, (f'no CPython release other than the running {running[0]}.'
                            f'{running[1]} found (tried {tried}): the report-only environment '
                            'uses the running interpreter')


def build_report_env(folder: Path, python: str) -> Path:
    """A virtual environment in ``folder`` built by ``python`` with requirements-report.txt
    (pip's cache as usual); returns its interpreter. Not byte-compiled at install: compiling
    every installed file was most of the build; its interpreter compiles what it imports."""
    steps = [[python, '-m', 'venv', str(folder)],
             [str(folder / 'bin' / 'python'), '-m', 'pip', 'install', '--quiet', '--no-compile',
              '--disable-pip-version-check', '-r', str(REPORT_REQUIREMENTS)]]
    for step in steps:
        out = subprocess.run(step, capture_output=True, text=True, timeout=1800,
                             env=report_env_vars(None))
        if out.returncode != 0:
            pytest.fail(f'building the report-only environment: {" ".join(step)} exited '
                        f'{out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}')
    return folder / 'bin' / 'python'


def report_env_vars(checkout: Path | None) -> dict:
    """The environment of a process of the report-only environment: none of the running
    environment's paths, no user site; the harness from ``checkout``."""
    env = {k: v for k, v in os.environ.items() if k not in _KEPT_OUT}
    env['PYTHONNOUSERSITE'] = '1'
    if checkout is not None:
        env['PYTHONPATH'] = str(checkout)
    return env


def copy_checkout(dest: Path) -> Path:
    """The checkout as another machine has it: the files git tracks or would add (this working
    tree's, changes included), without virtual environments, job folders, data or caches."""
    try:
        listed = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others',
                                 '--exclude-standard'], cwd=REPO_ROOT, capture_output=True,
                                check=True, timeout=60).stdout.decode().split('\0')
    except (OSError, subprocess.SubprocessError):  # no git: the tree less what .gitignore names
        shutil.copytree(REPO_ROOT, dest, ignore=_not_shipped)
        return dest
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is not listed
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def _not_shipped(folder: str, names: list[str]) -> set[str]:
    top = {'.git', '.venv', '.cache', '.pytest_cache', 'work_dirs', 'data', 'weights', 'wandb',
           'checkpoints'}
    here = Path(folder).resolve()
    dropped = {n for n in names if n == '__pycache__' or n.endswith('.pyc')}
    if here == REPO_ROOT:
        dropped |= top & set(names)
    if here == REPO_ROOT / 'reports':
        dropped |= {n for n in names if n == 'smoke' or n.startswith('table')}
    return dropped


def csv_columns(path: Path, columns) -> list[tuple[str, ...]]:
    """The cells of ``columns`` of a CSV file, as the text the file holds, one tuple a line."""
    import csv

    with open(path, newline='', encoding='utf-8') as f:
        reader = csv.reader(f)
        header = next(reader)
        missing = [c for c in columns if c not in header]
        assert not missing, f'{path} has no column {missing}'
        return [tuple(line[header.index(c)] for c in columns) for line in reader]


def results_table(markdown: str) -> list[str]:
    """The results table of a report.md: its header line to the first blank line."""
    lines = markdown.splitlines()
    start = next((k for k, line in enumerate(lines) if line.startswith('| row | model |')), None)
    assert start is not None, 'report.md has no results table'
    end = next((k for k in range(start, len(lines)) if not lines[k].strip()), len(lines))
    return lines[start:end]


# --- result records, as a finished job writes them ---------------------------------------------

def write_result_record(work_dir, row, profile, seed, max_iters=None, pretrained=None):
    """The result record a finished job writes, by the job's own code, over a checkpoint of
    random bytes recorded as saved, the row's recipe sources and the checkout's code identity."""
    from harness.core import profiles
    from harness.core.hashing import sha256_bytes
    from harness.core.request import JobRequest
    from harness.core.result import write_result
    from harness.core.sources import code_identity, pinned_versions, recipe_sources
    from harness.core.state import read_state
    from harness.launch.job_records import result_record
    schedule = profiles.schedule_length(profile, max_iters)
    data = os.urandom(256)
    (work_dir / f'iter_{schedule}.pth').write_bytes(data)
    (work_dir / 'last_checkpoint').write_text(f'iter_{schedule}.pth')
    code = code_identity(row, pinned_versions())
    write_state(work_dir, checkpoints={f'iter_{schedule}.pth': {'sha256': sha256_bytes(data),
                                                               'bytes': len(data)}},
                history=[{'code': code, 'processes': 1}])
    frozen = {'fingerprint': f'recipe-seed{seed}', 'seed_free': 'recipe',
              'sources': recipe_sources(row), 'code': code,
              'view': {'train_cfg': {'max_iters': schedule},
                       'train_dataloader': {'batch_size': profiles.TOTAL_BATCH}},
              'request': {'max_iters': max_iters}}
    if pretrained is not None:  # the weights file the job loaded, under its weights root
        from harness.core.hashing import sha256_file
        frozen['inputs'] = {'files': {'pretrained': {
            'file': pretrained.name, 'sha256': sha256_file(pretrained, cache=None)}}}
        (work_dir / 'request.json').write_text(json.dumps({'weights_root':
                                                           str(pretrained.parent)}))
    request = JobRequest(row=row, profile=profile, seed=seed, work_dir=work_dir, data_root=None)
    write_result(work_dir, result_record(request, work_dir, frozen, read_state(work_dir)))


def with_counts(declared, counts):
    """``declared`` (a dataset declaration) expecting ``counts`` images per split: a small copy
    checked as the complete dataset would be."""
    import dataclasses
    return dataclasses.replace(declared, splits={
        name: dataclasses.replace(split, count=counts[name])
        for name, split in declared.splits.items()})
