"""Pretrained weights: fetch the release each row starts from, verify it, convert it
(docs/reproduce.md, "2. Pretrained weights"). A file already there is never replaced; a failure
leaves nothing partial.
"""
from __future__ import annotations

import hashlib
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..core.atomic import atomic_path
from ..core.errors import ConversionError, WeightsError
from ..core.hashing import sha256_file
from ..core.layout import shown
from ..core.spec import Row
from .contents import progress_bar

DEFAULT_ORIGINALS = Path('weights') / 'original'  # relative to the weights root
CHUNK = 1 << 20


def original_name(row: Row) -> str:
    """File name of the unconverted release in the originals folder. Hub files are all called
    ``pytorch_model.bin``, so the name is the release id (plus the download's suffix)."""
    suffix = Path(row.pretrained_url or '').suffix or '.pth'
    return Path(row.pretrained_id or row.id).name + suffix


def release_url(row: Row, url_base: str | None) -> str | None:
    """The row's download URL; with ``url_base``, the same path on a mirror."""
    if row.pretrained_url is None or not url_base:
        return row.pretrained_url
    path = urllib.parse.urlsplit(row.pretrained_url).path
    return url_base.rstrip('/') + path


def download(url: str, dest: Path, timeout: float) -> str:
    """Download ``url`` to ``dest`` (through ``dest.partial``); return its SHA-256. Nothing is
    left at either path when it fails, whatever stops it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={'User-Agent': 'segmenter-repro-harness'})
    with atomic_path(dest) as partial, urllib.request.urlopen(request, timeout=timeout) \
            as response, open(partial, 'wb') as out, progress_bar('bytes') as progress:
        size = response.headers.get('Content-Length')
        task = progress.add_task(dest.name, total=int(size) if size else None)
        for chunk in iter(lambda: response.read(CHUNK), b''):
            digest.update(chunk)
            out.write(chunk)
            progress.advance(task, len(chunk))
    return digest.hexdigest()


def check_against_row(state: dict, row: Row, target: dict | None = None) -> None:
    """Every key of the row's encoder present with its shape; the position embedding only
    needs the width (it is resized from the release's 384 grid when loaded). ``target``: the
    encoder's state dict when the caller has built the model already."""
    if target is None:  # the row's encoder as the full profile builds it (random init)
        from ..prepare.model import build_model
        target = build_model(row, 'full').backbone.state_dict()
    missing = [k for k in target if k not in state]
    extra = [k for k in state if k not in target]
    if missing or extra:
        raise ConversionError(f'not a {row.backbone}/{row.patch_size} release: '
                              f'{len(missing)} missing keys {missing[:3]}, '
                              f'{len(extra)} unexpected keys {extra[:3]}')
    for key, value in target.items():
        got = tuple(state[key].shape)
        if (got[-1:] != tuple(value.shape)[-1:] if key == 'pos_embed'
                else got != tuple(value.shape)):
            raise ConversionError(f'not a {row.backbone}/{row.patch_size} release: {key} has '
                                  f'shape {got}, the row needs {tuple(value.shape)}')


def convert_into(source: Path, row: Row, out: Path) -> int:
    """Convert the release ``source`` into ``out`` (atomically; never replacing a file).
    Returns the number of tensors written."""
    import pickle

    import torch

    from .convert import convert_pretrained_vit, save_new
    try:  # restricted unpickling: a downloaded file runs no code while loading
        checkpoint = torch.load(source, map_location='cpu', weights_only=True)
        state, _ = convert_pretrained_vit(checkpoint)
        check_against_row(state, row)
    except (OSError, RuntimeError, pickle.UnpicklingError, ConversionError, AttributeError) as err:
        raise WeightsError(f'{row.table}/{row.id}: {source} is not a usable release: '
                           f'{str(err).strip().splitlines()[0] if str(err).strip() else err!r}'
                           ) from None
    if out.exists():
        raise WeightsError(f'{out} exists: remove it to convert again')
    save_new(out, state)
    return len(state)


def install_row(row: Row, weights_root: Path, originals: Path, source: Path | None = None,
                url_base: str | None = None, timeout: float = 60.0,
                out: Path | None = None) -> str:
    """Put the row's converted weights at ``out`` (default ``weights_root/pretrained.file``);
    return what was done (one line). Raises :class:`WeightsError` with one line naming the
    file, the expected hash and where to put the release."""
    tag = f'{row.table}/{row.id}'
    out = Path(out or Path(weights_root) / row.pretrained_file)
    if out.exists():
        return f'{tag}: {shown(out)} present, kept'
    expected = row.pretrained_sha256
    original = Path(originals) / original_name(row)
    where = (f'put the release at {shown(original)} or pass --from FILE' if row.pretrained_id
             else f'no public release matches this row: supply your own file with '
                  f'`python -m harness weights --table {row.table} --rows {row.id} --from FILE`')
    downloaded = False
    if source is None and original.is_file():
        source = original
    if source is None:
        url = release_url(row, url_base)
        if url is None:
            raise WeightsError(f'{tag}: {row.pretrained_file} needs a user-supplied file '
                               f'({where})')
        print(f'{tag}: downloading {url} -> {shown(original)}', flush=True)
        try:
            got = download(url, original, timeout)
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, 'reason', None) or err
            raise WeightsError(f'{tag}: cannot download {url}: {reason} (expected sha256 '
                               f'{expected or "unknown"}; {where})') from None
        source, downloaded = original, True
    else:
        if not Path(source).is_file():
            raise WeightsError(f'{tag}: no file {source}')
        got = sha256_file(source, cache=None)
    if expected and got != expected:
        if downloaded:  # a wrong download is not kept; a user's own file is left alone
            original.unlink(missing_ok=True)
        raise WeightsError(f'{tag}: sha256 mismatch for {source}: got {got}, expected '
                           f'{expected}; nothing written ({where})')
    try:
        count = convert_into(Path(source), row, out)
    except WeightsError:
        if downloaded and not expected:  # an unverified download that is no release
            original.unlink(missing_ok=True)
        raise
    verified = ('verified' if expected else
                f'NOT verified: the spec has no hash; pin it as pretrained.sha256 of {row.id} '
                f'in {shown(row.spec_path) if row.spec_path else row.table}')
    return (f'{tag}: {shown(source)} sha256 {got} ({verified}) -> {shown(out)} '
            f'({count} tensors)')


def install_rows(rows: list[Row], weights_root: Path, originals: Path,
                 source: Path | None = None, url_base: str | None = None,
                 timeout: float = 60.0) -> list[str]:
    """Install every row's weights (rows sharing a file once); print one line per row, an
    ``error:`` line for each failure. Returns the failures."""
    import sys
    failures, done = [], set()
    for row in rows:
        if row.pretrained_file in done:
            continue
        done.add(row.pretrained_file)
        try:
            print(install_row(row, weights_root, originals, source, url_base, timeout),
                  flush=True)
        except WeightsError as err:
            print(f'error: {err}', file=sys.stderr, flush=True)
            failures.append(str(err))
    return failures


RELEASE_GRID = 24  # every release the rows start from is a 384-pixel model: 24 x 24 patches


def release_shapes(row: Row) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the release ``row`` starts from, in its own layout (timm / DeiT names,
    the 384-pixel position grid, the ImageNet classifiers), from the row's encoder config."""
    from ..core.request import JobRequest
    from ..prepare.job_config import build_config
    backbone = build_config(JobRequest(row=row, profile='full', seed=0, work_dir=None,
                                       data_root=None)).model.backbone
    d, patch = backbone.embed_dims, backbone.patch_size
    hidden = int(d * backbone.get('mlp_ratio', 4))
    tokens = ['cls_token'] + (['dist_token'] if backbone.type == 'DistilledVisionTransformer'
                              else [])
    heads = ['head'] + (['head_dist'] if 'dist_token' in tokens else [])
    weights = {'patch_embed.proj': (d, 3, patch, patch), 'norm': (d,),
               **{h: (1000, d) for h in heads}}
    for i in range(backbone.num_layers):
        weights.update({f'blocks.{i}.{name}': shape for name, shape in (
            ('norm1', (d,)), ('attn.qkv', (3 * d, d)), ('attn.proj', (d, d)), ('norm2', (d,)),
            ('mlp.fc1', (hidden, d)), ('mlp.fc2', (d, hidden)))})
    shapes = {t: (1, 1, d) for t in tokens}
    shapes['pos_embed'] = (1, len(tokens) + RELEASE_GRID ** 2, d)
    for name, shape in weights.items():  # each bias has its weight's output size
        shapes.update({f'{name}.weight': shape, f'{name}.bias': shape[:1]})
    return shapes


def write_random_release(row: Row, path: Path, seed: int = 0) -> Path:
    """A stand-in for the row's release: its exact key layout and shapes, random values (what a
    rehearsal converts and loads instead of the downloaded file). DeiT's files wrap the state
    in ``model``; the timm hub files are the bare state."""
    import torch

    from .convert import save_new
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in release_shapes(row).items():
        value = torch.randn(shape, generator=generator) * 0.02  # ViT's init scale
        # LayerNorm scales around 1, as trained ones are
        state[key] = value + 1 if key.endswith(('norm1.weight', 'norm2.weight',
                                                'norm.weight')) else value
    save_new(path, {'model': state} if 'dist_token' in state else state)
    return path
