"""Tracking: W&B with the training iteration as x-axis, run metadata, safe checkpoint loading."""
from __future__ import annotations

import importlib.metadata
import platform
import subprocess

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
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault('define_metric_cfg', [dict(name=STEP_KEY, hidden=True),
                                                dict(name='*', step_metric=STEP_KEY)])
        super().__init__(*args, **kwargs)

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


def package_versions() -> dict:
    versions = {'python': platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def allow_checkpoint_types() -> None:
    """Let ``torch.load(weights_only=True)`` (torch >= 2.6 default) read mmengine checkpoints.

    mmengine 0.10.7 resumes with a plain ``torch.load``; its checkpoints hold a message hub with
    ``HistoryBuffer`` objects and numpy scalars/arrays. Allow-listing exactly those types keeps
    unpickling restricted instead of passing ``weights_only=False``.
    """
    import numpy as np
    import torch
    from mmengine.logging import HistoryBuffer

    reconstruct = (np._core.multiarray._reconstruct if hasattr(np, '_core')
                   else np.core.multiarray._reconstruct)
    dtypes = [type(np.dtype(t)) for t in ('float64', 'float32', 'int64', 'int32', 'bool')]
    scalar = (np._core.multiarray.scalar if hasattr(np, '_core') else np.core.multiarray.scalar)
    torch.serialization.add_safe_globals(
        [HistoryBuffer, reconstruct, scalar, np.ndarray, np.dtype, *dtypes])
