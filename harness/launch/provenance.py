"""Provenance of a job, recorded by the job process in its state (and from there in W&B):
code version, package versions, mmengine's environment, hardware, dataset identity."""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path

from ..core.layout import REPO_ROOT

TRACKED_PACKAGES = ('torch', 'mmcv', 'mmengine', 'mmsegmentation', 'wandb', 'numpy')


def git_state() -> dict:
    """Commit, dirty flag and a hash of the uncommitted changes (tracked files' diff and the
    untracked files' names) of the harness checkout; None outside a git checkout."""
    def git(*args):
        return subprocess.run(['git', *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        status = git('status', '--porcelain')
        diff = git('diff', 'HEAD') + '\n' + status if status else ''
        return {'commit': git('rev-parse', 'HEAD'), 'dirty': bool(status),
                'diff_sha256': hashlib.sha256(diff.encode()).hexdigest() if status else None}
    except (OSError, subprocess.CalledProcessError):
        return {'commit': None, 'dirty': None, 'diff_sha256': None}


def changes_during(history: list[dict]) -> list[str]:
    """What changed between the starts of one job: the code (commit or uncommitted changes)
    and the packages, one phrase each, naming the start it changed at (1-based)."""
    found = []
    for k, (before, after) in enumerate(zip(history, history[1:]), 2):
        was, git = before.get('git') or {}, after.get('git') or {}
        if any(was.get(key) != git.get(key) for key in ('commit', 'diff_sha256')):
            dirty = ' (uncommitted changes)' if git.get('dirty') else ''
            found.append(f"start {k}: code {(git.get('commit') or '?')[:10]}{dirty}")
        old, new = before.get('versions') or {}, after.get('versions') or {}
        moved = [f'{name} {old.get(name)} -> {new.get(name)}'
                 for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]
        if moved:
            found.append(f"start {k}: packages {', '.join(moved)}")
    return found


def hardware() -> dict:
    """The machine this process runs on, as far as :func:`environment` leaves it out: host,
    CPU, memory, the threads torch computes with, each GPU torch sees with its memory (mmengine
    names the models only) and the CUDA runtime torch was built for (mmengine's is buried in
    the build text). The harness's one description of a machine: the job record and the
    measurements (bench, rehearsal) all take theirs from here."""
    import torch
    gpus = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    return {'host': socket.gethostname(), 'cpu': _cpu_name(), 'cpu_count': os.cpu_count(),
            'memory': _physical_memory(), 'torch_threads': torch.get_num_threads(),
            'gpus': [g.name for g in gpus], 'gpu_memory': [g.total_memory for g in gpus],
            'cuda': torch.version.cuda}


def environment() -> dict:
    """mmengine's description of the software a process runs with (``collect_env``, as a
    Runner's log opens with it): platform, Python, the compiler, the CUDA toolkit, the GPU
    models, PyTorch's build, OpenCV, mmengine, as text. numpy's seed is left out: it is the
    process's, not the environment's."""
    from mmengine.utils.dl_utils import collect_env
    return {key: str(value) for key, value in collect_env().items()
            if key != 'numpy_random_seed'}


def _cpu_name() -> str:
    """The CPU's model name (``platform`` only knows the architecture on Linux)."""
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _physical_memory() -> int | None:
    try:
        return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (ValueError, OSError):
        return None


def dataset_identity(root) -> dict:
    """File counts per dataset folder, a SHA-256 of the sorted relative file list, and the
    contents digest that ``check-data`` kept beside the data (``contents_sha256``: over every
    file's bytes) when that file still lists these files with their sizes and times; else
    None, and ``contents`` says why."""
    from ..assets.contents import dataset_files, recorded_contents
    from ..core.datasets import layout_of

    root, digest, counts = Path(root), hashlib.sha256(), {}
    names = dataset_files(root)
    for folder in layout_of(root).folders:  # in the declared order, each sorted
        entries = [n for n in names if n == folder or n.startswith(f'{folder}/')]
        counts[folder] = len(entries)
        digest.update(''.join(f'{name}\n' for name in entries).encode())
    contents, why = recorded_contents(root, names)
    return {'root': str(root), 'files': counts, 'file_list_sha256': digest.hexdigest(),
            'contents_sha256': contents, 'contents': why}


def package_versions() -> dict:
    """Python and the packages, by their distribution names: the code identity's packages
    are read from here (``collect_env`` spells torch and mmengine its own way and has no mmcv,
    mmsegmentation, wandb or numpy)."""
    versions = {'python': platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions
