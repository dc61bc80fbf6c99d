"""Provenance of a job, recorded by the job process in its state (and from there in W&B):
code version, package versions, hardware, dataset identity."""
from __future__ import annotations

import importlib.metadata
import platform
import subprocess

from ..core.layout import REPO_ROOT

TRACKED_PACKAGES = ('torch', 'mmcv', 'mmengine', 'mmsegmentation', 'wandb', 'numpy')


def git_state() -> dict:
    """Commit and dirty flag of the harness checkout (None outside a git checkout)."""
    def git(*args):
        return subprocess.run(['git', *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        return {'commit': git('rev-parse', 'HEAD'), 'dirty': bool(git('status', '--porcelain'))}
    except (OSError, subprocess.CalledProcessError):
        return {'commit': None, 'dirty': None}


def hardware() -> dict:
    import os

    import torch
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {'cpu': platform.processor() or platform.machine(), 'cpu_count': os.cpu_count(),
            'gpus': gpus, 'gpu_count': len(gpus)}


def dataset_identity(root) -> dict:
    """File counts per ADE20K folder and a SHA-256 of the sorted relative file list."""
    import hashlib
    from pathlib import Path

    root, digest, counts = Path(root), hashlib.sha256(), {}
    for kind in ('images', 'annotations'):
        for split in ('training', 'validation'):
            folder = root / kind / split
            names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
            counts[f'{kind}/{split}'] = len(names)
            for name in names:
                digest.update(f'{kind}/{split}/{name}\n'.encode())
    return {'root': str(root), 'files': counts, 'file_list_sha256': digest.hexdigest()}


def package_versions() -> dict:
    versions = {'python': platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions
