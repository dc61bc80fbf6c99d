"""``check-data``: verify a dataset folder against its declared layout (or unpack the official
ADE20K zip first)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..core.datasets import DEFAULT_DATASET, dataset, datasets
from ..core.errors import DataError
from .options import Command, OptionError, Options, option


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckDataOptions(Options):
    dataset: str = option(DEFAULT_DATASET, choices=tuple(datasets()),
                          help='the declared dataset (experiments/datasets.yaml) the folder '
                               'holds')
    data_root: Path | None = option(None, metavar='DIR', help="the dataset's folder (default: "
                                    '$ADE20K_ROOT or data/ade/ADEChallengeData2016, '
                                    '$PASCAL_CONTEXT_ROOT or data/VOCdevkit/VOC2010, '
                                    '$CITYSCAPES_ROOT or data/cityscapes)')
    zip: Path | None = option(None, metavar='FILE',
                              help='ADE20K: ADEChallengeData2016.zip to unpack beside it')
    convert: bool = option(False, help='Cityscapes: first make the missing '
                           '*_gtFine_labelTrainIds.png files from the *_gtFine_polygons.json '
                           'ones (needs cityscapesscripts)')
    layout_only: bool = option(False, help='folders, pairs and counts only (no file is decoded, '
                               'hashed or written)')
    workers: int | None = option(None, minimum=1, metavar='N',
                                 help='processes decoding files (default: one per core)')


def check_data(options: CheckDataOptions) -> int:
    from ..assets.data import check_and_hash, check_layout, make_train_ids, unpack
    declared = dataset(options.dataset)
    root = options.data_root or declared.root()
    if options.zip and declared.name != DEFAULT_DATASET:
        raise OptionError(f'--zip unpacks the official ADE20K zip; {declared.title}: '
                          f'{declared.get}')
    if options.convert and declared.name != 'cityscapes':
        raise OptionError(f'--convert makes Cityscapes\' train-id labels; {declared.title}: '
                          f'{declared.get}')
    files = None
    try:
        if options.convert:
            made = make_train_ids(root, declared, options.workers)
            print(f'made {made} train-id label files in {root}')
        if options.zip:
            root = unpack(options.zip, root.parent)
            print(f'unpacked {options.zip} -> {root}')
        if options.layout_only:
            found = check_layout(root, declared=declared)
        else:
            found, files = check_and_hash(root, workers=options.workers, declared=declared)
    except DataError as err:
        if err.count == 1:
            raise
        for defect in err.defects:  # every defect on stdout, the verdict on stderr
            print(f'  {defect}')
        more = err.count - len(err.defects)
        if more:
            print(f'  ... and {more} more')
        raise DataError([f'{err.count} defects in {root} (listed above); the first: '
                         f'{err.defects[0]}']) from None
    what = 'layout' if options.layout_only else 'every file decoded, labels in range'
    print(f'{declared.title} ok: {root} ({found["training"]} training, '
          f'{found["validation"]} validation images; {what})')
    if files is None:
        return 0
    from ..assets.contents import contents_digest, write_contents
    try:  # the hashes beside the data
        where = f'kept in {write_contents(root, files)}'
    except OSError as err:  # a root that takes no file: said, never an error (the check passed)
        where = (f'not kept: {root} takes no file ({err.strerror}), so jobs record no contents '
                 'digest')
    print(f'contents {contents_digest(files)[:16]} of {len(files)} files {where}')
    return 0


COMMAND = Command('check-data', 'verify a dataset folder (ADE20K: or unpack the official zip '
                  'first): counts, pairs, split lists, stray files, readable files, labels; '
                  "keeps every file's SHA-256 beside the data (what jobs record and `verify "
                  "--contents` compares)", CheckDataOptions, check_data)
