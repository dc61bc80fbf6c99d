"""Segmenter's ViT encoder: mmseg's ``VisionTransformer`` with fused-attention blocks.

Patch embedding, position embedding, class token, final norm and every state-dict key are
mmseg's; only the blocks run through :class:`~harness.models.fused_block.FusedEncoderLayer`
(PyTorch's scaled-dot-product attention, drop path on both branches as in the official code).
"""
from __future__ import annotations

from mmseg.models.backbones import VisionTransformer
from mmseg.registry import MODELS

from .fused_block import fuse_layers


@MODELS.register_module()
class SegmenterViT(VisionTransformer):
    """mmseg ``VisionTransformer`` whose blocks use the fused attention forward.

    ``fused_attention=False`` keeps mmseg's blocks (the benchmark's stock baseline for
    subclasses that have no stock counterpart, such as the distilled ViT)."""

    def __init__(self, fused_attention: bool = True, **kwargs):
        super().__init__(**kwargs)
        if fused_attention:
            fuse_layers(self.layers)
