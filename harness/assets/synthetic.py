"""A small synthetic dataset in the exact folder layout of a declared dataset
(``experiments/datasets.yaml``), for smoke runs and tests.

ADE20K's: ``ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_{train,val}_
XXXXXXXX`` (.jpg images, .png label maps with 0 = "other"/ignored and 1..150 = the ADE20K
classes, which mmseg's ``reduce_zero_label`` maps to 255 and 0..149); Cityscapes' and Pascal
Context's as mmseg reads them (a folder per city; split lists), with their label values. Scenes
are Voronoi partitions whose cells each show one class in a class-specific colour and stripe
texture, so a tiny model learns them in tens of iterations; the seams between cells carry the
dataset's ignored value. Generated once into a cache folder, atomically.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.atomic import move_into_place, temporary_name
from ..core.datasets import Dataset, dataset
from ..core.layout import REPO_ROOT
from .contents import dataset_files, hash_file, write_contents

ADE20K = dataset('ade20k')
SCENE_CLASSES = ADE20K.synthetic.classes  # ADE20K label values (1-based)
SPLITS = {'training': ('train', 40), 'validation': ('val', 16)}


def default_root(declared: Dataset) -> Path:
    """Where the smoke copy of ``declared`` is generated on first use."""
    return REPO_ROOT / '.cache' / f'synthetic_{declared.name}' / declared.folder

# ``real`` size: images as large as the dataset's own, for rehearsing the full profile's
# pipeline, crops and sliding windows at their real cost. A few dozen images: the pipeline's cost
# is per image, not per dataset.
ADE20K_SHORT_SIDE = (480, 512)  # most ADE20K images: 512; some a little smaller
ADE20K_ASPECTS = (4 / 3, 3 / 4, 1.0, 1.5, 16 / 9, 2 / 3)  # long/short of ADE20K's common shapes
ADE20K_SIZED_SPLITS = {'training': ('train', 24), 'validation': ('val', 4)}
# (height, width) in turn: VOC2010's photos have a long side of 500, mostly 500x375 or 500x333,
# landscape more often than portrait; Cityscapes' frames are all 2048x1024
REAL_SHAPES = {'pascal_context': ((375, 500), (333, 500), (500, 375), (375, 500), (500, 333)),
               'cityscapes': ((1024, 2048),)}
# images per split: a real batch of training images (Pascal Context's 16) and a few to evaluate;
# Cityscapes' frames are 4x ADE20K's pixels, its batch 8
REAL_COUNTS = {'ade20k': {split: count for split, (_, count) in ADE20K_SIZED_SPLITS.items()},
               'pascal_context': {'training': 24, 'validation': 4},
               'cityscapes': {'training': 8, 'validation': 2}}
SIZES = ('smoke', 'real')
COMPLETE_MARK = '.complete'


def sized_root(declared: Dataset) -> Path:
    """Where the real-size copy of ``declared`` is generated on first use."""
    return REPO_ROOT / '.cache' / f'synthetic_{declared.name}_sized' / declared.folder


def real_shape(declared: Dataset, rng: np.random.Generator, index: int) -> tuple[int, int]:
    """(height, width) of the ``index``-th real-size image of ``declared``."""
    if declared.name == ADE20K.name:
        return _ade20k_shape(rng, index)
    shapes = REAL_SHAPES[declared.name]
    return shapes[index % len(shapes)]


def _class_styles(rng: np.random.Generator, classes: tuple[int, ...] = SCENE_CLASSES,
                  ) -> dict[int, tuple[np.ndarray, float, float]]:
    """Each scene class gets a colour, a stripe angle and a stripe period."""
    styles = {}
    for i, label in enumerate(classes):
        hue = i / len(classes)
        colour = 255 * np.array([0.5 + 0.4 * np.cos(2 * np.pi * (hue + k / 3)) for k in range(3)])
        styles[label] = (colour, rng.uniform(0, np.pi), rng.choice([4.0, 6.0, 9.0]))
    return styles


def _ade20k_shape(rng: np.random.Generator, index: int) -> tuple[int, int]:
    """(height, width) of the ``index``-th ADE20K-sized image: the aspects in turn (landscape
    and portrait), the short side mostly 512."""
    aspect = ADE20K_ASPECTS[index % len(ADE20K_ASPECTS)]
    short = int(rng.choice(ADE20K_SHORT_SIDE, p=(0.25, 0.75)))
    long = int(round(short * max(aspect, 1 / aspect)))
    return (short, long) if aspect >= 1 else (long, short)


def _scene(rng: np.random.Generator, styles, shape: tuple[int, int] | None = None,
           classes: tuple[int, ...] = SCENE_CLASSES, seam: int = 0,
           ) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape or rng.integers(96, 161, size=2)
    yy, xx = np.mgrid[0:h, 0:w]
    # cells a few dozen pixels across at either size: the smoke crops see several classes
    cells = rng.integers(3, 6) if shape is None else rng.integers(12, 25)
    seeds = rng.uniform((0, 0), (h, w), size=(cells, 2))
    # the nearest seed and the two smallest distances, one seed at a time: a (h, w, cells)
    # array is gigabytes at Cityscapes' 2048x1024 (ties go to the first seed, as argmin's)
    best, second = np.full((h, w), np.inf), np.full((h, w), np.inf)
    cell = np.zeros((h, w), dtype=np.int64)
    for k, (sy, sx) in enumerate(seeds):
        dist = (yy - sy) ** 2 + (xx - sx) ** 2
        closer = dist < best
        second = np.where(closer, best, np.minimum(second, dist))
        cell = np.where(closer, k, cell)
        best = np.where(closer, dist, best)
    cell_labels = rng.choice(classes, size=len(seeds))
    label = cell_labels[cell].astype(np.uint8)
    image = np.zeros((h, w, 3))
    for c, lab in enumerate(cell_labels):
        colour, angle, period = styles[int(lab)]
        stripes = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
        mask = cell == c
        image[mask] = colour + 35 * stripes[mask, None]
    # thin seams between cells, ignored by the loss and the metric (ADE20K's "other", 0)
    label[np.sqrt(second) - np.sqrt(best) < 1.5] = seam
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def check_root(root: Path) -> bool:
    """Whether ``root`` holds a complete synthetic dataset; refuses a folder that holds
    anything else (it is never written over). Writes nothing."""
    root = Path(root)
    if (root / COMPLETE_MARK).is_file():
        return True
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f'{root} exists but is not a complete synthetic dataset '
                              f'(no {COMPLETE_MARK}); move it away or pass another --data-root')
    return False


def _write(tmp: Path, declared: Dataset, split: str, index: int, image: np.ndarray,
           label: np.ndarray) -> None:
    """One image and its label map where the layout puts them (a split list names the
    image)."""
    layout, stem = declared.splits[split], declared.synthetic.names[split].format(index=index)
    image_path = tmp / layout.images / f'{stem}{declared.image_suffix}'
    label_path = tmp / layout.labels / f'{stem}{declared.label_suffix}'
    for path in (image_path, label_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(image_path, **({'quality': 95} if image_path.suffix == '.jpg'
                                               else {}))
    Image.fromarray(label).save(label_path)
    if layout.list is not None:
        (tmp / layout.list).parent.mkdir(parents=True, exist_ok=True)
        with open(tmp / layout.list, 'a') as listed:
            listed.write(f'{stem}\n')


def ensure_dataset(root: Path | str | None = None, seed: int = 0, size: str = 'smoke',
                   declared: Dataset = ADE20K) -> Path:
    """Return ``root``, generating the dataset first if it is not complete there; ``size``:
    ``smoke`` (images of 96-160 pixels, the default root :func:`default_root`) or ``real``
    (the dataset's own image sizes, :func:`sized_root`)."""
    if size not in SIZES:
        raise ValueError(f"unknown synthetic size '{size}' (sizes: {', '.join(SIZES)})")
    sized = size != 'smoke'
    root = Path(root or (sized_root(declared) if sized else default_root(declared)))
    if check_root(root):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(root)
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(seed)
    fake = declared.synthetic
    styles = _class_styles(rng, fake.classes)
    counts = REAL_COUNTS[declared.name] if sized else fake.counts
    for split, count in counts.items():
        for i in range(1, count + 1):
            image, label = _scene(rng, styles, real_shape(declared, rng, i - 1) if sized else None,
                                  fake.classes, fake.seam)
            _write(tmp, declared, split, i, image, label)
    # its contents as `check-data` keeps them, so smoke jobs record a contents digest too
    write_contents(tmp, {name: hash_file(tmp / name)[0] for name in dataset_files(tmp)},
                   written_by='the synthetic dataset generator')
    (tmp / COMPLETE_MARK).write_text(f'seed={seed} size={size}\n')
    if root.exists():
        root.rmdir()  # empty folder left by someone; a full one was refused above
    try:
        move_into_place(tmp, root)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not (root / COMPLETE_MARK).is_file():
            raise
    return root
