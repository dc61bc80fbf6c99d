"""ADE20K checks (``make data``): the folder a full run trains on, verified before it starts.

Each defect is reported as one line naming the file; the first one found stops the check.
``unpack`` extracts the official ``ADEChallengeData2016.zip`` first, into a temporary folder
renamed into place, so an interrupted unpack leaves nothing half-written behind.
"""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..layout import REPO_ROOT

DEFAULT_ADE20K_ROOT = REPO_ROOT / 'data' / 'ade' / 'ADEChallengeData2016'
ADE20K_COUNTS = {'training': 20210, 'validation': 2000}
NUM_CLASSES = 150  # label values 0 (other, ignored) .. 150


class DataError(ValueError):
    """A defect of the dataset folder; the message is one line naming the file."""


def _pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    images_dir, labels_dir = root / 'images' / split, root / 'annotations' / split
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise DataError(f'missing folder: {folder}')
    images = {p.stem: p for p in images_dir.iterdir() if p.suffix == '.jpg'}
    labels = {p.stem: p for p in labels_dir.iterdir() if p.suffix == '.png'}
    for stem in sorted(images.keys() - labels.keys()):
        raise DataError(f'image without annotation: {images[stem]} '
                        f'(expected {labels_dir / (stem + ".png")})')
    for stem in sorted(labels.keys() - images.keys()):
        raise DataError(f'annotation without image: {labels[stem]}')
    return [(images[s], labels[s]) for s in sorted(images)]


def check_layout(root: Path, counts: dict[str, int] = ADE20K_COUNTS) -> dict[str, int]:
    """Folders, pairing and counts (fast: no file is decoded)."""
    found = {}
    for split, expected in counts.items():
        found[split] = len(_pairs(Path(root), split))
        if found[split] != expected:
            raise DataError(f'{Path(root) / "images" / split}: {found[split]} images, '
                            f'expected {expected}')
    return found


def _decode(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise DataError(f'unreadable file: {path} ({str(err).splitlines()[0]})') from None


def check_files(root: Path, counts: dict[str, int] = ADE20K_COUNTS) -> dict[str, int]:
    """``check_layout``, then every image and annotation is decoded and every label checked."""
    found = check_layout(root, counts)
    for split in counts:
        for image_path, label_path in _pairs(Path(root), split):
            size = _decode(image_path).size
            label = np.asarray(_decode(label_path))
            if label.ndim != 2 or label.shape[::-1] != size:
                raise DataError(f'annotation shape {label.shape} does not match its image '
                                f'{size[::-1]}: {label_path}')
            if label.max() > NUM_CLASSES:
                raise DataError(f'label {int(label.max())} out of range 0..{NUM_CLASSES}: '
                                f'{label_path}')
    return found


def unpack(zip_path: Path, data_dir: Path) -> Path:
    """Extract ``ADEChallengeData2016.zip`` into ``data_dir``; return the dataset folder."""
    target = Path(data_dir) / 'ADEChallengeData2016'
    if target.exists():
        raise DataError(f'{target} exists: remove it to unpack again, or check it as it is')
    try:
        archive = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as err:
        raise DataError(f'cannot open {zip_path}: {err}') from None
    tmp = Path(data_dir) / '.ADEChallengeData2016.unpacking'
    shutil.rmtree(tmp, ignore_errors=True)
    with archive:
        archive.extractall(tmp)
    inner = tmp / 'ADEChallengeData2016'
    if not inner.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f'{zip_path} has no ADEChallengeData2016/ folder')
    inner.rename(target)
    shutil.rmtree(tmp, ignore_errors=True)
    return target
