"""Checkpoint conversion into the project's mmseg key layout.

Two sources, one block mapping:

- timm / DeiT ViT releases (``blocks.N.attn.qkv.*``, ``patch_embed.proj.*``, ``norm.*``): the
  pretrained encoders the rows start from -> mmseg ``VisionTransformer`` /
  ``DistilledVisionTransformer`` keys, loaded through the backbone's ``init_cfg``.
- the authors' released Segmenter checkpoints (``encoder.*`` as above, ``decoder.*`` of
  ``DecoderLinear`` or ``MaskTransformer``) -> our ``EncoderDecoder`` (``backbone.*``,
  ``decode_head.*``), for evaluating the released models through the same job path.

The image classifiers (``head``, ``head_dist``) have no counterpart and are dropped by name.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import torch

from ..core.atomic import atomic_path
from ..core.errors import ConversionError, StateError, WeightsError
from ..core.spec import Row

# one transformer block: official Segmenter / timm name -> mmseg TransformerEncoderLayer name
# up to the parameter's (nn.MultiheadAttention keeps in_proj_weight and in_proj_bias)
_BLOCK = {
    'norm1': 'ln1.', 'norm2': 'ln2.',
    'attn.qkv': 'attn.attn.in_proj_',  # same [q; k; v] row order, heads contiguous
    'attn.proj': 'attn.attn.out_proj.',
    'mlp.fc1': 'ffn.layers.0.0.', 'mlp.fc2': 'ffn.layers.1.',
}
_CLASSIFIERS = ('head.', 'head_dist.', 'fc_norm.', 'pre_logits.')


def _block_key(index: str, rest: str) -> str:
    module, _, param = rest.rpartition('.')
    if module not in _BLOCK or param not in ('weight', 'bias'):
        raise ConversionError(f'unknown block parameter: {rest}')
    return f'layers.{index}.{_BLOCK[module]}{param}'


def encoder_key(key: str) -> str | None:
    """mmseg ViT key of a timm/official encoder key; None for the dropped classifiers."""
    if key.startswith(_CLASSIFIERS):
        return None
    if key in ('cls_token', 'dist_token', 'pos_embed'):
        return key
    if key.startswith('patch_embed.proj.'):
        return 'patch_embed.projection.' + key.rsplit('.', 1)[1]
    if key.startswith('norm.'):
        return 'ln1.' + key.rsplit('.', 1)[1]
    match = re.fullmatch(r'blocks\.(\d+)\.(.+)', key)
    if match:
        return _block_key(*match.groups())
    raise ConversionError(f'unknown encoder parameter: {key}')


def _unwrap(checkpoint: dict) -> dict:
    for wrapper in ('model', 'state_dict'):
        if wrapper in checkpoint and isinstance(checkpoint[wrapper], dict):
            return checkpoint[wrapper]
    return checkpoint


def convert_pretrained_vit(checkpoint: dict) -> tuple[dict, list[str]]:
    """(mmseg backbone state dict, dropped keys) of a timm/DeiT ViT checkpoint."""
    converted, dropped = OrderedDict(), []  # mmengine's loaders expect an OrderedDict
    for key, value in _unwrap(checkpoint).items():
        new = encoder_key(key)
        if new is None:
            dropped.append(key)
        else:
            converted[new] = value
    return converted, dropped


def _mask_decoder_key(key: str, value: torch.Tensor) -> tuple[str, torch.Tensor]:
    if key in ('proj_patch', 'proj_classes'):
        # official: x @ P; nn.Linear: x @ W.T, so W = P.T
        name = {'proj_patch': 'patch_proj', 'proj_classes': 'classes_proj'}[key]
        return f'decode_head.{name}.weight', value.t().contiguous()
    if key == 'cls_emb':
        return 'decode_head.cls_emb', value
    if key.startswith(('proj_dec.', 'decoder_norm.', 'mask_norm.')):
        module, param = key.split('.')
        return f"decode_head.{'dec_proj' if module == 'proj_dec' else module}.{param}", value
    match = re.fullmatch(r'blocks\.(\d+)\.(.+)', key)
    if match:
        return 'decode_head.' + _block_key(*match.groups()), value
    raise ConversionError(f'unknown mask-decoder parameter: {key}')


def _linear_decoder_key(key: str, value: torch.Tensor) -> tuple[str, torch.Tensor]:
    if key == 'head.weight':  # Linear(d, classes) on tokens == 1x1 conv on the token grid
        return 'decode_head.conv_seg.weight', value[:, :, None, None]
    if key == 'head.bias':
        return 'decode_head.conv_seg.bias', value
    raise ConversionError(f'unknown linear-decoder parameter: {key}')


def convert_official_segmenter(checkpoint: dict, decoder: str) -> tuple[dict, list[str]]:
    """(our EncoderDecoder state dict, dropped keys) of an official Segmenter checkpoint."""
    decoder_key = {'mask': _mask_decoder_key, 'linear': _linear_decoder_key}[decoder]
    converted, dropped = OrderedDict(), []
    for key, value in _unwrap(checkpoint).items():
        part, _, rest = key.partition('.')
        if part == 'encoder':
            new = encoder_key(rest)
            if new is None:
                dropped.append(key)
            else:
                converted['backbone.' + new] = value
        elif part == 'decoder':
            new, value = decoder_key(rest, value)
            converted[new] = value
        else:
            raise ConversionError(f'not an official Segmenter key: {key}')
    return converted, dropped


def load_checkpoint(path: Path) -> dict:
    """A checkpoint file read with restricted unpickling: a file from elsewhere runs no code
    while loading. Raises WeightsError (one line) when it is no readable checkpoint."""
    import pickle
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as err:
        raise WeightsError(f'cannot read checkpoint {path}: {str(err).splitlines()[0]}') from None


def save_new(path: Path, obj) -> None:
    """Write ``obj`` to ``path`` through a temporary file and a rename; an existing file is
    never replaced and a failure leaves nothing behind."""
    path = Path(path)
    if path.exists():
        raise StateError(f'{path} exists: remove it or write elsewhere')
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as f:  # torch names the archive after a path: the same bytes
            torch.save(obj, f)      # whatever temporary name the file is written under


def convert_official_checkpoint(source: Path, row: Row, out: Path) -> str:
    """Convert an authors' released ``checkpoint.pth`` into ``out`` for ``row``, after loading
    it into the row's model with no missing and no unexpected key; returns what was done."""
    from ..prepare.model import build_model
    try:
        state, dropped = convert_official_segmenter(load_checkpoint(source), row.decoder)
    except ConversionError as err:
        raise WeightsError(f'{source}: {err}') from None
    model = build_model(row, 'full')
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a shape that is not the row's architecture
        raise WeightsError(f'{source} is not a {row.model} checkpoint: '
                        f'{str(err).splitlines()[1].strip()}') from None
    if missing or unexpected:
        raise WeightsError(f'{source} as {row.model}: {len(missing)} missing keys '
                        f'{list(missing)[:3]}, {len(unexpected)} unexpected keys '
                        f'{list(unexpected)[:3]}')
    save_new(out, {'state_dict': state, 'meta': {'converted_from': str(source), 'row': row.id,
                                                  'dropped': dropped}})
    return (f'{row.model}: {len(state)} tensors, 0 missing, 0 unexpected, dropped '
            f'{len(dropped)} classifier tensors ({", ".join(dropped) or "none"}) -> {out}')
