"""The bench's result: one run per device kind (``cpu``, ``gpu``) in ``bench.json``, and
``bench.md`` rendered from all of them, so a GPU run and a CPU run sit side by side.

Fields that some runs lack are the measurements a run leaves out by choice (AMP, TF32, the
profile, the overhead) and those the GPU run on record predates (rounds, the multi-scale
evaluation, the compute floor, page faults); that run is this format too.
"""
from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Literal

from ..core.profiles import TOTAL_BATCH
from .measurement_files import Record, load, save

FORMAT = 1
NAME = 'bench'


@dataclasses.dataclass(frozen=True)
class Case:
    table: str
    row: str
    crop: int  # training crop = sliding window
    batch: int  # training images per step
    image: tuple[int, int]  # evaluation image (ADE20K-like: short side = crop)
    images: int  # evaluation images

    @property
    def name(self) -> str:
        return f'{self.row}@{self.crop}'


class Spread(Record):
    min: float
    median: float
    max: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> 'Spread':
        return cls(min=min(values), median=statistics.median(values), max=max(values),
                   n=len(values))

    def __str__(self) -> str:
        return f'{self.median:.3f} s ({self.min:.3f}-{self.max:.3f})'


class Training(Record):
    """Training steps of one variant: seconds, peak memory, the eval-mode loss of the batch."""
    seconds: Spread
    images_per_s: float
    peak_memory_mb: float
    memory_kind: str
    loss_eval_mode: float
    times: list[float] | None = None
    page_faults: list[int] | None = None
    kernel_seconds: list[float] | None = None
    round_medians: list[float] | None = None


class EvalSide(Record):
    seconds: Spread
    images_per_s: float


class Evaluation(Record):
    """Sliding-window evaluation, stock against ours, and how far their outputs differ."""
    stock: EvalSide
    ours: EvalSide
    windows_per_image: int
    slide_batch: int
    max_abs_logit_diff: float
    argmax_equal: bool
    multi_scale: bool = False
    argmax_agreement: float | None = None


class Floor(Record):
    step_gflop: float
    gemm_gflop_per_s: float
    floor_seconds: float
    gemm_shape: list[int]


class CaseResult(Record):
    case: Case
    train_stock: Training
    train_ours: Training
    eval: Evaluation
    ratios: dict[str, float | list[float]]  # stock / ours; train_step_by_round: one a round
    train_ours_amp: Training | None = None
    train_ours_tf32: Training | None = None
    eval_ms: Evaluation | None = None
    floor: Floor | None = None
    profile_ours: str | None = None


class HookTimes(Record):
    train_seconds: float
    iterations: int
    hooks: dict[str, float]  # seconds per hook class, largest first


class FullJob(Record):
    row: str
    step_seconds: float
    iterations: int
    fixed_share: float


class Overhead(Record):
    """A smoke job through the harness against the same job on a bare mmengine Runner."""
    harness: Spread
    bare: Spread
    ratio: float
    iteration_seconds: dict[str, Spread]
    iteration_ratio: float
    iteration_ratio_min: float
    iterations: int
    hook_seconds: dict[str, HookTimes]
    hooks_share: float
    hooks_share_without_checkpoints: float
    fixed_seconds: float
    full_job: FullJob | None = None


class BenchMachine(Record):
    python: str
    torch: str
    cpu: str
    cpu_count: int
    threads: int
    mmcv: str
    mmengine: str
    mmseg: str
    gpu: str | None = None

    @classmethod
    def of(cls, device: str) -> 'BenchMachine':
        """This machine, from the harness's one description of it."""
        from ..launch.provenance import hardware, package_versions
        hw, v = hardware(), package_versions()
        return cls(python=v['python'], torch=v['torch'], cpu=hw['cpu'],
                   cpu_count=hw['cpu_count'], threads=hw['torch_threads'], mmcv=v['mmcv'],
                   mmengine=v['mmengine'], mmseg=v['mmsegmentation'],
                   gpu=hw['gpus'][0] if device.startswith('cuda') and hw['gpus'] else None)


class BenchRun(Record):
    device: str
    date: str
    command: str
    machine: BenchMachine
    amp: str | None
    compile: bool
    repeats: int
    warmup: int
    cases: list[CaseResult] = []
    tf32: bool = False
    rounds: int | None = None  # None: one process a side, no rounds
    steps_per_round: int | None = None
    harness_overhead: Overhead | None = None
    note: str | None = None
    format: Literal[FORMAT] = FORMAT

    @property
    def kind(self) -> str:
        return 'gpu' if self.device.startswith('cuda') else 'cpu'


def load_bench(out: Path) -> dict[str, BenchRun]:
    """{device kind: run} of ``<out>/bench.json`` in the current format."""
    return load(out / f'{NAME}.json', BenchRun, depth=0, command='bench')


def write_bench(run: BenchRun, out: Path) -> None:
    """File ``run`` under its device kind (replacing that kind's run) and render the report."""
    runs = load_bench(out)
    runs[run.kind] = run
    save(out, NAME, runs, markdown(runs))


def markdown(runs: dict[str, BenchRun]) -> str:
    return '# Benchmark: our row models vs stock mmseg 1.2.2\n\n' + '\n'.join(
        _section(runs[kind]) for kind in ('gpu', 'cpu') if kind in runs)


def _by_round(ratios: dict) -> str:
    """The ratio of each round's medians, when there was more than one round."""
    each = ratios.get('train_step_by_round', [])
    return f" (rounds: {', '.join(f'{r:.2f}' for r in each)})" if len(each) > 1 else ''


def _section(run: BenchRun) -> str:
    m = run.machine
    if run.rounds is not None:
        method = (f'Training: median (min-max) of {run.rounds} rounds × {run.steps_per_round} '
                  f'steps, each round one fresh process per variant ({run.warmup} warm-up steps '
                  'first), the order reversed every other round; evaluation: of '
                  f'{run.repeats} repeats. ')
    else:
        method = (f'Median (min-max) of {run.repeats} repeats after {run.warmup} warm-up '
                  'steps. ')
    lines = [f'## {m.gpu or m.cpu} ({run.device})', '',
             f'`{run.command}`, {run.date}.' + (f' {run.note}' if run.note else ''), '',
             f'torch {m.torch}, mmcv {m.mmcv}, mmengine {m.mmengine}, mmseg {m.mmseg}, Python '
             f'{m.python}, {m.cpu_count} CPUs ({m.threads} threads). ' + method
             + f"AMP: {run.amp or 'off (fp32)'}; torch.compile: "
             f"{'on' if run.compile else 'off'}. Same weights on both sides; loss = eval-mode "
             'loss of one fixed batch before training.', '',
             '| case | stock step | ours step | ratio | stock mem | ours mem | loss stock / ours |',
             '| --- | --- | --- | --- | --- | --- | --- |']
    for c in run.cases:
        s, o = c.train_stock, c.train_ours
        lines.append(f'| {c.case.row} {c.case.batch}×{c.case.crop}² | {s.seconds} | '
                     f"{o.seconds} | **{c.ratios['train_step']:.2f}×**{_by_round(c.ratios)} | "
                     f'{s.peak_memory_mb:.0f} MB | {o.peak_memory_mb:.0f} MB | '
                     f'{s.loss_eval_mode:.5f} / {o.loss_eval_mode:.5f} |')
        for variant, label, ratio, loss in (
                (c.train_ours_amp, f'{run.amp} autocast', f'train_step_{run.amp}',
                 '(fp32 loss as above) |'),
                (c.train_ours_tf32, 'fp32 with TF32 matmuls', 'train_step_tf32', None)):
            if variant is not None:
                lines.append(f'| ↳ ours, {label} | | {variant.seconds} | '
                             f'**{c.ratios[ratio]:.2f}×** | | {variant.peak_memory_mb:.0f} MB | '
                             + (loss or f'{variant.loss_eval_mode:.5f} |'))
    for c in run.cases:
        s, o = c.train_stock, c.train_ours
        if s.page_faults is not None:
            lines += ['', f'Kernel time per training step of {c.case.row} (median; mostly '
                      "zeroing fresh pages on first touch, which moves with the machine's "
                      f'memory traffic): stock {statistics.median(s.kernel_seconds):.2f} s '
                      f'({statistics.median(s.page_faults) / 1e3:.0f} k page faults), ours '
                      f'{statistics.median(o.kernel_seconds):.2f} s '
                      f'({statistics.median(o.page_faults) / 1e3:.0f} k).']
    for c in run.cases:
        if (f := c.floor) is not None:
            shape = '×'.join(map(str, f.gemm_shape))
            lines += ['', f'Compute floor of {c.case.row} (fp32 training step): '
                      f'{f.step_gflop:.0f} GFLOP of matmuls at {f.gemm_gflop_per_s:.0f} '
                      f"GFLOP/s (this machine's best fp32 GEMM rate, {shape}) = "
                      f'{f.floor_seconds:.3f} s. Even with everything else free, fp32 code here '
                      f"cannot beat stock by more than **{c.ratios['train_step_ceiling']:.2f}×**."]
    lines += ['', '| eval case | windows/image | stock | ours (windows/forward) | ratio | '
              'max logit diff | argmax agreement |', '| --- | --- | --- | --- | --- | --- | --- |']
    for c in run.cases:
        for e, ratio in ((c.eval, 'eval'), (c.eval_ms, 'eval_multi_scale')):
            if e is None:
                continue
            scales = 'multi-scale + flip (12 views)' if e.multi_scale else 'single-scale'
            agreement = (f'{100 * e.argmax_agreement:.4f}%' if e.argmax_agreement is not None
                         else 'all equal' if e.argmax_equal else 'not all equal')
            lines.append(f'| {c.case.row} {c.case.images} × {c.case.image[0]}×{c.case.image[1]}'
                         f', {scales} | {e.windows_per_image} | {e.stock.seconds} | '
                         f'{e.ours.seconds} ({e.slide_batch}) | **{c.ratios[ratio]:.2f}×** | '
                         f'{e.max_abs_logit_diff:.2e} | {agreement} |')
    if run.harness_overhead is not None:
        lines += _overhead_lines(run.harness_overhead)
    for c in run.cases:
        if c.profile_ours:
            lines += ['', f'Top operators of one training step of ours ({c.case.row}, '
                      f"{run.amp or 'fp32'}):", '', '```', c.profile_ours.strip(), '```']
    memory = run.cases[0].train_stock.memory_kind if run.cases else ''
    lines += ['', f'Memory: {memory}' + (' (includes the interpreter and libraries: compare '
                                         'the columns, not the absolute figures).'
                                         if 'RSS' in memory else '.'), '']
    return '\n'.join(lines)


def _overhead_lines(h: Overhead) -> list[str]:
    i = h.iteration_seconds
    ours, bare = h.hook_seconds['harness'], h.hook_seconds['bare']
    top = ', '.join(f'{name} {sec:.3f} s' for name, sec in list(ours.hooks.items())[:4])
    lines = ['', 'Harness overhead, one smoke job through `harness run` vs a bare mmengine '
             "Runner on the same model, data and schedule without the harness's hooks and W&B "
             'logging:', '',
             f'- whole process: {h.harness} vs {h.bare} = **{100 * (h.ratio - 1):+.1f}%**',
             f"- per training iteration (logged, median of all intervals): {i['harness']} vs "
             f"{i['bare']} = **{100 * (h.iteration_ratio - 1):+.1f}%**; fastest interval "
             f'{100 * (h.iteration_ratio_min - 1):+.1f}%',
             f'- inside the training loop (a stopwatch on every hook and W&B call, '
             f'{ours.iterations} iterations, 2 validations, 5 checkpoints): '
             f'{sum(ours.hooks.values()):.3f} s with the harness vs '
             f'{sum(bare.hooks.values()):.3f} s bare, in a {bare.train_seconds:.1f} s `train()` '
             f'= **{100 * h.hooks_share:+.1f}%**, of which '
             f'{100 * h.hooks_share_without_checkpoints:+.1f}% outside checkpoint saving, which '
             'the smoke profile does every 20 iterations (the full recipe: every 8000) '
             f'(largest: {top})',
             f'- fixed cost per job: {h.fixed_seconds:.1f} s (the whole-process difference less '
             f'{h.iterations} × the per-iteration one: the CLI process, the pre-launch config '
             'check, the W&B run, fingerprints). On a full 160k-iteration job it is paid once.']
    if (f := h.full_job) is not None:
        lines.append(f'- the fixed cost against a full job: at most '
                     f'**{100 * f.fixed_share:.4f}%** ({f.iterations} iterations of this run\'s '
                     f'{f.step_seconds:.3f} s training step of ours, {f.row}; the full recipe\'s '
                     f'batch of {TOTAL_BATCH} makes a real job longer)')
    return lines


def print_ratios(run: BenchRun) -> None:
    """The run's ratios, a line each (what ``bench`` prints when it is done)."""
    for c in run.cases:
        for name, ratio in c.ratios.items():
            if name == 'train_step_by_round':
                continue
            what = ('fp32 ceiling (stock / compute floor)' if name == 'train_step_ceiling'
                    else f'{name} ours/stock speed')
            print(f'{c.case.row}: {what} {ratio:.2f}x'
                  + (_by_round(c.ratios) if name == 'train_step' else ''))
    if (h := run.harness_overhead) is not None:
        print(f'harness overhead {100 * (h.ratio - 1):+.1f}% a smoke job, '
              f'{100 * (h.iteration_ratio - 1):+.1f}% per training iteration, '
              f'{h.fixed_seconds:.1f} s fixed per job, '
              f'{100 * h.hooks_share:+.1f}% measured inside the loop')
