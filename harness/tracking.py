"""Tracking: W&B with the training iteration as x-axis, run metadata, safe checkpoint loading."""
from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import subprocess

from mmengine.logging import print_log
from mmengine.registry import VISBACKENDS
from mmengine.visualization import WandbVisBackend

from .spec import REPO_ROOT

STEP_KEY = 'iter'
TRACKED_PACKAGES = ('torch', 'mmcv', 'mmengine', 'mmsegmentation', 'wandb', 'numpy')


@VISBACKENDS.register_module()
class IterationWandbVisBackend(WandbVisBackend):
    """mmengine's W&B backend, plotted against the training iteration.

    Stock mmengine drops the ``step`` it is given and W&B counts its own steps, so validation
    metrics land at arbitrary x positions; here every row carries ``iter`` and every metric is
    defined against it. The config goes to ``wandb.config`` without ``log_code``, which would walk
    the whole working tree (virtualenv included); the code version is the git commit instead.
    ``meta_file``: a job.json whose ``meta`` (git, versions, hardware, dataset) becomes
    ``wandb.config['harness']`` when the run starts.
    """

    def __init__(self, *args, meta_file: str | None = None, **kwargs):
        kwargs.setdefault('define_metric_cfg', [dict(name=STEP_KEY, hidden=True),
                                                dict(name='*', step_metric=STEP_KEY)])
        super().__init__(*args, **kwargs)
        self._meta_file = meta_file

    def _init_env(self):
        if self._meta_file and os.path.isfile(self._meta_file):
            with open(self._meta_file) as f:
                meta = json.load(f).get('meta', {})
            self._init_kwargs = self._init_kwargs or {}
            self._init_kwargs['config'] = {**self._init_kwargs.get('config', {}),
                                           'harness': meta}
        try:
            super()._init_env()
        except Exception as err:  # noqa: BLE001 - unreachable server, bad key: never stop training
            reason = (str(err).splitlines() or [type(err).__name__])[0]
            print_log(f'W&B unavailable ({type(err).__name__}: {reason}); this run is logged '
                      'offline instead: `wandb sync` it later', logger='current',
                      level=logging.WARNING)
            import wandb
            wandb.teardown()  # the failed attempt still holds the run id in W&B's service
            self._init_kwargs['mode'] = 'offline'
            super()._init_env()

    def add_scalars(self, scalar_dict, step=0, file_path=None, **kwargs):
        super().add_scalars({**scalar_dict, STEP_KEY: step}, step, file_path, **kwargs)

    def add_scalar(self, name, value, step=0, **kwargs):
        self.add_scalars({name: value}, step)

    def add_config(self, config, **kwargs):
        self.experiment.config.update(dict(config), allow_val_change=True)


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


def _reduce_history_buffer(buffer):
    return type(buffer), (buffer._log_history, buffer._count_history, buffer.max_length)


def enable_safe_resume() -> None:
    """Make mmengine checkpoints loadable by ``torch.load(weights_only=True)``.

    mmengine 0.10.7 resumes with a plain ``torch.load``, which on torch >= 2.6 restricts
    unpickling to allow-listed types. Its checkpoints hold the message hub's ``HistoryBuffer``s
    and numpy arrays/scalars: those exact types are allow-listed here. A ``HistoryBuffer`` also
    pickles its class-level statistics functions through ``getattr``, a global no safe loader
    may allow; checkpoints saved by this process pickle it from its data alone instead
    (the functions are class attributes, registered again at import).
    """
    import copyreg

    import numpy as np
    import torch
    from mmengine.logging import HistoryBuffer

    copyreg.pickle(HistoryBuffer, _reduce_history_buffer)
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    dtypes = [type(np.dtype(t)) for t in ('float64', 'float32', 'int64', 'int32', 'bool')]
    torch.serialization.add_safe_globals(
        [HistoryBuffer, multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype,
         *dtypes])
