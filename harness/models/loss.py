"""The pixel cross-entropy, computed on (pixels, classes) rows.

mmseg's ``CrossEntropyLoss`` hands the full-resolution logits (N, C, H, W) to
``F.cross_entropy``, whose log-softmax then reduces over a strided channel axis: on CPU that
kernel and its backward are several times slower than the same reduction over contiguous
rows. ``ChannelsLastCrossEntropyLoss`` passes mmseg's loss the logits as (N*H*W, C) rows and
the labels as N*H*W values: the same terms, the same ignored pixels, the same mean. When the
logits are channels-last in memory (``BatchedSlideEncoderDecoder`` makes them so before the
upsampling), the rows are a view and nothing is copied.
"""
from __future__ import annotations

import torch
from mmseg.models.losses import CrossEntropyLoss
from mmseg.registry import MODELS


@MODELS.register_module()
class ChannelsLastCrossEntropyLoss(CrossEntropyLoss):
    """mmseg's ``CrossEntropyLoss`` (same options, same value) on per-pixel rows of logits."""

    def forward(self, cls_score: torch.Tensor, label: torch.Tensor, weight=None, **kwargs):
        if cls_score.dim() != 4 or self.use_sigmoid or self.use_mask:
            return super().forward(cls_score, label, weight, **kwargs)
        rows = cls_score.permute(0, 2, 3, 1).reshape(-1, cls_score.shape[1])
        return super().forward(rows, label.reshape(-1),
                               None if weight is None else weight.reshape(-1), **kwargs)
