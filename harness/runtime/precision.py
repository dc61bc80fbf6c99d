"""Mixed-precision training, an option that departs from the paper (which trained in fp32):
docs/design.md, "Reduced precision is an option, not the default".

``--amp bf16`` runs forward and loss under ``torch.autocast(bfloat16)`` on the model's device,
CPU included (mmengine's ``AmpOptimWrapper`` refuses CPUs); bf16 keeps fp32's exponent range,
so no loss scaling. ``--amp fp16`` is mmengine's ``AmpOptimWrapper``; ``--amp tf32`` keeps fp32
tensors and lets tensor cores run the matmuls and convolutions of training in TF32.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper
from mmseg.registry import HOOKS, OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class BF16AutocastOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward/loss context is bf16 autocast on the model's device."""

    @contextmanager
    def optim_context(self, model):
        # where autocast applies, not a choice of code: the models' CPU/GPU branches are
        # chosen by harness.models.branches, and a test that forces one keeps this device
        device = next(model.parameters()).device.type
        with super().optim_context(model), torch.autocast(device_type=device,
                                                          dtype=torch.bfloat16):
            yield


def tf32_flags() -> tuple[bool, bool]:
    """Whether CUDA matmuls and cuDNN convolutions may use TF32 tensor cores."""
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def set_tf32_flags(matmul: bool, cudnn: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = matmul
    torch.backends.cudnn.allow_tf32 = cudnn


@HOOKS.register_module()
class TF32TrainingHook(Hook):
    """TF32 matmuls and convolutions while training; validation (and anything after training)
    runs with PyTorch's flags as they were before, its fp32 defaults unless the user set them."""

    priority = 'VERY_HIGH'

    def __init__(self):
        self.saved = None  # the flags before training, while training runs

    def before_train(self, runner) -> None:
        self.saved = tf32_flags()
        set_tf32_flags(True, True)

    def before_val(self, runner) -> None:
        if self.saved:
            set_tf32_flags(*self.saved)

    def after_val(self, runner) -> None:
        if self.saved:  # validation inside training: back to TF32
            set_tf32_flags(True, True)

    def after_train(self, runner) -> None:
        if self.saved:
            set_tf32_flags(*self.saved)
        self.saved = None
