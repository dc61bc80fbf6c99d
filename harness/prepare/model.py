"""A row's model as its job builds it, with random init and nothing loaded: the one builder
behind the pre-launch check, the weights check, checkpoint conversion and the plan."""
from __future__ import annotations

import warnings
from pathlib import Path

from ..core.layout import REPO_ROOT
from ..core.request import JobRequest
from ..core.spec import Row


def build_model(row: Row, profile: str = 'full', *, gpus: int = 1,
                weights_root: Path = REPO_ROOT, num_layers: int | None = None):
    """The row's segmentor under ``profile`` (``num_layers``: that many encoder blocks instead
    of the row's, e.g. to count parameters without building ViT-L whole)."""
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    from .job_config import build_config
    register_all_modules()
    with warnings.catch_warnings():  # mmseg's deprecation notes are no finding here
        warnings.simplefilter('ignore')
        cfg = build_config(JobRequest(row=row, profile=profile, seed=0, work_dir=None,
                                      data_root=None, gpus=gpus, weights_root=weights_root))
        model_cfg = cfg.model
        model_cfg.pretrained = None  # built to be checked or counted, not loaded
        if num_layers is not None:
            model_cfg.backbone.update(num_layers=num_layers, out_indices=-1)
        return MODELS.build(model_cfg)
