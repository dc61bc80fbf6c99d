"""``rehearse``: each row's full-profile job at its real size for a few iterations."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..core.layout import REHEARSAL_WORK_ROOT, REHEARSALS
from ..measure.rehearsal_result import DEFAULT_ITERS
from .common import Precision, Tables, cuda_available
from .options import Command, OptionError, option


@dataclasses.dataclass(frozen=True, kw_only=True)
class RehearseOptions(Precision, Tables):
    device: str = option('cpu', choices=('cpu', 'cuda'), help='where the jobs run')
    iters: int = option(DEFAULT_ITERS, minimum=2, metavar='N',
                        why=' (the first iteration is the warm-up)',
                        help='training iterations per row (the first is the warm-up)')
    batch: int | None = option(None, minimum=1, metavar='B',
                               help="per-GPU batch instead of the real one (the dataset's: "
                                    'ADE20K 8, Pascal Context 16, Cityscapes 8), for a device '
                                    'the real one does not fit; memory at the real batch is then '
                                    'not measured')
    multi_scale: bool = option(False, help='also time the multi-scale + flip evaluation')
    data_root: Path | None = option(None, metavar='DIR',
                                    help="a synthetic dataset at the rows' dataset's image "
                                         'sizes, for rows of one dataset (default: generated '
                                         'once per dataset into .cache/synthetic_<dataset>_sized/)')
    work_root: Path = option(REHEARSAL_WORK_ROOT, metavar='DIR',
                             help="the rehearsal's job folders and converted weights (replaced "
                                  'row by row; checkpoints deleted once measured)')
    resume: bool = option(True, flag='--no-resume',
                          help='skip the resume from the checkpoint (e.g. when rehearsing '
                               'again in another precision)')
    keep_checkpoints: bool = option(False, help="keep each row's checkpoints (deleted once "
                                                'measured by default)')
    out: Path = option(REHEARSALS, metavar='DIR',
                       help='where the results are written (rehearsal.json, rehearsal.md)')

    def check(self):
        super().check()
        if self.device == 'cuda' and not cuda_available():
            raise OptionError('--device cuda: no CUDA device visible to torch')
        self.check_device(self.device == 'cuda')


def rehearse(options: RehearseOptions) -> int:
    import warnings
    # mmengine imports pkg_resources, whose deprecation notice would sit among the rows' lines
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)
    from ..measure.rehearse import rehearse as rehearse_rows
    run = rehearse_rows(rows=options.selected_rows(), device=options.device, amp=options.amp,
                        iters=options.iters, batch=options.batch,
                        multi_scale=options.multi_scale, work_root=options.work_root,
                        out=options.out, data_root=options.data_root,
                        keep_checkpoints=options.keep_checkpoints, resume=options.resume)
    print(f"rehearsal: {options.out / 'rehearsal.md'} ({len(run.rows) - len(run.failed)} of "
          f"{len(run.rows)} rows rehearsed)")
    return 1 if run.failed else 0


COMMAND = Command('rehearse', "each row's full-profile job at its real size for a few "
                  "iterations (synthetic data at its dataset's image sizes, random weights in "
                  'the release layout): train, resume, evaluate, measured', RehearseOptions,
                  rehearse)
