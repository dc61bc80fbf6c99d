"""Checkpoints in the exact layout of the real releases (random values) convert 1:1."""
import pytest
import torch
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

from harness.assets.convert import (
    ConversionError,
    convert_official_segmenter,
    convert_pretrained_vit,
)
from harness.core.spec import load_table
from tests.helpers import (
    encoder_shapes,
    harness_cli,
    official_forward,
    official_shapes,
    random_state,
    row_dims,
)

register_all_modules()
ROWS = [row for name in ('table3', 'table6') for row in load_table(name).rows]
# the other datasets' rows: their class counts (60, 19) and crops (480, 768, the released
# position grids 30x30 and 48x48) at ViT-L's width; two of its 24 layers, whose every layer is
# the one ADE20K's Seg-L/16 above checks at full depth
NEW_ROWS = [row for name in ('pascal_context', 'cityscapes') for row in load_table(name).rows]
NEW_ROWS_LAYERS = 2


@pytest.mark.parametrize('row', ROWS + NEW_ROWS, ids=lambda r: f'{r.table}-{r.id}')
def test_official_checkpoint_converts_with_no_missing_or_extra_key(row):
    cfg, dims = row_dims(row)
    if row in NEW_ROWS:
        cfg.model.backbone.num_layers = dims['layers'] = NEW_ROWS_LAYERS
    grid = row.crop_size // row.patch_size
    generator = torch.Generator().manual_seed(0)
    official = random_state(official_shapes(grid=grid, **dims), generator)
    converted, dropped = convert_official_segmenter({'model': official}, row.decoder)
    assert sorted(dropped) == sorted(k for k in official if k.startswith(
        ('encoder.head.', 'encoder.head_dist.')))
    cfg.model.pretrained = None
    model = MODELS.build(cfg.model).eval()
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert (missing, unexpected) == ([], [])

    image = torch.randn(1, 3, 64, 96, generator=generator)
    with torch.no_grad():
        ours = model(image, mode='tensor')
        theirs = official_forward(official, image, grid, **dims)
    assert ours.shape == theirs.shape == (1, row.data.classes, 64 // row.patch_size,
                                          96 // row.patch_size)
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


@pytest.mark.parametrize('patch, distilled', [(16, False), (32, False), (8, False), (16, True)])
def test_pretrained_release_converts_and_loads_through_init_cfg(tmp_path, patch, distilled):
    generator = torch.Generator().manual_seed(1)
    release = random_state(encoder_shapes(d=64, layers=2, patch=patch, distilled=distilled),
                           generator)
    converted, dropped = convert_pretrained_vit({'model': release})
    assert all(k.startswith(('head.', 'head_dist.')) for k in dropped) and dropped
    path = tmp_path / 'vit.pth'
    torch.save(converted, path)
    backbone = MODELS.build(dict(
        type='DistilledVisionTransformer' if distilled else 'VisionTransformer',
        img_size=(512, 512), patch_size=patch, embed_dims=64, num_layers=2, num_heads=2,
        final_norm=True, patch_bias=True, interpolate_mode='bilinear',
        norm_cfg=dict(type='LN', eps=1e-5), init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    backbone.init_weights()
    state = backbone.state_dict()
    assert state.keys() == converted.keys()  # zero missing, zero unexpected
    for key, value in converted.items():
        if key != 'pos_embed':
            assert torch.equal(state[key], value), key
    assert state['pos_embed'].shape[1] == (2 if distilled else 1) + (512 // patch) ** 2


def test_unknown_layout_is_refused():
    with pytest.raises(ConversionError, match='unknown block parameter: attn.q.weight'):
        convert_pretrained_vit({'blocks.0.attn.q.weight': torch.zeros(1)})
    with pytest.raises(ConversionError, match='not an official Segmenter key: backbone'):
        convert_official_segmenter({'backbone.cls_token': torch.zeros(1)}, 'mask')


def test_convert_official_cli_writes_once_and_checks_the_row(tmp_path):
    row = load_table('table6').row('seg-t-mask-16')
    _, dims = row_dims(row)
    official = random_state(official_shapes(grid=32, **dims), torch.Generator().manual_seed(2))
    source, out = tmp_path / 'checkpoint.pth', tmp_path / 'converted.pth'
    torch.save({'model': official, 'n_cls': 150}, source)
    result = harness_cli('convert-official', source, '--table', 'table6', '--row', row.id,
                         '--out', out)
    assert result.returncode == 0, result.stderr
    assert '0 missing, 0 unexpected' in result.stdout
    converted = torch.load(out, weights_only=True)['state_dict']
    assert torch.equal(converted['decode_head.patch_proj.weight'],
                       official['decoder.proj_patch'].t())
    before = out.read_bytes()
    again = harness_cli('convert-official', source, '--table', 'table6', '--row', row.id,
                        '--out', out)
    assert again.returncode == 2 and 'exists' in again.stderr and out.read_bytes() == before
    # a linear-decoder row refuses a mask checkpoint: not its architecture
    wrong = harness_cli('convert-official', source, '--table', 'table3', '--row', 'seg-t-16',
                        '--out', tmp_path / 'wrong.pth')
    assert wrong.returncode == 2 and wrong.stderr.count('\n') == 1
    assert not (tmp_path / 'wrong.pth').exists()
    source.write_bytes(b'not a checkpoint')
    broken = harness_cli('convert-official', source, '--table', 'table6', '--row', row.id,
                         '--out', tmp_path / 'other.pth')
    assert broken.returncode == 2 and 'cannot read checkpoint' in broken.stderr
