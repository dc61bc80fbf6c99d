"""Dataset checks (``make data``, ``check-data``): the folder a full run trains on, verified
before it starts against its declared layout (``experiments/datasets.yaml``), every defect one
line naming the file (docs/reproduce.md, "1. ADE20K"). ``unpack`` extracts into a temporary
folder renamed into place, so an interrupted unpack leaves nothing half-written.
"""
from __future__ import annotations

import functools
import io
import shutil
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..core.atomic import atomic_path, move_into_place
from ..core.errors import DataError
from ..core.datasets import Dataset, dataset
from .contents import dataset_files, hash_file, process_pool, progress_bar

ADE20K = dataset('ade20k')
DATASET_FOLDER = ADE20K.folder  # the official zip's folder, which `unpack` extracts


def require_folders(root: Path, splits=None, declared: Dataset = ADE20K) -> None:
    """The folders (and split lists) of the dataset's layout exist; else the helpful line."""
    for split in declared.splits if splits is None else splits:
        layout = declared.splits[split]
        for folder in (layout.images, layout.labels):
            if not (Path(root) / folder).is_dir():
                raise DataError([declared.missing(Path(root) / folder)])
        if layout.list is not None and not (Path(root) / layout.list).is_file():
            raise DataError([declared.missing(Path(root) / layout.list)])


def _has_file(folder: Path, suffix: str, nested: bool) -> bool:
    entries = folder.rglob(f'*{suffix}') if nested else folder.iterdir()
    return any(p.name.endswith(suffix) for p in entries)


def require_files(root: Path, splits: tuple[str, ...], declared: Dataset) -> None:
    """The folders of ``splits`` each hold a file of their kind (an image, an annotation): the
    folders there but empty would pass :func:`require_folders`, and the job would fail
    seconds after its start. Fast: each folder is read up to its first such file."""
    empty = [Path(root) / folder for split in splits
             for folder, suffix in ((declared.splits[split].images, declared.image_suffix),
                                    (declared.splits[split].labels, declared.label_suffix))
             if not _has_file(Path(root) / folder, suffix, declared.nested)]
    if empty:
        raise DataError([f"{declared.title} folder{'s' if len(empty) > 1 else ''} without any "
                         f"file: {', '.join(map(str, empty))} ({declared.get}; `check-data` "
                         'checks every file)'])


def _by_stem(folder: Path, suffix: str, nested: bool) -> dict[str, Path]:
    """The files of ``folder`` named ``<stem><suffix>`` by stem (a path below the folder
    where the layout nests)."""
    entries = folder.rglob(f'*{suffix}') if nested else folder.iterdir()
    return {p.relative_to(folder).as_posix()[:-len(suffix)]: p for p in entries
            if p.name.endswith(suffix) and p.is_file()}


def _listed(path: Path, defects: list[str]) -> list[str]:
    """The stems a split list names, in order (a repeated one is a defect)."""
    stems, seen = [], set()
    for line in path.read_text().splitlines():
        stem = line.strip()
        if not stem:
            continue
        if stem in seen:
            defects.append(f'{stem} listed twice in {path}')
            continue
        seen.add(stem)
        stems.append(stem)
    return stems


def _pairs(root: Path, split: str, defects: list[str],
           declared: Dataset = ADE20K) -> tuple[int, list[tuple[Path, Path]]]:
    """(images of the split, (image, annotation) pairs); unpaired files are added to
    ``defects``. A split with a list pairs the stems it names; one without, every image."""
    layout = declared.splits[split]
    images_dir, labels_dir = root / layout.images, root / layout.labels
    labels = _by_stem(labels_dir, declared.label_suffix, declared.nested)
    if layout.list is not None:
        listed = _listed(root / layout.list, defects)
        images = {stem: images_dir / f'{stem}{declared.image_suffix}' for stem in listed}
        defects += [f'listed image missing: {images[stem]} (listed in {root / layout.list})'
                    for stem in listed if not images[stem].is_file()]
        images = {stem: path for stem, path in images.items() if path.is_file()}
        labels = {stem: labels[stem] for stem in listed if stem in labels}
        count = len(listed)
    else:
        images = _by_stem(images_dir, declared.image_suffix, declared.nested)
        count = len(images)
    defects += [f'image without annotation: {images[stem]} '
                f'(expected {labels_dir / (stem + declared.label_suffix)})'
                for stem in sorted(images.keys() - labels.keys())]
    if layout.list is None:
        defects += [f'annotation without image: {labels[stem]}'
                    for stem in sorted(labels.keys() - images.keys())]
    return count, [(images[s], labels[s]) for s in sorted(images.keys() & labels.keys())]


def _strays(root: Path, declared: Dataset, defects: list[str]) -> None:
    """Files of the dataset's folders that are neither an image, an annotation, a known
    companion of one, nor (with split lists) an annotation some list names: one line each."""
    allowed = (declared.image_suffix, declared.label_suffix, *declared.companions)
    listed = set()
    for layout in declared.splits.values():
        if layout.list is not None and (root / layout.list).is_file():
            listed |= {line.strip() for line in (root / layout.list).read_text().splitlines()}
    for folder in dict.fromkeys(f for s in declared.splits.values()
                                for f in (s.images, s.labels)):
        here = root / folder
        entries = here.rglob('*') if declared.nested else here.iterdir()
        for path in sorted(entries):
            if declared.nested and path.is_dir():
                continue
            if not path.name.endswith(allowed):
                defects.append(f'unexpected file: {path} (neither a {declared.title} image, '
                               'an annotation nor a known companion of one)')
            elif listed and path.name.endswith(declared.label_suffix) and \
                    path.name[:-len(declared.label_suffix)] not in listed:
                defects.append(f'annotation in no split list: {path}')


def _layout(root: Path, counts: dict[str, int], defects: list[str],
            declared: Dataset = ADE20K) -> tuple[dict, list]:
    root = Path(root)
    require_folders(root, tuple(counts), declared)
    found, pairs = {}, []
    for split, expected in counts.items():
        images, split_pairs = _pairs(root, split, defects, declared)
        found[split] = len(split_pairs)
        if images != expected:
            layout = declared.splits[split]
            where = root / (layout.list or layout.images)
            defects.append(f'{where}: {images} images, expected {expected}')
        pairs += split_pairs
    _strays(root, declared, defects)
    return found, pairs


def check_layout(root: Path, counts: dict[str, int] | None = None,
                 declared: Dataset = ADE20K) -> dict[str, int]:
    """Folders, pairing and counts (``counts``: the dataset's by default; fast: no file is
    decoded). Returns the pairs per split."""
    defects: list[str] = []
    found, _ = _layout(root, declared.counts if counts is None else counts, defects, declared)
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


def _check_and_hash(pair: tuple[Path, Path],
                    declared: Dataset = ADE20K) -> tuple[list[str], dict[Path, dict]]:
    """The defects of one image and its annotation (both decoded, labels checked), and each
    file's size, time and SHA-256 from the bytes decoded."""
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
    elif label.size:
        # files keep the ignore value where the labels are not shifted (ADE20K's ignored
        # "other" is 0 in its files, reduce_zero_label making it 255)
        kept = () if declared.reduce_zero_label else (declared.ignore_index,)
        wrong = label[(label > declared.label_max) & ~np.isin(label, kept)]
        if wrong.size:
            also = f' or {declared.ignore_index}' if kept else ''
            defects.append(f'label {int(wrong.max())} out of range 0..{declared.label_max}'
                           f'{also}: {label_path}')
    return defects, hashed


def _hash_other(path: Path) -> tuple[list[str], dict[Path, dict]]:
    """A file of the dataset's folders that is no pair's: hashed, not decoded."""
    try:
        return [], {path: hash_file(path)[0]}
    except OSError as err:
        return [f'unreadable file: {path} ({err.strerror})'], {}


def check_files(root: Path, counts: dict[str, int] | None = None,
                workers: int | None = None, declared: Dataset = ADE20K) -> dict[str, int]:
    """``check_layout``, then every image and annotation decoded and every label checked, in
    ``workers`` processes (default: one per core); all defects are collected."""
    return check_and_hash(root, counts, workers, declared)[0]


def check_and_hash(root: Path, counts: dict[str, int] | None = None,
                   workers: int | None = None, declared: Dataset = ADE20K,
                   ) -> tuple[dict[str, int], dict[str, dict]]:
    """:func:`check_files` (``counts``: the dataset's by default), and every file of the
    dataset's folders hashed from the bytes it decoded: (pairs per split, {relative path: size,
    mtime_ns, sha256}). Writes nothing."""
    root, counts = Path(root), declared.counts if counts is None else counts
    defects: list[str] = []
    found, pairs = _layout(root, counts, defects, declared)
    hashed: dict[Path, dict] = {}
    with progress_bar('files') as progress, process_pool(workers) as pool:
        task = progress.add_task(f'decoding {2 * len(pairs)} files', total=len(pairs),
                                 defects=len(defects))
        check = functools.partial(_check_and_hash, declared=declared)
        for found_here, hashed_here in pool.imap(check, pairs, chunksize=16):
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
    found = [parts[:parts.index(DATASET_FOLDER) + 1] for parts in
             (PurePosixPath(name).parts for name in names) if DATASET_FOLDER in parts]
    return '/'.join(min(found, key=len)) + '/' if found else None


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


CITYSCAPES_POLYGONS = '_gtFine_polygons.json'
CITYSCAPES_TOOL = ('cityscapesscripts is not installed: `pip install --no-deps -r '
                   'requirements-no-deps.txt` (the Cityscapes team\'s package, on the package '
                   'index; `make install` does it) makes the *_gtFine_labelTrainIds.png files')


def _train_ids(paths: tuple[Path, Path]) -> str | None:
    """One Cityscapes polygon file drawn as a train-id label map (cityscapesscripts'
    ``json2labelImg``, as its ``csCreateTrainIdLabelImgs``); the defect line, or None."""
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2labelImg import createLabelImage
    polygons, label = paths
    try:
        annotation = Annotation()
        annotation.fromJsonFile(str(polygons))
        drawn = createLabelImage(annotation, 'trainIds')
        with atomic_path(label) as tmp:
            drawn.save(tmp, format='PNG')
    except Exception as err:  # noqa: BLE001 - whatever the tool raises, one line for the file
        return f'cannot convert {polygons}: {type(err).__name__}: {str(err).splitlines()[0]}'
    return None


def make_train_ids(root: Path, declared: Dataset, workers: int | None = None) -> int:
    """Cityscapes: each ``*_gtFine_polygons.json`` of the splits without its train-id label map
    gets one (written under a temporary name, then renamed); returns how many were made. A
    missing cityscapesscripts is one line saying how to get it."""
    try:
        import cityscapesscripts.preparation.json2labelImg  # noqa: F401
    except ImportError:
        raise DataError([CITYSCAPES_TOOL]) from None
    require_folders(root, declared=declared)
    todo = []
    for split in declared.splits.values():
        for polygons in sorted((Path(root) / split.labels).rglob(f'*{CITYSCAPES_POLYGONS}')):
            label = polygons.with_name(polygons.name[:-len(CITYSCAPES_POLYGONS)]
                                       + declared.label_suffix)
            if not label.is_file():
                todo.append((polygons, label))
    defects: list[str] = []
    with progress_bar('files') as progress, process_pool(workers) as pool:
        task = progress.add_task(f'converting {len(todo)} polygon files', total=len(todo),
                                 defects=0)
        for defect in pool.imap(_train_ids, todo, chunksize=8):
            defects += [defect] if defect else []
            progress.update(task, advance=1, defects=len(defects))
    if defects:
        raise DataError(defects)
    return len(todo)
