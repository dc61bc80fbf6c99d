"""The transformer block of Segmenter's encoder and decoder, on PyTorch's fused attention.

mmseg builds its ViT blocks from mmcv's ``MultiheadAttention``, which asks
``nn.MultiheadAttention`` for the attention weights: that disables the fused
``scaled_dot_product_attention`` kernels and materialises an N x N matrix per head, and its
batch-first wrapper transposes every activation twice. ``FusedEncoderLayer`` computes the same
function from the same parameters (so every state-dict key is mmseg's): one QKV projection,
``F.scaled_dot_product_attention`` on (batch, heads, tokens, dims), the output projection.

It also applies stochastic depth to the attention branch, as the official Segmenter block does
(``x + drop_path(attn(norm1(x)))``); mmseg's layer applies it to the MLP branch only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmseg.models.backbones.vit import TransformerEncoderLayer
from torch import nn


class FusedEncoderLayer(TransformerEncoderLayer):
    """mmseg's ``TransformerEncoderLayer`` (pre-norm ViT block) with a fused forward."""

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        mha: nn.MultiheadAttention = self.attn.attn
        batch, tokens, dims = x.shape
        heads = mha.num_heads
        qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias)
        q, k, v = qkv.view(batch, tokens, 3, heads, dims // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v,
                                             dropout_p=mha.dropout if self.training else 0.0)
        out = mha.out_proj(out.transpose(1, 2).reshape(batch, tokens, dims))
        return self.attn.proj_drop(out)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        drop_path = self.ffn.dropout_layer  # DropPath(rate of this layer), or Identity
        x = x + drop_path(self._attention(self.norm1(x)))
        return x + drop_path(self.ffn.layers(self.norm2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return torch.utils.checkpoint.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


def fuse_layers(layers: nn.ModuleList) -> None:
    """Give the ``TransformerEncoderLayer`` blocks mmseg built the fused forward, in place.

    Only the class changes: the modules, parameters and their keys stay the ones mmseg made
    from the config, so nothing of mmseg's layer construction is repeated here.
    """
    for layer in layers:
        if type(layer) is not TransformerEncoderLayer:
            raise TypeError(f'expected mmseg TransformerEncoderLayer, got {type(layer).__name__}')
        if not isinstance(layer.attn.attn, nn.MultiheadAttention) or not layer.attn.batch_first:
            raise TypeError('fused layers need batch-first nn.MultiheadAttention inside')
        if not isinstance(layer.ffn.gamma2, nn.Identity) or not layer.ffn.add_identity:
            raise TypeError('fused layers support the plain ViT MLP (no layer scale)')
        layer.__class__ = FusedEncoderLayer
