"""ViT with DeiT's distillation token: the encoder of the paper's Seg-B† rows.

DeiT-B distilled prepends two learned tokens to the patch tokens, ``[cls, dist, patches...]``,
and its position embedding covers both (``num_patches + 2`` entries). mmseg's
``VisionTransformer`` knows one extra token only, so this subclass adds ``dist_token``, sizes the
position embedding for two extra tokens, resizes pretrained grids with both tokens kept, and
drops both tokens before the decoder (as the official Segmenter does). The transformer layers,
patch embedding and final norm are mmseg's own (blocks with the fused forward of
``SegmenterViT``), so their state-dict keys are unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model.weight_init import trunc_normal_
from mmengine.runner.checkpoint import CheckpointLoader, load_state_dict
from mmseg.registry import MODELS
from torch import nn

from .vit import SegmenterViT


def resize_grid_pos_embed(pos_embed: torch.Tensor, num_extra: int, src_hw: tuple[int, int],
                          dst_hw: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize the patch-grid part of ``pos_embed`` (1, num_extra + H*W, C); extra tokens kept."""
    if tuple(src_hw) == tuple(dst_hw):
        return pos_embed
    extra, grid = pos_embed[:, :num_extra], pos_embed[:, num_extra:]
    channels = grid.shape[-1]
    grid = grid.reshape(1, *src_hw, channels).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=dst_hw, mode=mode, align_corners=False)
    return torch.cat([extra, grid.flatten(2).transpose(1, 2)], dim=1)


@MODELS.register_module()
class DistilledVisionTransformer(SegmenterViT):
    """mmseg ViT plus DeiT's distillation token; returns patch-token maps only."""

    num_extra_tokens = 2

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.pre_norm or self.out_origin or self.output_cls_token or not self.with_cls_token:
            raise ValueError('DistilledVisionTransformer supports the plain DeiT layout only '
                             '(with_cls_token=True, no pre_norm/out_origin/output_cls_token)')
        embed_dims = self.cls_token.shape[-1]
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dims))
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.num_extra_tokens + self._grid_len(self.grid_shape), embed_dims))

    @property
    def grid_shape(self) -> tuple[int, int]:
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    @staticmethod
    def _grid_len(hw: tuple[int, int]) -> int:
        return hw[0] * hw[1]

    def init_weights(self):
        pretrained = isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained'
        if not pretrained:
            super().init_weights()  # random init (timm's jax scheme) for everything else
            trunc_normal_(self.dist_token, std=.02)
            return
        checkpoint = CheckpointLoader.load_checkpoint(
            self.init_cfg['checkpoint'], logger=None, map_location='cpu')
        state_dict = checkpoint.get('state_dict', checkpoint)
        pos_embed = state_dict.get('pos_embed')
        if pos_embed is not None and pos_embed.shape != self.pos_embed.shape:
            side = int((pos_embed.shape[1] - self.num_extra_tokens) ** 0.5)
            if side * side + self.num_extra_tokens != pos_embed.shape[1]:
                raise ValueError(f'pretrained pos_embed {tuple(pos_embed.shape)} is not a square '
                                 f'grid plus {self.num_extra_tokens} tokens (cls, dist)')
            print_log(f'resize pretrained pos_embed {side}x{side} -> {self.grid_shape} '
                      f'({self.interpolate_mode})', logger='current')
            state_dict['pos_embed'] = resize_grid_pos_embed(
                pos_embed, self.num_extra_tokens, (side, side), self.grid_shape,
                self.interpolate_mode)
        load_state_dict(self, state_dict, strict=False, logger='current')

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batch = inputs.shape[0]
        patches, hw = self.patch_embed(inputs)
        tokens = torch.cat([self.cls_token, self.dist_token], dim=1).expand(batch, -1, -1)
        pos_embed = resize_grid_pos_embed(self.pos_embed, self.num_extra_tokens,
                                          self.grid_shape, hw, self.interpolate_mode)
        x = self.drop_after_pos(torch.cat([tokens, patches], dim=1) + pos_embed)
        outs = []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i == last and self.final_norm:
                x = self.norm1(x)
            if i in self.out_indices:
                grid = x[:, self.num_extra_tokens:]  # cls and dist tokens are not decoded
                outs.append(grid.transpose(1, 2).reshape(batch, -1, *hw).contiguous())
        return tuple(outs)
