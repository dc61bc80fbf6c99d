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
from harness.measure.bench_result import (FORMAT, BenchRun, Case, EvalSide, Evaluation, Floor,
                                          Spread, Training, load_bench, markdown, write_bench)

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
    # two rounds of fresh processes, one step each: pooled, and a ratio per round (the
    # figures from known step times: test_ratios_and_medians_of_known_step_times)
    for side in (stock, ours):
        assert len(side['times']) == 2 and side['round_medians'] == side['times']
        assert len(side['page_faults']) == len(side['kernel_seconds']) == 2
    assert len(case['ratios']['train_step_by_round']) == 2
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
    assert f"more than **{case['ratios']['train_step_ceiling']:.2f}×**" in md


def test_ratios_and_medians_of_known_step_times(monkeypatch):
    """A case's figures from measurements the test makes up (each measuring process replaced
    by its known result): steps pooled over the rounds, a ratio per round, the ceiling."""
    from harness.measure import bench
    from harness.measure.bench_cases import compute_floor, measure_eval, measure_train
    # stock: round medians 2 and 5 (their means differ), all six 4; ours: 1 and 2, all six 1.5
    steps = {True: iter([[4.0, 1.0, 2.0], [9.0, 4.0, 5.0]]),
             False: iter([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])}

    def measured(function, case, device, *args):
        if function is measure_train:
            times = next(steps[args[0]])
            return Training(seconds=Spread.of(times), times=times, images_per_s=1.0,
                            peak_memory_mb=1.0, memory_kind='process max RSS',
                            loss_eval_mode=2.5, page_faults=[0] * 3, kernel_seconds=[0.0] * 3)
        if function is measure_eval:  # stock 8 s and ours 2 s; multi-scale 9 s and 3 s
            stock, ours = (9.0, 3.0) if args[-1] else (8.0, 2.0)
            return Evaluation(stock=EvalSide(seconds=Spread.of([stock]), images_per_s=1.0),
                              ours=EvalSide(seconds=Spread.of([ours]), images_per_s=1.0), windows_per_image=3,
                              slide_batch=4, max_abs_logit_diff=0.0, argmax_equal=True)
        assert function is compute_floor
        return Floor(step_gflop=1.0, gemm_gflop_per_s=2.0, floor_seconds=0.5,
                     gemm_shape=[1, 1, 1])

    monkeypatch.setattr(bench, 'in_child', measured)
    result = bench.bench_case(TINY, device='cpu', repeats=6, warmup=0, rounds=2, amp=None,
                              tf32=False, compile_model=False, slide_batch=4, profile=False)
    stock, ours = result.train_stock, result.train_ours
    assert stock.times == [4.0, 1.0, 2.0, 9.0, 4.0, 5.0] and stock.round_medians == [2.0, 5.0]
    assert stock.seconds.median == 4.0 and ours.seconds.median == 1.5  # of all six steps
    by_round = result.ratios.pop('train_step_by_round')
    assert by_round == pytest.approx([2.0, 2.5])
    assert result.ratios == pytest.approx(dict(train_step=4.0 / 1.5, eval=4.0,
                                               eval_multi_scale=3.0,
                                               train_step_ceiling=8.0))  # 4 s, floor 0.5 s


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
