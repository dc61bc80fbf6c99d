"""The datasets a table trains on, as data (``experiments/datasets.yaml``), validated on load.

A dataset is declared once: its classes and label convention, the folder layout mmseg reads
with the file counts of each split, the authors' recipe for it (crop, test scale, sliding
window, schedule, batch, learning rate) and how the synthetic smoke copy is named. The data
checks, the synthetic data, the plan and the recipe tests read it from here; a malformed
declaration is one line naming the dataset and the field (:class:`SpecError`).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import yaml

from .errors import SpecError
from .layout import REPO_ROOT

DATASETS_FILE = REPO_ROOT / 'experiments' / 'datasets.yaml'
DEFAULT_DATASET = 'ade20k'  # what a table spec without `dataset:` trains on
SPLITS = ('training', 'validation')
DATASET_KEYS = ('title', 'about', 'get', 'mmseg_type', 'classes', 'reduce_zero_label',
                'ignore_index', 'label_max', 'folder', 'root_env', 'default_root', 'layout',
                'recipe', 'synthetic')
LAYOUT_KEYS = ('image_suffix', 'label_suffix', 'nested', 'companions', 'splits')
SPLIT_KEYS = ('images', 'labels', 'list', 'count')
RECIPE_KEYS = ('crop', 'test_scale', 'slide', 'epochs', 'iterations', 'batch', 'lr')
SLIDE_KEYS = ('crop', 'stride')
SYNTHETIC_KEYS = ('classes', 'seam', 'names', 'counts')


@dataclasses.dataclass(frozen=True)
class Split:
    images: str  # folder of the images, relative to the dataset root
    labels: str  # folder of the label maps
    list: str | None  # a file naming the split's images (one stem a line); None: every image
    count: int  # images of the split in the complete dataset


@dataclasses.dataclass(frozen=True)
class Recipe:
    crop: int
    test_scale: tuple[int, int]  # mmseg's Resize scale of the test image (long, short)
    slide_crop: int
    slide_stride: int
    epochs: int
    iterations: int
    batch: int
    lr: float


@dataclasses.dataclass(frozen=True)
class Synthetic:
    classes: tuple[int, ...]  # label values the scenes show
    seam: int  # label value of the seams between cells (ignored after the label convention)
    names: dict[str, str]  # per split: a file name pattern of `index` (without suffix)
    counts: dict[str, int]  # per split: images of the smoke copy


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    about: str  # what the dataset is, for the line that says it is missing
    get: str  # how to get it
    mmseg_type: str
    classes: int
    reduce_zero_label: bool
    ignore_index: int
    label_max: int  # the largest value a label file may hold besides ignore_index
    folder: str  # the dataset root's usual folder name
    root_env: str  # the environment variable naming the root
    default_root: str  # relative to the repository root
    image_suffix: str
    label_suffix: str
    nested: bool  # images and labels sit in subfolders of the split folders (Cityscapes' cities)
    companions: tuple[str, ...]  # suffixes of files allowed beside the labels
    splits: dict[str, Split]
    recipe: Recipe
    synthetic: Synthetic

    @property
    def counts(self) -> dict[str, int]:
        return {name: split.count for name, split in self.splits.items()}

    @property
    def folders(self) -> tuple[str, ...]:
        """The folders (and split lists) whose files are the dataset, each once."""
        found = []  # images, then labels, then lists (the order file-list digests take them in)
        for kind in ('images', 'labels', 'list'):
            for split in self.splits.values():
                folder = getattr(split, kind)
                if folder is not None and folder not in found:
                    found.append(folder)
        return tuple(found)

    def root(self) -> Path:
        """The real dataset's root: ``$<root_env>``, else the default under the repository."""
        return Path(os.environ.get(self.root_env, REPO_ROOT / self.default_root))

    def missing(self, path: Path) -> str:
        """The one line for a dataset that is not there: what it is and how to get it."""
        return f'{self.title} not found: no {path} ({self.about}; {self.get})'


def _flag(fields, field: str) -> bool:
    """A true/false field (the spec's typed access refuses booleans as numbers)."""
    if field not in fields.data:
        fields.fail(field, 'missing')
    if not isinstance(fields.data[field], bool):
        fields.fail(field, f'expected true or false, got {fields.data[field]!r}')
    return fields.data[field]


def _parse(name: str, data) -> Dataset:
    from .spec import _Fields  # the spec's typed field access, one line per failure
    where = f'{DATASETS_FILE.relative_to(REPO_ROOT)}: dataset {name!r}'
    f = _Fields(data, where, keys=DATASET_KEYS)
    lf = f.sub('layout', LAYOUT_KEYS)
    sf = lf.sub('splits', SPLITS)
    splits = {}
    for split in SPLITS:
        one = sf.sub(split, SPLIT_KEYS)
        splits[split] = Split(one.get('images', str), one.get('labels', str),
                              one.get('list', str, optional=True), one.get('count', int))
    rf = f.sub('recipe', RECIPE_KEYS)
    scale = rf.get('test_scale', list)
    if len(scale) != 2 or not all(isinstance(v, int) and v > 0 for v in scale):
        rf.fail('test_scale', f'expected [long, short] in pixels, got {scale!r}')
    slide = rf.sub('slide', SLIDE_KEYS)
    recipe = Recipe(rf.get('crop', int), tuple(scale), slide.get('crop', int),
                    slide.get('stride', int), rf.get('epochs', int), rf.get('iterations', int),
                    rf.get('batch', int), float(rf.get('lr', (int, float))))
    yf = f.sub('synthetic', SYNTHETIC_KEYS)
    names, counts = yf.sub('names', SPLITS), yf.sub('counts', SPLITS)
    label_max = f.get('label_max', int)
    classes = tuple(yf.get('classes', list))
    if not classes or any(not isinstance(c, int) or not 0 <= c <= label_max for c in classes):
        yf.fail('classes', f'expected label values in 0..{label_max}, got {list(classes)!r}')
    synthetic = Synthetic(classes, yf.get('seam', int),
                          {s: names.get(s, str) for s in SPLITS},
                          {s: counts.get(s, int) for s in SPLITS})
    return Dataset(
        name=name, title=f.get('title', str), about=f.get('about', str), get=f.get('get', str),
        mmseg_type=f.get('mmseg_type', str), classes=f.get('classes', int),
        reduce_zero_label=_flag(f, 'reduce_zero_label'),
        ignore_index=f.get('ignore_index', int), label_max=label_max,
        folder=f.get('folder', str), root_env=f.get('root_env', str),
        default_root=f.get('default_root', str),
        image_suffix=lf.get('image_suffix', str), label_suffix=lf.get('label_suffix', str),
        nested=_flag(lf, 'nested'), companions=tuple(lf.get('companions', list)),
        splits=splits, recipe=recipe, synthetic=synthetic)


@functools.cache
def datasets() -> dict[str, Dataset]:
    """Every declared dataset by name, validated."""
    try:
        data = yaml.safe_load(DATASETS_FILE.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SpecError(f'{DATASETS_FILE.relative_to(REPO_ROOT)}: cannot read: '
                        f'{str(err).splitlines()[0]}') from None
    if not isinstance(data, dict) or not data:
        raise SpecError(f'{DATASETS_FILE.relative_to(REPO_ROOT)}: expected a mapping of datasets')
    return {name: _parse(name, entry) for name, entry in data.items()}


def dataset(name: str = DEFAULT_DATASET) -> Dataset:
    found = datasets()
    if name not in found:
        raise SpecError(f"unknown dataset '{name}' (datasets: {', '.join(found)})")
    return found[name]


def layout_of(root: Path) -> Dataset:
    """The declared dataset whose folders ``root`` holds (ADE20K's when none is there): what
    the contents files and a job's dataset identity list, for a root met without its table."""
    root = Path(root)
    for candidate in datasets().values():
        split = candidate.splits['training']
        if (root / split.images).is_dir() and (root / split.labels).is_dir():
            return candidate
    return dataset()
