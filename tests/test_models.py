"""The registered models: DeiT's distillation token in mmseg's ViT, and the mask head with the
official initialisation."""
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

import harness.models  # noqa: F401  (registers DistilledVisionTransformer)

register_all_modules()
DIMS = dict(embed_dims=64, num_layers=2, num_heads=2, patch_size=16, final_norm=True,
            patch_bias=True, interpolate_mode='bilinear')


def _build(img_size, **kwargs):
    return MODELS.build(dict(type='DistilledVisionTransformer', img_size=img_size, **DIMS,
                             **kwargs))


def test_two_extra_tokens_are_dropped_before_decoding():
    model = _build((64, 64))
    model.init_weights()
    assert model.pos_embed.shape == (1, 4 * 4 + 2, 64)
    assert model.dist_token.shape == (1, 1, 64)
    assert model.dist_token.abs().sum() > 0  # initialised, not left at zero
    (out,) = model(torch.rand(2, 3, 64, 96))  # a window of another size: grid resized
    assert out.shape == (2, 64, 4, 6)
    # the output depends on the distillation token: it takes part in attention
    with torch.no_grad():
        model.dist_token.add_(1.0)
    (changed,) = model(torch.rand(2, 3, 64, 96))
    assert not torch.allclose(out, changed)


def test_pretrained_384_checkpoint_loads_with_both_tokens_kept(tmp_path):
    source = _build((384, 384))  # DeiT-B distilled 384 layout: 24x24 grid + cls + dist
    state = {k: torch.randn_like(v) for k, v in source.state_dict().items()}
    path = tmp_path / 'deit_distilled_384.pth'
    torch.save({'state_dict': state}, path)

    model = _build((512, 512), init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()  # nothing missing, nothing unexpected
    for key, value in state.items():
        if key != 'pos_embed':
            assert torch.equal(loaded[key], value), key
    pos = loaded['pos_embed']
    assert pos.shape == (1, 32 * 32 + 2, 64)
    assert torch.equal(pos[:, :2], state['pos_embed'][:, :2])  # cls and dist rows kept as is
    grid = state['pos_embed'][:, 2:].reshape(1, 24, 24, 64).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(32, 32), mode='bilinear', align_corners=False)
    assert torch.allclose(pos[:, 2:], expected.flatten(2).transpose(1, 2))


def test_mask_head_projections_drawn_like_the_official_code():
    cfg = dict(in_channels=96, channels=96, embed_dims=96, num_layers=2, num_heads=2,
               num_classes=150)
    ours = MODELS.build(dict(type='OfficialInitSegmenterMaskHead', **cfg))
    stock = MODELS.build(dict(type='SegmenterMaskTransformerHead', **cfg))
    ours.init_weights()
    stock.init_weights()
    assert ours.state_dict().keys() == stock.state_dict().keys()  # checkpoints stay compatible
    for proj in ('patch_proj', 'classes_proj'):
        std = getattr(ours, proj).weight.std().item()
        assert abs(std - 96 ** -0.5) < 0.01, std  # official: d ** -0.5 * randn(d, d)
        assert getattr(stock, proj).weight.std().item() < 0.03  # stock: trunc normal 0.02
