"""Which branch a device-dependent fast path takes: the one written for GPUs or the CPU one.

Some of the models' fast paths are fast on one kind of device only (the training loss and the
sliding-window evaluation in ``segmentor.py``), so each has a CPU branch and a GPU branch that
compute the same values. ``use_gpu_branch`` is the one decision between them: by default it
follows the tensor's device; ``forced`` overrides it, so that the GPU branch runs on CPU tensors
and is checked against the CPU branch on a machine without a GPU
(``tests/test_gpu_branch.py``).

The decision picks which code computes, never where: the device the tensors live on, and
autocast's ``device_type``, stay the tensors' own.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

BRANCHES = ('cpu', 'gpu')

_forced: list[str] = []  # a stack: a forced block may force the other branch inside it


def use_gpu_branch(tensor: torch.Tensor) -> bool:
    """Whether a computation on ``tensor`` takes its GPU branch: on any device but the CPU,
    unless a ``forced`` block says otherwise."""
    if _forced:
        return _forced[-1] == 'gpu'
    return tensor.device.type != 'cpu'


@contextmanager
def forced(branch: str) -> Iterator[None]:
    """Inside this block every fast path takes ``branch`` ('cpu' or 'gpu'), whatever the
    device of its tensors."""
    if branch not in BRANCHES:
        raise ValueError(f'unknown branch {branch!r}: one of {", ".join(BRANCHES)}')
    _forced.append(branch)
    try:
        yield
    finally:
        _forced.pop()
