"""W&B inside the Runner: mmengine's backend, plotted against the training iteration."""
from __future__ import annotations

import json
import logging
import os

from mmengine.logging import print_log
from mmengine.registry import VISBACKENDS
from mmengine.visualization import WandbVisBackend

STEP_KEY = 'iter'


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
