"""Checkpoints in the exact layout of the real releases (random values) convert 1:1.

``official_state_dict`` builds the key layout and shapes of the authors' ``segm/model``
(``encoder.*`` ViT, ``decoder.*`` DecoderLinear/MaskTransformer) and of timm/DeiT releases;
``official_forward`` is an independent plain-torch forward of that architecture, so a conversion
that maps a key to the wrong place, or forgets a transpose, changes the output.
"""
import pytest
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

from harness.convert import ConversionError, convert_official_segmenter, convert_pretrained_vit
from harness.profiles import JobSpec, build_config
from harness.spec import load_table
from tests.conftest import harness_cli

register_all_modules()
ROWS = [row for name in ('table3', 'table6') for row in load_table(name).rows]
PRETRAINED_GRID = 24  # all releases are 384 px


def _dims(row):
    cfg = build_config(JobSpec(row=row, profile='full', seed=0, work_dir=None, data_root=None))
    b = cfg.model.backbone
    return cfg, dict(d=b.embed_dims, layers=b.num_layers, heads=b.num_heads, patch=b.patch_size,
                     distilled=b.type == 'DistilledVisionTransformer', decoder=row.decoder)


def _block(prefix, d, hidden):
    return {f'{prefix}norm1.weight': (d,), f'{prefix}norm1.bias': (d,),
            f'{prefix}attn.qkv.weight': (3 * d, d), f'{prefix}attn.qkv.bias': (3 * d,),
            f'{prefix}attn.proj.weight': (d, d), f'{prefix}attn.proj.bias': (d,),
            f'{prefix}norm2.weight': (d,), f'{prefix}norm2.bias': (d,),
            f'{prefix}mlp.fc1.weight': (hidden, d), f'{prefix}mlp.fc1.bias': (hidden,),
            f'{prefix}mlp.fc2.weight': (d, hidden), f'{prefix}mlp.fc2.bias': (d,)}


def encoder_shapes(d, layers, patch, distilled, prefix='', grid=PRETRAINED_GRID, **_):
    extra = 2 if distilled else 1
    shapes = {f'{prefix}cls_token': (1, 1, d),
              f'{prefix}pos_embed': (1, extra + grid ** 2, d),
              f'{prefix}patch_embed.proj.weight': (d, 3, patch, patch),
              f'{prefix}patch_embed.proj.bias': (d,),
              f'{prefix}norm.weight': (d,), f'{prefix}norm.bias': (d,),
              f'{prefix}head.weight': (1000, d), f'{prefix}head.bias': (1000,)}
    if distilled:
        shapes.update({f'{prefix}dist_token': (1, 1, d), f'{prefix}head_dist.weight': (1000, d),
                       f'{prefix}head_dist.bias': (1000,)})
    for i in range(layers):
        shapes.update(_block(f'{prefix}blocks.{i}.', d, 4 * d))
    return shapes


def official_shapes(d, decoder, grid, **dims):
    """A released checkpoint: trained at the row's crop, so its position grid is crop/patch."""
    shapes = encoder_shapes(d, prefix='encoder.', grid=grid, **dims)
    if decoder == 'linear':
        shapes.update({'decoder.head.weight': (150, d), 'decoder.head.bias': (150,)})
        return shapes
    shapes.update({'decoder.cls_emb': (1, 150, d), 'decoder.proj_dec.weight': (d, d),
                   'decoder.proj_dec.bias': (d,), 'decoder.proj_patch': (d, d),
                   'decoder.proj_classes': (d, d), 'decoder.decoder_norm.weight': (d,),
                   'decoder.decoder_norm.bias': (d,), 'decoder.mask_norm.weight': (150,),
                   'decoder.mask_norm.bias': (150,)})
    for i in range(2):
        shapes.update(_block(f'decoder.blocks.{i}.', d, 4 * d))
    return shapes


def random_state(shapes, generator):
    return {k: torch.randn(s, generator=generator) * 0.05 + (1.0 if 'norm' in k and
            k.endswith('weight') else 0.0) for k, s in shapes.items()}


def _ln(x, sd, key):
    return F.layer_norm(x, x.shape[-1:], sd[f'{key}.weight'], sd[f'{key}.bias'], eps=1e-5)


def _official_block(x, sd, p, heads):
    b, n, c = x.shape
    qkv = F.linear(_ln(x, sd, p + 'norm1'), sd[p + 'attn.qkv.weight'], sd[p + 'attn.qkv.bias'])
    q, k, v = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    attn = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(-1)
    y = (attn @ v).transpose(1, 2).reshape(b, n, c)
    x = x + F.linear(y, sd[p + 'attn.proj.weight'], sd[p + 'attn.proj.bias'])
    h = F.gelu(F.linear(_ln(x, sd, p + 'norm2'), sd[p + 'mlp.fc1.weight'], sd[p + 'mlp.fc1.bias']))
    return x + F.linear(h, sd[p + 'mlp.fc2.weight'], sd[p + 'mlp.fc2.bias'])


def official_forward(sd, image, pos_side, d, layers, heads, patch, distilled, decoder):
    """The official Segmenter at token resolution (eval mode), from the formulas; its
    position embedding is a ``pos_side`` x ``pos_side`` grid."""
    b = image.shape[0]
    x = F.conv2d(image, sd['encoder.patch_embed.proj.weight'],
                 sd['encoder.patch_embed.proj.bias'], stride=patch)
    gh, gw = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    names = ['cls_token', 'dist_token'] if distilled else ['cls_token']
    extra = torch.cat([sd[f'encoder.{t}'] for t in names], 1)
    pos = sd['encoder.pos_embed']
    grid = pos[:, len(names):].reshape(1, pos_side, pos_side, d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(gh, gw), mode='bilinear', align_corners=False)
    pos = torch.cat([pos[:, :len(names)], grid.flatten(2).transpose(1, 2)], 1)
    x = torch.cat([extra.expand(b, -1, -1), x], 1) + pos
    for i in range(layers):
        x = _official_block(x, sd, f'encoder.blocks.{i}.', heads)
    x = _ln(x, sd, 'encoder.norm')[:, len(names):]
    if decoder == 'linear':
        out = F.linear(x, sd['decoder.head.weight'], sd['decoder.head.bias'])
    else:
        x = F.linear(x, sd['decoder.proj_dec.weight'], sd['decoder.proj_dec.bias'])
        x = torch.cat([x, sd['decoder.cls_emb'].expand(b, -1, -1)], 1)
        for i in range(2):
            x = _official_block(x, sd, f'decoder.blocks.{i}.', d // 64)
        x = _ln(x, sd, 'decoder.decoder_norm')
        patches = F.normalize(x[:, :-150] @ sd['decoder.proj_patch'], dim=-1)
        classes = F.normalize(x[:, -150:] @ sd['decoder.proj_classes'], dim=-1)
        out = _ln(patches @ classes.transpose(1, 2), sd, 'decoder.mask_norm')
    return out.transpose(1, 2).reshape(b, 150, gh, gw)


@pytest.mark.parametrize('row', ROWS, ids=lambda r: r.id)
def test_official_checkpoint_converts_with_no_missing_or_extra_key(row):
    cfg, dims = _dims(row)
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
    assert ours.shape == theirs.shape == (1, 150, 64 // row.patch_size, 96 // row.patch_size)
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
    _, dims = _dims(row)
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
