"""``convert-official``: an authors' released Segmenter checkpoint into this project's model."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..core.layout import OFFICIAL_CHECKPOINTS
from ..core.spec import available_tables, load_table
from .options import Command, Options, option


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConvertOptions(Options):
    """A release file and the row it belongs to (shared by both converters)."""
    checkpoint: Path = option(positional=True, help='the release file (.pth)')
    table: str = option(help=f"the table of the row ({', '.join(available_tables())}, or a "
                             "spec's path)")
    row: str = option(help='the row id')
    out: Path | None = option(None, metavar='FILE',
                              help='where to write (default: checkpoints/official/<row>.pth)')


def convert_official(options: ConvertOptions) -> int:
    from ..assets.convert import convert_official_checkpoint
    row = load_table(options.table).row(options.row)
    out = options.out or OFFICIAL_CHECKPOINTS / f'{row.id}.pth'
    print(convert_official_checkpoint(options.checkpoint, row, out))
    return 0


COMMAND = Command('convert-official', "convert an authors' released Segmenter checkpoint.pth "
                  "into this project's model (checks: no missing/unexpected key)",
                  ConvertOptions, convert_official)
