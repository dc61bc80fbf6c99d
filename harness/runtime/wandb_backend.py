"""W&B inside the Runner: mmengine's backend, plotted against the training iteration."""
from __future__ import annotations

import json
import logging
import os

from mmengine.logging import print_log
from mmengine.registry import VISBACKENDS
from mmengine.visualization import WandbVisBackend

STEP_KEY = 'iter'


def reference_artifact(name: str, kind: str, path: str, **metadata):
    """An artifact that points at ``path`` (a file:// reference with its checksum) instead of
    uploading it: the evaluation of a checkpoint declares the same name and file as the
    training job that logged it, so both resolve to one artifact version."""
    import wandb
    artifact = wandb.Artifact(name, type=kind, metadata=metadata)
    artifact.add_reference(f'file://{os.path.realpath(path)}', name=os.path.basename(path))
    return artifact


def declare_use(run, artifact) -> None:
    """Record ``artifact`` as an input of ``run``. W&B's ``use_artifact`` refuses offline runs;
    what it does online for a new artifact (log it, then mark it used once committed) is
    recorded in the offline run instead, and ``wandb sync`` replays it."""
    if run.offline:
        run._log_artifact(artifact, is_user_created=True, use_after_commit=True)
    else:
        run.use_artifact(artifact)


@VISBACKENDS.register_module()
class IterationWandbVisBackend(WandbVisBackend):
    """mmengine's W&B backend, plotted against the training iteration.

    Stock mmengine drops the ``step`` it is given and W&B counts its own steps, so validation
    metrics land at arbitrary x positions; here every row carries ``iter`` and every metric is
    defined against it. The config goes to ``wandb.config`` without ``log_code``, which would walk
    the whole working tree (virtualenv included); the code version is the git commit instead.
    ``meta_file``: a job state file whose ``meta`` (git, versions, hardware, dataset) becomes
    ``wandb.config['harness']`` when the run starts.
    """

    def __init__(self, *args, meta_file: str | None = None, uses: list | None = None,
                 checkpoint_artifact: str | None = None, **kwargs):
        kwargs.setdefault('define_metric_cfg', [dict(name=STEP_KEY, hidden=True),
                                                dict(name='*', step_metric=STEP_KEY)])
        super().__init__(*args, **kwargs)
        self._meta_file = meta_file
        # [artifact name, type, file]: what the run reads (pretrained weights, the evaluated
        # checkpoint), declared as inputs so W&B draws the lineage
        self._uses = uses or []
        self.checkpoint_artifact = checkpoint_artifact  # the name a finished checkpoint takes

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
        for name, kind, path in self._uses:
            if os.path.isfile(path):
                declare_use(self._wandb.run, reference_artifact(name, kind, path))

    def log_checkpoint(self, path: str, **metadata) -> None:
        """A finished job's checkpoint as a reference artifact: W&B records where the file is
        and its checksum; the file itself stays on disk (a checkpoint is up to 1.2 GB)."""
        if self.checkpoint_artifact:
            self._wandb.run.log_artifact(reference_artifact(
                self.checkpoint_artifact, 'model', path, **metadata), aliases=['latest'])

    def add_scalars(self, scalar_dict, step=0, file_path=None, **kwargs):
        super().add_scalars({**scalar_dict, STEP_KEY: step}, step, file_path, **kwargs)

    def add_scalar(self, name, value, step=0, **kwargs):
        self.add_scalars({name: value}, step)

    def add_config(self, config, **kwargs):
        self.experiment.config.update(dict(config), allow_val_change=True)
