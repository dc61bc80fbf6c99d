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
    layout_only: bool = option(False, help='folders, pairs and counts only (no file is decoded)')
    workers: int | None = option(None, minimum=1, metavar='N',
                                 help='processes decoding files (default: one per core)')


def check_data(options: CheckDataOptions) -> int:
    from ..assets.data import DEFAULT_ADE20K_ROOT, check_files, check_layout, unpack
    root = options.data_root or Path(os.environ.get('ADE20K_ROOT', DEFAULT_ADE20K_ROOT))
    try:
        if options.zip:
            root = unpack(options.zip, root.parent)
            print(f'unpacked {options.zip} -> {root}')
        found = (check_layout(root) if options.layout_only
                 else check_files(root, workers=options.workers))
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
    return 0


COMMAND = Command('check-data', 'verify an ADE20K folder (or unpack the official zip first): '
                  'counts, pairs, readable files, labels', CheckDataOptions, check_data)
