"""The benchmark's own machinery on a tiny case: both sides get the same weights and compute
the same loss and the same predictions, and the report files hold every figure. (Speed is
what ``make bench`` measures; no timing is asserted here.)"""
import json

from harness.bench import Case, run_bench

TINY = Case('table6', 'seg-t-mask-16', crop=64, batch=2, image=(64, 150), images=4)


def test_bench_compares_like_with_like_and_writes_its_report(tmp_path):
    result = run_bench('cpu', repeats=1, warmup=0, amp=None, slide_batch=4, overhead=False,
                       out=tmp_path, cases=(TINY,))
    case = result['cases'][0]
    stock, ours = case['train_stock'], case['train_ours']
    assert abs(stock['loss_eval_mode'] - ours['loss_eval_mode']) <= 1e-5
    for key, views in (('eval', 1), ('eval_ms', 12)):
        e = case[key]
        assert e['max_abs_logit_diff'] <= 1e-5 and e['argmax_agreement'] == 1.0
        assert e['windows_per_image'] >= 3 * views  # 3 windows of 64 across 150 pixels
    saved = json.loads((tmp_path / 'bench.json').read_text())['cpu']
    assert saved['cases'][0]['ratios'] == case['ratios']
    md = (tmp_path / 'bench.md').read_text()
    assert f"**{case['ratios']['train_step']:.2f}×**" in md
    assert 'multi-scale + flip (12 views)' in md and '100.0000%' in md
