"""ADE20K checks (``make data``): the folder a full run trains on, verified before it starts.

Every defect is one line naming the file; a check goes on past the first and lists them all
(the first ``MAX_LISTED`` of them) in :class:`DataError`. Files are decoded in parallel, one
process per core, behind a progress bar, and hashed from the same bytes (``check_and_hash``:
what ``check-data`` keeps beside the data, :mod:`.contents`). A missing dataset is reported the
same helpful way whichever check meets it first (``require_folders``). ``unpack`` extracts the
official ``ADEChallengeData2016.zip`` (its ``ADEChallengeData2016/`` at the top or deeper) into a
temporary folder renamed into place, so an interrupted unpack leaves nothing half-written.
"""
from __future__ import annotations

import io
import multiprocessing
import os
import shutil
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..core.atomic import move_into_place
from ..core.errors import DataError
from ..core.layout import REPO_ROOT
from .contents import dataset_files, hash_file

MAX_LISTED = DataError.MAX_LISTED  # defects kept (and printed) per check; the rest counted

DEFAULT_ADE20K_ROOT = REPO_ROOT / 'data' / 'ade' / 'ADEChallengeData2016'
ADE20K_COUNTS = {'training': 20210, 'validation': 2000}
NUM_CLASSES = 150  # label values 0 (other, ignored) .. 150
DATASET_FOLDER = 'ADEChallengeData2016'
ADE20K_URL = 'http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip'


def missing_dataset(folder: Path) -> str:
    """The one line for a dataset that is not there: what ADE20K is and how to get it."""
    return (f'ADE20K not found: no {folder} (the scene-parsing benchmark of the paper, '
            f'ADEChallengeData2016: 20,210 training + 2,000 validation images, 150 classes; '
            f'download {ADE20K_URL} and run `make data ZIP=/path/to/ADEChallengeData2016.zip`, '
            'or point ADE20K_ROOT= at an existing ADEChallengeData2016 folder)')


def require_folders(root: Path, splits=tuple(ADE20K_COUNTS)) -> None:
    """The four folders of the ADE20K layout exist; else the helpful one line."""
    for split in splits:
        for kind in ('images', 'annotations'):
            folder = Path(root) / kind / split
            if not folder.is_dir():
                raise DataError([missing_dataset(folder)])


def require_files(root: Path, splits=tuple(ADE20K_COUNTS)) -> None:
    """The folders of ``splits`` each hold a file of their kind (an image, an annotation): the
    four folders there but empty would pass :func:`require_folders`, and the job would fail
    seconds after its start. Fast: each folder is read up to its first such file."""
    empty = [folder for split in splits
             for folder, suffix in ((Path(root) / 'images' / split, '.jpg'),
                                    (Path(root) / 'annotations' / split, '.png'))
             if not any(p.suffix == suffix for p in folder.iterdir())]
    if empty:
        raise DataError([f"ADE20K folder{'s' if len(empty) > 1 else ''} without any file: "
                         f"{', '.join(map(str, empty))} (unpack the dataset there with `make "
                         'data ZIP=/path/to/ADEChallengeData2016.zip`, or point ADE20K_ROOT= '
                         'at a complete copy; `make data` checks every file)'])


def _pairs(root: Path, split: str, defects: list[str]) -> list[tuple[Path, Path]]:
    """(image, annotation) pairs of a split; unpaired files are added to ``defects``."""
    images_dir, labels_dir = root / 'images' / split, root / 'annotations' / split
    images = {p.stem: p for p in images_dir.iterdir() if p.suffix == '.jpg'}
    labels = {p.stem: p for p in labels_dir.iterdir() if p.suffix == '.png'}
    defects += [f'image without annotation: {images[stem]} '
                f'(expected {labels_dir / (stem + ".png")})'
                for stem in sorted(images.keys() - labels.keys())]
    defects += [f'annotation without image: {labels[stem]}'
                for stem in sorted(labels.keys() - images.keys())]
    return [(images[s], labels[s]) for s in sorted(images.keys() & labels.keys())]


def _layout(root: Path, counts: dict[str, int], defects: list[str]) -> tuple[dict, list]:
    root = Path(root)
    require_folders(root, tuple(counts))
    found, pairs = {}, []
    for split, expected in counts.items():
        images = len(list((root / 'images' / split).glob('*.jpg')))
        split_pairs = _pairs(root, split, defects)
        found[split] = len(split_pairs)
        if images != expected:
            defects.append(f'{root / "images" / split}: {images} images, expected {expected}')
        pairs += split_pairs
    return found, pairs


def check_layout(root: Path, counts: dict[str, int] | None = None) -> dict[str, int]:
    """Folders, pairing and counts (``counts``: ADE20K's by default; fast: no file is
    decoded). Returns the pairs per split."""
    defects: list[str] = []
    found, _ = _layout(root, ADE20K_COUNTS if counts is None else counts, defects)
    if defects:
        raise DataError(defects)
    return found


def _decode(data: bytes, path: Path) -> Image.Image:
    """The image of ``path`` from its bytes, read once (they are hashed too)."""
    try:
        opened = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:  # PIL names the buffer: name the file, as from the path
        raise UnidentifiedImageError(f'cannot identify image file {str(path)!r}') from None
    with opened as image:
        image.load()
        return image


def check_pair(pair: tuple[Path, Path]) -> list[str]:
    """The defects of one image and its annotation (both decoded, labels checked)."""
    return _check_and_hash(pair)[0]


def _check_and_hash(pair: tuple[Path, Path]) -> tuple[list[str], dict[Path, dict]]:
    """:func:`check_pair`, and each file's size, time and SHA-256 from the bytes decoded."""
    image_path, label_path = pair
    defects, size, label, hashed = [], None, None, {}
    for path in pair:
        try:
            hashed[path], data = hash_file(path)
            decoded = _decode(data, path)
        except (OSError, UnidentifiedImageError, SyntaxError) as err:
            defects.append(f'unreadable file: {path} ({str(err).splitlines()[0]})')
            continue
        if path == image_path:
            size = decoded.size
        else:
            label = np.asarray(decoded)
    if label is None:
        return defects, hashed
    if size is not None and (label.ndim != 2 or label.shape[::-1] != size):
        defects.append(f'annotation shape {label.shape} does not match its image '
                       f'{size[::-1]}: {label_path}')
    elif label.size and label.max() > NUM_CLASSES:
        defects.append(f'label {int(label.max())} out of range 0..{NUM_CLASSES}: {label_path}')
    return defects, hashed


def _hash_other(path: Path) -> tuple[list[str], dict[Path, dict]]:
    """A file of the dataset's folders that is no pair's: hashed, not decoded."""
    try:
        return [], {path: hash_file(path)[0]}
    except OSError as err:
        return [f'unreadable file: {path} ({err.strerror})'], {}


def _progress():
    """rich's progress bar on stdout (stderr carries the error line alone); in a log, one
    final line wide enough for every column."""
    import sys

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    return Progress(TextColumn('{task.description}'), BarColumn(), MofNCompleteColumn(),
                    TextColumn('{task.fields[defects]} defects'), TimeElapsedColumn(),
                    TextColumn('left'), TimeRemainingColumn(),
                    console=Console(file=sys.stdout, width=None if sys.stdout.isatty() else 120))


def check_files(root: Path, counts: dict[str, int] | None = None,
                workers: int | None = None) -> dict[str, int]:
    """``check_layout``, then every image and annotation decoded and every label checked, in
    ``workers`` processes (default: one per core); all defects are collected."""
    return check_and_hash(root, counts, workers)[0]


def check_and_hash(root: Path, counts: dict[str, int] | None = None,
                   workers: int | None = None) -> tuple[dict[str, int], dict[str, dict]]:
    """:func:`check_files` (``counts``: ADE20K's by default), and every file of the dataset's
    folders hashed from the bytes it decoded: (pairs per split, {relative path: size,
    mtime_ns, sha256}). Writes nothing."""
    root, counts = Path(root), ADE20K_COUNTS if counts is None else counts
    defects: list[str] = []
    found, pairs = _layout(root, counts, defects)
    workers = max(1, workers or os.cpu_count() or 1)
    hashed: dict[Path, dict] = {}
    # fork: the workers need nothing but this module, and start in milliseconds
    with _progress() as progress, multiprocessing.get_context('fork').Pool(workers) as pool:
        task = progress.add_task(f'decoding {2 * len(pairs)} files', total=len(pairs),
                                 defects=len(defects))
        for found_here, hashed_here in pool.imap(_check_and_hash, pairs, chunksize=16):
            defects += found_here
            hashed.update(hashed_here)
            progress.update(task, advance=1, defects=len(defects))
        paired = {path.relative_to(root).as_posix() for path in hashed}
        others = [root / name for name in dataset_files(root)
                  if name not in paired and (root / name).is_file()]
        for found_here, hashed_here in pool.imap(_hash_other, others, chunksize=16):
            defects += found_here
            hashed.update(hashed_here)
    if defects:
        raise DataError(defects)
    return found, {path.relative_to(root).as_posix(): entry for path, entry in hashed.items()}


def _dataset_prefix(names: list[str]) -> str | None:
    """The archive path of the (shallowest) ``ADEChallengeData2016/`` folder, e.g.
    ``'ADEChallengeData2016/'`` or ``'release/ADEChallengeData2016/'``; None when absent."""
    best = None
    for name in names:
        parts = PurePosixPath(name).parts
        if DATASET_FOLDER in parts:
            depth = parts.index(DATASET_FOLDER)
            if best is None or depth < best[0]:
                best = (depth, '/'.join(parts[:depth + 1]) + '/')
    return None if best is None else best[1]


def unpack(zip_path: Path, data_dir: Path) -> Path:
    """Extract the dataset folder of ``ADEChallengeData2016.zip`` (found by name, at any depth)
    into ``data_dir``; return it. Only that folder's members are extracted, once."""
    from rich.progress import track
    target = Path(data_dir) / DATASET_FOLDER
    if target.exists():
        raise DataError([f'{target} exists: remove it to unpack again, or check it as it is'])
    try:
        archive = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as err:
        raise DataError([f'cannot open {zip_path}: {err}']) from None
    tmp = Path(data_dir) / f'.{DATASET_FOLDER}.unpacking'
    with archive:
        prefix = _dataset_prefix(archive.namelist())
        if prefix is None:  # said before anything is written
            raise DataError([f'{zip_path} has no {DATASET_FOLDER}/ folder'])
        members = [m for m in archive.infolist() if m.filename.startswith(prefix)]
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            for member in track(members, description=f'unpacking {len(members)} files'):
                archive.extract(member, tmp)
            move_into_place(tmp / prefix, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
