"""Key layouts and shapes of the real releases, and an independent forward of the official model.

``official_shapes`` is the layout of the authors' ``segm/model`` checkpoints (``encoder.*`` ViT,
``decoder.*`` DecoderLinear/MaskTransformer), ``encoder_shapes`` that of timm/DeiT releases;
``official_forward`` is a plain-torch forward of the official architecture written from its
formulas, so a conversion that maps a key to the wrong place, or forgets a transpose, changes
the output.
"""
import torch
import torch.nn.functional as F

from harness.core.request import JobRequest as JobSpec
from harness.prepare.job_config import build_config

PRETRAINED_GRID = 24  # all releases are 384 px


def row_dims(row):
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
