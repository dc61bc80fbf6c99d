"""Mixed-precision training, an option that departs from the paper (which trained in fp32).

``--amp bf16`` runs forward and loss under ``torch.autocast(bfloat16)`` on the model's device,
CPU included (mmengine's ``AmpOptimWrapper`` refuses CPUs); bf16 keeps fp32's exponent range,
so no loss scaling. ``--amp fp16`` is mmengine's ``AmpOptimWrapper`` with dynamic loss
scaling, GPUs only. Reports name the rows that used either.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from mmseg.registry import OPTIM_WRAPPERS

AMP_CHOICES = ('bf16', 'fp16')


@OPTIM_WRAPPERS.register_module()
class BF16AutocastOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward/loss context is bf16 autocast on the model's device."""

    @contextmanager
    def optim_context(self, model):
        device = next(model.parameters()).device.type
        with super().optim_context(model), torch.autocast(device_type=device,
                                                          dtype=torch.bfloat16):
            yield


def apply_amp(cfg, amp: str) -> None:
    """Switch the config's optimiser wrapper to ``amp`` precision (same optimiser, schedule)."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"unknown --amp '{amp}' (choices: {', '.join(AMP_CHOICES)})")
    if amp == 'bf16':
        cfg.optim_wrapper.type = 'BF16AutocastOptimWrapper'
    else:
        cfg.optim_wrapper.update(type='AmpOptimWrapper', dtype='float16', loss_scale='dynamic')
