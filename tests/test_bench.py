"""The benchmark's own machinery on a tiny case: both sides get the same weights and compute
the same loss and the same predictions, and the report files hold every figure. (Speed is
what ``make bench`` measures; no timing is asserted here.)"""
import json
import os

import pytest
from torch import nn

from harness.bench import Case, build_pair, run_bench

TINY = Case('table6', 'seg-t-mask-16', crop=64, batch=2, image=(64, 150), images=4)


def test_bench_compares_like_with_like_and_writes_its_report(tmp_path):
    result = run_bench('cpu', repeats=1, warmup=0, amp=None, slide_batch=4, overhead=False,
                       out=tmp_path, cases=(TINY,), rounds=2)
    case = result['cases'][0]
    stock, ours = case['train_stock'], case['train_ours']
    assert abs(stock['loss_eval_mode'] - ours['loss_eval_mode']) <= 1e-5
    # two rounds of fresh processes, one step each: pooled, and a ratio per round
    for side in (stock, ours):
        assert len(side['times']) == 2 and side['round_medians'] == side['times']
        assert len(side['page_faults']) == len(side['kernel_seconds']) == 2
        assert side['seconds']['median'] == pytest.approx(sum(side['times']) / 2)
    assert case['ratios']['train_step_by_round'] == pytest.approx(
        [s / o for s, o in zip(stock['times'], ours['times'])])
    for key, views in (('eval', 1), ('eval_ms', 12)):
        e = case[key]
        assert e['max_abs_logit_diff'] <= 1e-5 and e['argmax_agreement'] == 1.0
        assert e['windows_per_image'] >= 3 * views  # 3 windows of 64 across 150 pixels
    saved = json.loads((tmp_path / 'bench.json').read_text())['cpu']
    assert saved['cases'][0]['ratios'] == case['ratios']
    md = (tmp_path / 'bench.md').read_text()
    assert f"**{case['ratios']['train_step']:.2f}×**" in md
    by_round = ', '.join(f'{r:.2f}' for r in case['ratios']['train_step_by_round'])
    assert f'(rounds: {by_round})' in md and '2 rounds × 1 steps' in md
    assert 'Kernel time per training step of seg-t-mask-16' in md
    assert 'multi-scale + flip (12 views)' in md and '100.0000%' in md
    # compute floor: at least the encoder's linear layers (forward 2, backward 4 FLOPs per
    # weight and token), timed at the measured GEMM rate
    floor = case['floor']
    encoder = build_pair(TINY, 'cpu', stock=False).backbone
    weights = sum(m.weight.numel() for m in encoder.modules() if isinstance(m, nn.Linear))
    assert floor['step_gflop'] * 1e9 >= 6 * weights * TINY.batch * (TINY.crop // 16) ** 2
    assert floor['floor_seconds'] == pytest.approx(floor['step_gflop']
                                                   / floor['gemm_gflop_per_s'])
    assert case['ratios']['train_step_ceiling'] == pytest.approx(
        stock['seconds']['median'] / floor['floor_seconds'])
    assert f"more than **{case['ratios']['train_step_ceiling']:.2f}×**" in md


def test_harness_overhead_stopwatch_separates_the_harness_parts(tmp_path, synthetic_root,
                                                                monkeypatch):
    """The bare baseline keeps the model, data and schedule and drops the harness's hooks and
    W&B; the stopwatch attributes real hook and W&B time to each side."""
    from harness.bench import _in_child, hook_seconds, stock_runner_config
    from harness.core.profiles import SMOKE
    from harness.core.request import JobRequest as JobSpec
    from harness.core.spec import load_table
    from harness.prepare.job_config import build_config
    monkeypatch.setenv('WANDB_MODE', 'offline')
    monkeypatch.setenv('WANDB_SILENT', 'true')
    row = load_table('table3').row('seg-t-16')
    config = tmp_path / 'job_config.py'
    iters = 2 * SMOKE.log_interval  # a checkpoint and evaluations on the way, as in 100
    build_config(JobSpec(row=row, profile='smoke', seed=0, work_dir=tmp_path / 'job',
                         data_root=synthetic_root, max_iters=iters)).dump(config)
    bare = stock_runner_config(config, tmp_path / 'bare')
    assert bare.custom_hooks == [] and bare.default_hooks.checkpoint.type == 'CheckpointHook'
    assert [b['type'] for b in bare.visualizer.vis_backends] == ['LocalVisBackend']
    assert bare.model == build_config(JobSpec(row=row, profile='smoke', seed=0,
                                              work_dir=tmp_path, data_root=synthetic_root,
                                              max_iters=iters)).model
    # each run in its own process, as the bench does: W&B's service (and the WANDB_SERVICE
    # variable it exports for child processes) must not outlive the run in the test process
    timed = {stock: _in_child(hook_seconds, config, tmp_path / f'run-{stock}', stock)
             for stock in (False, True)}
    ours, stock = timed[False]['hooks'], timed[True]['hooks']
    for name in ('AtomicCheckpointHook (harness)', 'W&B backend (harness)',
                 'RunSummaryHook (harness)', 'PreemptionHook (harness)'):
        assert ours[name] > 0, name
    assert not [name for name in stock if '(harness)' in name] and stock['CheckpointHook (mmengine)'] > 0
    for run in timed.values():
        assert run['iterations'] == iters and 0 < sum(run['hooks'].values()) < run['train_seconds']
    assert (tmp_path / 'run-True' / f'iter_{iters}.pth').is_file()
    assert 'WANDB_SERVICE' not in os.environ
