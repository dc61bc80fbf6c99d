"""The benchmark's own machinery on a tiny case: both sides get the same weights and compute
the same loss and the same predictions, and the report files hold every figure. (Speed is
what ``make bench`` measures; no timing is asserted here.)"""
import copy
import json
import os

import pytest
from torch import nn

from harness.core.layout import REPO_ROOT
from harness.measure.bench import run_bench
from harness.measure.bench_cases import build_pair
from harness.measure.bench_result import FORMAT, BenchRun, Case, load_bench, markdown, write_bench

TINY = Case('table6', 'seg-t-mask-16', crop=64, batch=2, image=(64, 150), images=4)


@pytest.mark.e2e
def test_bench_compares_like_with_like_and_writes_its_report(tmp_path):
    run = run_bench(device='cpu', repeats=1, warmup=0, amp=None, slide_batch=4, overhead=False,
                    out=tmp_path, cases=(TINY,), rounds=2)
    assert isinstance(run, BenchRun) and load_bench(tmp_path) == {'cpu': run}
    result = run.model_dump()  # the run as bench.json files it
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
    assert saved['format'] == FORMAT
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


@pytest.mark.e2e
def test_harness_overhead_stopwatch_separates_the_harness_parts(tmp_path, synthetic_root,
                                                                monkeypatch):
    """The bare baseline keeps the model, data and schedule and drops the harness's hooks and
    W&B; the stopwatch attributes real hook and W&B time to each side."""
    from harness.measure.bench_cases import in_child
    from harness.measure.bench_overhead import hook_seconds, stock_runner_config
    from harness.core.profiles import SMOKE
    from harness.core.request import JobRequest
    from harness.core.spec import load_table
    from harness.prepare.job_config import build_config
    monkeypatch.setenv('WANDB_MODE', 'offline')
    monkeypatch.setenv('WANDB_SILENT', 'true')
    row = load_table('table3').row('seg-t-16')
    config = tmp_path / 'job_config.py'
    iters = 2 * SMOKE.log_interval  # a checkpoint and evaluations on the way, as in 100
    build_config(JobRequest(row=row, profile='smoke', seed=0, work_dir=tmp_path / 'job',
                            data_root=synthetic_root, max_iters=iters)).dump(config)
    bare = stock_runner_config(config, tmp_path / 'bare')
    assert bare.custom_hooks == [] and bare.default_hooks.checkpoint.type == 'CheckpointHook'
    assert [b['type'] for b in bare.visualizer.vis_backends] == ['LocalVisBackend']
    assert bare.model == build_config(JobRequest(row=row, profile='smoke', seed=0,
                                                 work_dir=tmp_path, data_root=synthetic_root,
                                                 max_iters=iters)).model
    # each run in its own process, as the bench does: W&B's service (and the WANDB_SERVICE
    # variable it exports for child processes) must not outlive the run in the test process
    timed = {stock: in_child(hook_seconds, config, tmp_path / f'run-{stock}', stock).model_dump()
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


def test_the_bench_on_record_is_the_current_format():
    """reports/bench holds the project's measurements: read as they are, they render the report
    on record unchanged."""
    reports = REPO_ROOT / 'reports' / 'bench'
    runs = load_bench(reports)
    assert list(runs) == ['gpu', 'cpu']
    assert markdown(runs) == (reports / 'bench.md').read_text()


def test_a_bench_run_of_an_older_format_is_measured_again_not_rendered(tmp_path, capsys):
    on_record = json.loads((REPO_ROOT / 'reports' / 'bench' / 'bench.json').read_text())
    older = copy.deepcopy(on_record['cpu'])
    del older['harness_overhead']['fixed_seconds']  # as filed before the fixed cost was measured
    renumbered = dict(on_record['gpu'], format=FORMAT + 1)
    retyped = copy.deepcopy(on_record['cpu'])  # a number filed as text is no number
    retyped['cases'][0]['train_stock']['images_per_s'] = '1.5'
    for kind, run in (('cpu', older), ('gpu', renumbered), ('cpu', retyped)):
        (tmp_path / 'bench.json').write_text(json.dumps({kind: run}))
        assert load_bench(tmp_path) == {}
        assert capsys.readouterr().err == (f"note: {tmp_path / 'bench.json'} {kind}: measured "
                                           'in an older format: run `make bench` again\n')
    # the next bench files its own run; the older one is neither kept nor rendered
    (tmp_path / 'bench.json').write_text(json.dumps({'cpu': older, 'gpu': on_record['gpu']}))
    current = load_bench(REPO_ROOT / 'reports' / 'bench')['gpu']
    write_bench(current, tmp_path)
    assert list(json.loads((tmp_path / 'bench.json').read_text())) == ['gpu']
    md = (tmp_path / 'bench.md').read_text()
    assert '(cpu)' not in md and md == markdown({'gpu': current})
