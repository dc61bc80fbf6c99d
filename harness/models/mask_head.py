"""Segmenter's mask-transformer decoder with the official initialisation.

mmseg's ``SegmenterMaskTransformerHead`` is the official architecture (two pre-norm blocks over
patch + class tokens, L2-normalised projections, LayerNorm over the class masks) but initialises
the patch/class projections with a truncated normal of std 0.02. The official code draws them
as ``d ** -0.5 * randn(d, d)``; with std 0.02 the cosine masks of a fresh model are nearly
constant and small models can fail to break symmetry. Its two blocks run the fused attention
forward (``fused_block``). Same parameters, same state-dict keys.
"""
from __future__ import annotations

from mmseg.models.decode_heads import SegmenterMaskTransformerHead
from mmseg.registry import MODELS
from torch import nn

from .fused_block import fuse_layers


@MODELS.register_module()
class OfficialInitSegmenterMaskHead(SegmenterMaskTransformerHead):
    """``SegmenterMaskTransformerHead`` with the official projection initialisation."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        fuse_layers(self.layers)

    def init_weights(self):
        super().init_weights()
        for proj in (self.patch_proj, self.classes_proj):
            nn.init.normal_(proj.weight, std=proj.in_features ** -0.5)
