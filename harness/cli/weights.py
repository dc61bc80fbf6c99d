"""``weights``: download, verify and convert the pretrained weights each row starts from."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .common import Tables, WeightsRoot
from .options import Command, OptionError, option


@dataclasses.dataclass(frozen=True, kw_only=True)
class WeightsOptions(WeightsRoot, Tables):
    source: Path | None = option(None, flag='--from', metavar='FILE',
                                 help='convert this local release instead of downloading it')
    originals: Path | None = option(None, metavar='DIR',
                                    help='folder of downloaded (unconverted) releases, looked '
                                         'up and downloaded into by name (default: $WEIGHTS_DIR '
                                         'or weights/original)')
    url_base: str | None = option(None, help='download from a mirror: this URL + the path of '
                                             "the spec's URL")
    timeout: float = option(60.0, minimum=0.0, metavar='S',
                            help='seconds without data before a download gives up')


def weights(options: WeightsOptions) -> int:
    from ..assets.weights import DEFAULT_ORIGINALS, install_rows
    selected = options.selected_rows()
    if options.source is not None and len({r.pretrained_file for r in selected}) != 1:
        raise OptionError('--from FILE converts one release: select the row(s) it belongs to '
                          'with --rows')
    originals = options.originals or Path(os.environ.get('WEIGHTS_DIR') or
                                          options.weights_root / DEFAULT_ORIGINALS)
    failures = install_rows(selected, options.weights_root, originals, options.source,
                            options.url_base, options.timeout)
    return 1 if failures else 0


COMMAND = Command('weights', 'download, verify and convert the pretrained weights each row '
                  'starts from, into its pretrained.file', WeightsOptions, weights)
