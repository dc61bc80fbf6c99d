"""A small synthetic dataset in the exact ADE20K folder layout, for smoke runs and tests.

``ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_{train,val}_XXXXXXXX``
(.jpg images, .png label maps with 0 = "other"/ignored and 1..150 = the ADE20K classes, which
mmseg's ``reduce_zero_label`` maps to 255 and 0..149). Scenes are Voronoi partitions whose cells
each show one class in a class-specific colour and stripe texture, so a tiny model learns them in
tens of iterations. Generated once into a cache folder, atomically.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from ..layout import REPO_ROOT

DEFAULT_ROOT = REPO_ROOT / '.cache' / 'synthetic_ade20k' / 'ADEChallengeData2016'
SCENE_CLASSES = (1, 3, 5, 13, 22, 37, 61, 88, 120, 150)  # ADE20K label values (1-based)
SPLITS = {'training': ('train', 40), 'validation': ('val', 16)}
COMPLETE_MARK = '.complete'


def _class_styles(rng: np.random.Generator) -> dict[int, tuple[np.ndarray, float, float]]:
    """Each scene class gets a colour, a stripe angle and a stripe period."""
    styles = {}
    for i, label in enumerate(SCENE_CLASSES):
        hue = i / len(SCENE_CLASSES)
        colour = 255 * np.array([0.5 + 0.4 * np.cos(2 * np.pi * (hue + k / 3)) for k in range(3)])
        styles[label] = (colour, rng.uniform(0, np.pi), rng.choice([4.0, 6.0, 9.0]))
    return styles


def _scene(rng: np.random.Generator, styles) -> tuple[np.ndarray, np.ndarray]:
    h, w = rng.integers(96, 161, size=2)
    yy, xx = np.mgrid[0:h, 0:w]
    seeds = rng.uniform((0, 0), (h, w), size=(rng.integers(3, 6), 2))
    dist = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    cell = dist.argmin(-1)
    cell_labels = rng.choice(SCENE_CLASSES, size=len(seeds))
    label = cell_labels[cell].astype(np.uint8)
    image = np.zeros((h, w, 3))
    for c, lab in enumerate(cell_labels):
        colour, angle, period = styles[int(lab)]
        stripes = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
        mask = cell == c
        image[mask] = colour + 35 * stripes[mask, None]
    # thin "other" seams between cells, ignored by the loss and the metric like ADE20K's 0
    part = np.sort(dist, -1)
    label[np.sqrt(part[..., 1]) - np.sqrt(part[..., 0]) < 1.5] = 0
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def ensure_dataset(root: Path | str = DEFAULT_ROOT, seed: int = 0) -> Path:
    """Return ``root``, generating the dataset first if it is not complete there."""
    root = Path(root)
    if (root / COMPLETE_MARK).is_file():
        return root
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f'{root} exists but is not a complete synthetic dataset '
                              f'(no {COMPLETE_MARK}); move it away or pass another --data-root')
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f'.{root.name}.tmp-{os.getpid()}'
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(seed)
    styles = _class_styles(rng)
    for split, (prefix, count) in SPLITS.items():
        (tmp / 'images' / split).mkdir(parents=True)
        (tmp / 'annotations' / split).mkdir(parents=True)
        for i in range(1, count + 1):
            image, label = _scene(rng, styles)
            name = f'ADE_{prefix}_{i:08d}'
            Image.fromarray(image).save(tmp / 'images' / split / f'{name}.jpg', quality=95)
            Image.fromarray(label).save(tmp / 'annotations' / split / f'{name}.png')
    (tmp / COMPLETE_MARK).write_text(f'seed={seed}\n')
    if root.exists():
        root.rmdir()  # empty folder left by someone; a full one was refused above
    try:
        tmp.rename(root)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not (root / COMPLETE_MARK).is_file():
            raise
    return root
