"""Speed benchmark: the project's row models against stock mmseg 1.2.2, side by side.

For each case (a row, an input size) the same weights go into two models: ours (the row's
config: fused-attention blocks, batched sliding windows) and stock (the same config with
mmseg's own ``VisionTransformer`` / ``SegmenterMaskTransformerHead`` / ``EncoderDecoder``).
Measured: training step time and peak memory (each variant in fresh processes, so the peaks do
not mix, stock and ours alternating over several rounds), single- and multi-scale
sliding-window evaluation time with the logits compared, and the harness's overhead over a
bare mmengine Runner on the same smoke config. Figures are min/median/max over repeats;
``reports/bench/bench.{md,json}`` hold them with the machine
(:mod:`harness.measure.bench_result`).

``python -m harness bench [--device cuda] [--amp bf16] [--compile]`` (``make bench``).
"""
from __future__ import annotations

import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ..core.profiles import FULL_MAX_ITERS
from .bench_cases import (compute_floor, in_child, measure_eval, measure_train, profile_train,
                          select_cases)
from .bench_overhead import harness_overhead
from .bench_result import (BenchMachine, BenchRun, Case, CaseResult, FullJob, Spread, Training,
                           write_bench)


def train_rounds(case: Case, device: str, variants: dict, rounds: int, per_round: int,
                 warmup: int, compile_model: bool) -> dict[str, Training]:
    """Training-step figures of each variant (name -> (stock, precision)): ``per_round``
    steps measured in each of ``rounds`` rounds of one fresh process per variant, the order
    reversed every other round: a slow spell of the machine then falls on both sides instead
    of on whichever ran during it. Each variant's steps of all rounds are pooled; its
    per-round medians are kept so the ratio of each round can be read too."""
    runs = {name: [] for name in variants}
    for round_ in range(rounds):
        order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for name in order:
            stock, precision = variants[name]
            runs[name].append(in_child(measure_train, case, device, stock, per_round,
                                       warmup, precision, compile_model and not stock))
    merged = {}
    for name, results in runs.items():
        times = [t for r in results for t in r.times]
        losses = [r.loss_eval_mode for r in results]
        # same weights, same batch: every process computes the same loss (up to the kernels a
        # GPU library picks); anything more is a different model, which the bench must not time
        if max(losses) - min(losses) > 1e-4 * abs(losses[0]):
            raise RuntimeError(f'{name}: eval-mode loss differs between rounds: {losses}')
        merged[name] = results[0].model_copy(update=dict(
            seconds=Spread.of(times), times=times,
            page_faults=[v for r in results for v in r.page_faults],
            kernel_seconds=[v for r in results for v in r.kernel_seconds],
            images_per_s=case.batch / statistics.median(times),
            peak_memory_mb=max(r.peak_memory_mb for r in results),
            round_medians=[r.seconds.median for r in results]))
    return merged


def bench_case(case: Case, *, device: str, repeats: int, warmup: int, rounds: int,
               amp: str | None, tf32: bool, compile_model: bool, slide_batch: int,
               profile: bool) -> CaseResult:
    """Every measurement of one case, each in fresh processes."""
    print(f'{case.name}: training step, stock and ours alternating, {rounds} rounds ...',
          flush=True)
    variants = {'train_stock': (True, None), 'train_ours': (False, None)}
    if amp:
        variants['train_ours_amp'] = (False, amp)
    if tf32:
        variants['train_ours_tf32'] = (False, 'tf32')
    # repeats training steps a side in all, in whole rounds
    train = train_rounds(case, device, variants, rounds, -(-repeats // rounds), warmup,
                         compile_model)
    print(f'{case.name}: sliding-window evaluation, single- and multi-scale ...', flush=True)
    single = in_child(measure_eval, case, device, repeats, slide_batch, False)
    # 12 views an image: a quarter of the images, fewer repeats
    multi = in_child(measure_eval, dataclasses.replace(case, images=max(1, case.images // 4)),
                     device, max(2, repeats // 3), slide_batch, True)
    floor = in_child(compute_floor, case, device)
    stock_s = train['train_stock'].seconds.median
    ratios = {
        'train_step': stock_s / train['train_ours'].seconds.median,
        'train_step_by_round': [s / o for s, o in zip(train['train_stock'].round_medians,
                                                      train['train_ours'].round_medians)],
        'eval': single.stock.seconds.median / single.ours.seconds.median,
        'eval_multi_scale': multi.stock.seconds.median / multi.ours.seconds.median}
    for key, (_, precision) in variants.items():
        if precision:  # the amp and tf32 variants of ours
            ratios[f'train_step_{precision}'] = stock_s / train[key].seconds.median
    ratios['train_step_ceiling'] = stock_s / floor.floor_seconds
    return CaseResult(case=case, **train, eval=single, eval_ms=multi, floor=floor,
                      ratios=ratios,
                      profile_ours=in_child(profile_train, case, device, amp) if profile else None)


def run_bench(*, device: str = 'cpu', rows: list[str] | None = None,
              cases: tuple[Case, ...] = (), repeats: int = 5, warmup: int = 2, rounds: int = 3,
              amp: str | None = None, tf32: bool = False, compile_model: bool = False,
              slide_batch: int = 8, overhead: bool = True, profile: bool = False,
              out: Path) -> BenchRun:
    """Bench ``cases`` (default: the device's, or those of ``rows``) on ``device``; the run is
    filed in ``out`` after each case. ``amp``: also time ours in bf16/fp16 autocast; ``tf32``:
    and in fp32 with TF32 matmuls; ``overhead``: and the harness's cost on a smoke job."""
    cases = cases or select_cases(device, rows)
    run = BenchRun(device=device, date=time.strftime('%Y-%m-%d'),
                   command=' '.join(['python -m harness'] + sys.argv[1:]),
                   machine=BenchMachine.of(device), amp=amp, tf32=tf32, compile=compile_model,
                   repeats=repeats, warmup=warmup, rounds=rounds,
                   steps_per_round=-(-repeats // rounds))
    for case in cases:
        run.cases.append(bench_case(case, device=device, repeats=repeats, warmup=warmup,
                                    rounds=rounds, amp=amp, tf32=tf32,
                                    compile_model=compile_model, slide_batch=slide_batch,
                                    profile=profile))
        write_bench(run, out)  # each finished case is on disk, should a later one fail
    if overhead:
        print('harness overhead: smoke job via the harness vs a bare Runner ...', flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            run.harness_overhead = harness_overhead(max(3, repeats // 2), Path(tmp))
        if run.cases:  # the fixed cost against a full job as long as this run's step
            first = run.cases[0]
            step = first.train_ours.seconds.median
            run.harness_overhead.full_job = FullJob(
                row=first.case.row, step_seconds=step, iterations=FULL_MAX_ITERS,
                fixed_share=run.harness_overhead.fixed_seconds / (FULL_MAX_ITERS * step))
    write_bench(run, out)
    return run
