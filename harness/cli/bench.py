"""``bench``: time our row models against stock mmseg (training step, sliding-window
evaluation, harness overhead)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..core.layout import BENCH
from ..core.profiles import PRECISIONS
from .common import parse_rows
from .options import Command, Options, OptionError, option


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchOptions(Options):
    device: str = option('cpu', help='cpu (reduced sizes) or cuda (512x512 Seg-B/16 and '
                                     'Seg-B†-Mask/16)')
    repeats: int = option(5, minimum=1, metavar='N',
                          help='measured training steps of each side (split among --rounds, '
                               'rounded up) and evaluation passes')
    warmup: int = option(2, minimum=0, metavar='N', help='unmeasured steps first')
    rounds: int = option(3, minimum=1, metavar='N',
                         help='training: alternate fresh stock and ours processes this many '
                              'times, --repeats steps split among them')
    amp: str | None = option(None, choices=tuple(p for p in PRECISIONS if p != 'tf32'),
                             help='also time our training step under mixed precision')
    compile: bool = option(False, help='torch.compile our model')
    tf32: bool = option(False, help='also time our fp32 step with TF32 matmuls (GPU)')
    profile: bool = option(False, help='add the top operators of one training step of ours')
    rows: list[str] | None = option(None, parse=parse_rows, metavar='ROWS', repeat=True,
                                    help="bench cases by row id, comma-separated, repeatable "
                                         "(default: the device's cases; "
                                         'seg-t-mask-16: a 64-pixel case that checks the bench '
                                         'end to end in seconds)')
    slide_batch: int = option(8, minimum=1, metavar='N', help='windows per forward')
    overhead: bool = option(True, flag='--no-overhead',
                            help='skip the harness-vs-bare-Runner smoke job timing')
    out: Path = option(BENCH, metavar='DIR',
                       help='where the results are written (bench.json, bench.md)')

    def check(self):
        super().check()
        if self.device.startswith('cuda'):
            import torch
            if not torch.cuda.is_available():
                raise OptionError(f'--device {self.device}: no CUDA device visible to torch '
                                  f'{torch.__version__}')


def bench(options: BenchOptions) -> int:
    from ..measure.bench import run_bench
    from ..measure.bench_result import print_ratios
    run = run_bench(device=options.device, rows=options.rows, repeats=options.repeats,
                    warmup=options.warmup, rounds=options.rounds, amp=options.amp,
                    tf32=options.tf32, compile_model=options.compile,
                    slide_batch=options.slide_batch, overhead=options.overhead,
                    profile=options.profile, out=options.out)
    print(f"bench: {options.out / 'bench.md'}")
    print_ratios(run)
    return 0


COMMAND = Command('bench', 'time our row models against stock mmseg (training step, '
                  'sliding-window evaluation, harness overhead)', BenchOptions, bench)
