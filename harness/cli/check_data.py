"""``check-data``: verify an ADE20K folder (or unpack the official zip first)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..core.errors import DataError
from .options import Command, Options, option


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckDataOptions(Options):
    data_root: Path | None = option(None, metavar='DIR', help='ADEChallengeData2016 folder '
                                    '(default: $ADE20K_ROOT or data/ade/ADEChallengeData2016)')
    zip: Path | None = option(None, metavar='FILE',
                              help='ADEChallengeData2016.zip to unpack beside it')
    layout_only: bool = option(False, help='folders, pairs and counts only (no file is decoded, '
                               'hashed or written)')
    workers: int | None = option(None, minimum=1, metavar='N',
                                 help='processes decoding files (default: one per core)')


def _keep_contents(root: Path, files: dict[str, dict]) -> str:
    """Write the hashes beside the data; a dataset root that takes no file is said in the
    returned phrase, never an error (the check itself passed)."""
    from ..assets.contents import contents_digest, write_contents
    try:
        path = write_contents(root, files)
    except OSError as err:
        return (f'contents {contents_digest(files)[:16]} of {len(files)} files not kept: '
                f'{root} takes no file ({err.strerror}), so jobs record no contents digest')
    return f'contents {contents_digest(files)[:16]} of {len(files)} files kept in {path}'


def check_data(options: CheckDataOptions) -> int:
    from ..assets.data import DEFAULT_ADE20K_ROOT, check_and_hash, check_layout, unpack
    root = options.data_root or Path(os.environ.get('ADE20K_ROOT', DEFAULT_ADE20K_ROOT))
    files = None
    try:
        if options.zip:
            root = unpack(options.zip, root.parent)
            print(f'unpacked {options.zip} -> {root}')
        if options.layout_only:
            found = check_layout(root)
        else:
            found, files = check_and_hash(root, workers=options.workers)
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
    print(f'ADE20K ok: {root} ({found["training"]} training, {found["validation"]} validation '
          f'images; {what})')
    if files is not None:
        print(_keep_contents(root, files))
    return 0


COMMAND = Command('check-data', 'verify an ADE20K folder (or unpack the official zip first): '
                  "counts, pairs, readable files, labels; keeps every file's SHA-256 beside the "
                  'data (what jobs record and `verify --contents` compares)', CheckDataOptions,
                  check_data)
