"""``convert-pretrained``: ``weights --from FILE`` for one row, to its weights path or
``--out``: the same conversion and the same key and shape checks."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..core.layout import REPO_ROOT
from ..core.spec import load_table
from .convert_official import ConvertOptions
from .options import Command, option


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConvertPretrainedOptions(ConvertOptions):
    out: Path | None = option(None, metavar='FILE',
                              help="where to write (default: the row's pretrained.file)")


def convert_pretrained(options: ConvertPretrainedOptions) -> int:
    from ..assets.weights import DEFAULT_ORIGINALS, install_row
    row = load_table(options.table).row(options.row)
    print(install_row(row, REPO_ROOT, REPO_ROOT / DEFAULT_ORIGINALS, source=options.checkpoint,
                      out=options.out))
    return 0


COMMAND = Command('convert-pretrained', 'convert a timm/DeiT ViT release (.pth) into the mmseg '
                  "layout, at the row's weights path (as `weights --from`: every key and shape "
                  "checked against the row's encoder)", ConvertPretrainedOptions,
                  convert_pretrained)
