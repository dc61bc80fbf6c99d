"""End to end, as a user runs it: smoke jobs through the CLI, report, W&B offline run, resume.

Real mmseg/mmengine training on the synthetic ADE20K copy, real W&B offline runs read back with
wandb's own record reader.
"""
import hashlib
import io
import json
import math
import os
import re
import signal
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from harness.core.layout import job_dir, latest_checkpoint, ours_eval_dir
from harness.core.profiles import SMOKE
from harness.core.result import read_result
from harness.core.spec import load_table
from harness.core.state import read_curves, read_state
from tests.helpers import (
    REPO_ROOT,
    harness_cli,
    smoke_run_args,
    start_and_wait,
    wandb_history,
    wandb_records,
)

pytestmark = pytest.mark.e2e
JOBS = [('table3', 'seg-t-16'), ('table6', 'seg-bd-mask-16')]  # a linear row, a mask B† row


@pytest.fixture(scope='module')
def smoke(tmp_path_factory, synthetic_root):
    root = tmp_path_factory.mktemp('smoke')
    work, reports = root / 'work', root / 'reports'
    # the linear row runs two seeds: the report shows their mean ± std
    results = {row: harness_cli(*smoke_run_args(table, row, work, reports, synthetic_root),
                                *(['--seeds', 2] if row == JOBS[0][1] else []))
               for table, row in JOBS}
    return work, reports, results


@pytest.mark.parametrize('table, row', JOBS)
def test_smoke_job_trains_and_learns(smoke, table, row):
    work, _, results = smoke
    result = results[row]
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'finished in' in result.stdout
    work_dir = job_dir(work, 'smoke', table, row, 0)
    assert read_state(work_dir)['status'] == 'finished'
    train, val = read_curves(work_dir)
    assert list(val.index) == [SMOKE.first_val, SMOKE.max_iters]  # two evaluations
    logged = range(SMOKE.log_interval, SMOKE.max_iters + 1, SMOKE.log_interval)
    assert set(logged) <= set(train.index) and train.index.max() == SMOKE.max_iters
    first, final = val['mIoU'].iloc[0], val['mIoU'].iloc[-1]
    assert final > first + 5, f'{row}: mIoU {first} -> {final}: the smoke model did not learn'
    assert final > 30
    assert train['loss'].iloc[-1] < train['loss'].iloc[0]


@pytest.mark.parametrize('table, row', JOBS)
def test_report_is_rebuilt_from_disk(smoke, table, row):
    work, reports, _ = smoke
    result = harness_cli('report', '--table', table, '--profile', 'smoke', '--work-root', work,
                         '--reports', reports)
    assert result.returncode == 0, result.stderr
    out = reports / 'smoke' / table
    seeds = 2 if row == JOBS[0][1] else 1
    finals = [read_curves(job_dir(work, 'smoke', table, row, seed))[1]['mIoU'].iloc[-1]
              for seed in range(seeds)]
    results = pd.read_csv(out / 'results.csv').set_index('row')
    assert {'row', 'model', 'paper_miou_v1', 'paper_miou_v3', 'miou_ss', 'delta',
            'status'} <= {*results.columns, 'row'}
    assert results.loc[row, 'miou_ss'] == pytest.approx(sum(finals) / seeds)
    assert results.loc[row, 'n_seeds'] == seeds
    if seeds == 2:  # mean ± std, the 95% Student t interval (1 dof: Cauchy) and its rule
        std = pd.Series(finals).std()
        assert results.loc[row, 'miou_ss_std'] == pytest.approx(std)
        assert f"{results.loc[row, 'miou_ss']:.2f} ± " in (out / 'report.md').read_text()
        half = math.tan(math.pi * 0.475) * std / math.sqrt(2)
        assert (results.loc[row, 'ci_low'], results.loc[row, 'ci_high']) == pytest.approx(
            (sum(finals) / 2 - half, sum(finals) / 2 + half))
        assert results.loc[row, 'rule'].startswith('interval')
    assert results.loc[row, 'device_hours'] > 0
    assert read_state(job_dir(work, 'smoke', table, row, 0))['wandb_run_id'] in \
        results.loc[row, 'wandb_runs']
    assert results.loc[row, 'status'] == 'finished'
    not_run = [r for r in results.index if r != row]
    assert (results.loc[not_run, 'status'] == 'not run').all()
    report = (out / 'report.md').read_text()
    assert report.splitlines()[0].startswith('> **Smoke run on synthetic data**')
    assert f'| {row} |' in report
    with Image.open(out / 'curves.png') as png:
        assert png.format == 'PNG' and png.size[0] > 600
    _check_report_run(out, table, results, [read_state(job_dir(work, 'smoke', table, row, k))
                                             ['wandb_run'] for k in range(seeds)])
    page = (out / 'report.html').read_text()
    # comparison, curves and the row's per-class chart, all embedded
    assert page.count('data:image/png;base64,') == 3 and 'src="http' not in page
    assert (out / f'per-class-{row}.png').is_file() and (out / 'comparison.png').is_file()
    assert f'<td>{row}</td>' in page and 'Smoke run on synthetic data' in page


def _check_report_run(out, table, results, job_runs):
    """The report's W&B run (the newest in its folder) holds the results table, every figure
    of the folder and the runs it summarises."""
    run_dir = max((out / 'wandb').glob('offline-run-*'),
                  key=lambda d: max(f.stat().st_mtime_ns for f in d.glob('*.wandb')))
    records = wandb_records(run_dir)
    run = next(r['run'] for r in records if r['type'] == 'run')
    assert run['job_type'] == 'report' and run['display_name'] == f'report-{table}-smoke'
    assert set(job_runs) <= set(run['config']['update']['summarises'])
    (logged,) = [r['history']['item'] for r in records if r['type'] == 'history']
    rows = json.loads((run_dir / 'files' / logged['results.path']).read_text())
    logged_results = pd.DataFrame(rows['data'], columns=rows['columns']).set_index('row')
    assert list(logged_results.index) == list(results.index)
    assert logged_results['miou_ss'].astype(float).equals(results['miou_ss'].astype(float))
    for png in out.glob('*.png'):
        assert logged[f'figures/{png.stem}.sha256'] == hashlib.sha256(png.read_bytes()).hexdigest()


@pytest.mark.parametrize('table, row', JOBS)
def test_wandb_offline_run_holds_curves_against_iteration(smoke, table, row):
    work, _, _ = smoke
    work_dir = job_dir(work, 'smoke', table, row, 0)
    (run_dir,) = (work_dir / 'vis_data' / 'wandb').glob('offline-run-*')
    assert run_dir.name.endswith(read_state(work_dir)['wandb_run_id'])
    history = wandb_history(run_dir)
    losses = {h['iter']: h['loss'] for h in history if 'loss' in h}
    mious = {h['iter']: h['mIoU'] for h in history if 'mIoU' in h}
    train, val = read_curves(work_dir)
    assert losses == pytest.approx(train['loss'].to_dict())
    assert mious == pytest.approx(val['mIoU'].to_dict())  # validation at its training iteration
    records = wandb_records(run_dir)
    run = next(r['run'] for r in records if r['type'] == 'run')
    assert run['run_group'] == f'{table}/{row}' and run['display_name'] == f'{row}-seed0'
    assert {table, 'smoke', row, 'train'} <= set(run['tags']) and run['job_type'] == 'train'
    harness = run['config']['update']['harness']
    assert harness['git']['commit'] and harness['versions']['mmsegmentation'] == '1.2.2'
    assert harness['hardware']['cpu_count'] >= 1
    # mmengine's description of the environment, once a start, beside the harness's hardware
    import mmengine
    import torch
    environment = read_state(work_dir)['history'][-1]['environment']
    assert environment['MMEngine'] == mmengine.__version__
    assert environment['PyTorch'] == torch.__version__
    assert harness['dataset']['files']['images/validation'] == 16
    assert len(harness['dataset']['file_list_sha256']) == 64
    summary = {}
    for r in records:
        if r['type'] == 'summary':
            summary.update(r['summary'].get('update', {}))
    assert summary['best_mIoU_ss'] == pytest.approx(val['mIoU'].max())
    assert summary['final_mIoU_ss'] == pytest.approx(val['mIoU'].iloc[-1])
    assert summary['best_iter'] == val['mIoU'].idxmax()
    tables = {h['iter']: h['per_class_iou.path'] for h in history if 'per_class_iou.path' in h}
    assert list(tables) == list(val.index)  # one table per evaluation, at its iteration
    table = json.loads((run_dir / 'files' / tables[SMOKE.max_iters]).read_text())
    per_class = json.loads((work_dir / 'per_class_iou.json').read_text())
    assert per_class['iter'] == SMOKE.max_iters and len(per_class['IoU']) == 150
    assert {name: iou for name, iou in table['data']} == pytest.approx(
        {name: iou for name, iou in per_class['IoU'].items() if iou is not None})
    config = next(r['config']['update'] for r in records if r['type'] == 'config')
    assert config['model']['decode_head']['type'] in ('FCNHead', 'OfficialInitSegmenterMaskHead')
    assert config['train_cfg']['max_iters'] == SMOKE.max_iters


def test_rerun_skips_finished_jobs(smoke, synthetic_root):
    work, reports, _ = smoke
    table, row = JOBS[0]
    before = sorted((job_dir(work, 'smoke', table, row, 0) / 'vis_data' / 'wandb').iterdir())
    result = harness_cli(*smoke_run_args(table, row, work, reports, synthetic_root))
    assert result.returncode == 0 and 'finished before, skipped' in result.stdout
    after = sorted((job_dir(work, 'smoke', table, row, 0) / 'vis_data' / 'wandb').iterdir())
    assert before == after


def test_killed_job_resumes_exactly_as_if_never_killed(smoke, tmp_path, synthetic_root):
    """SIGKILL (no chance to save): the re-run resumes from the last periodic checkpoint and
    ends with the same metrics and losses as the uninterrupted run of the same seed (data
    order and augmentation replayed by mmengine, torch's RNG restored from the checkpoint)."""
    table, row = JOBS[0]
    work, reports = tmp_path / 'work', tmp_path / 'reports'
    args = (*smoke_run_args(table, row, work, reports, synthetic_root), '--no-report')
    work_dir = job_dir(work, 'smoke', table, row, 0)
    proc = start_and_wait(args, work_dir, SMOKE.checkpoint_interval)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = int(read_curves(work_dir)[0].index.max())
    checkpoint = (work_dir / 'last_checkpoint').read_text().strip()
    assert killed_at < SMOKE.max_iters
    run_id = read_state(work_dir)['wandb_run_id']

    result = harness_cli(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f'resuming from {checkpoint}' in result.stdout  # the pointer names a file here
    state = read_state(work_dir)
    assert state['status'] == 'finished' and state['starts'] == 2
    assert state['wandb_run_id'] == run_id  # the same W&B run continues
    log = (work_dir / 'job.log').read_text()
    assert f'Load checkpoint from {work_dir / checkpoint}' in log and 'resumed' in log.lower()
    train, val = read_curves(work_dir)
    assert list(val.index) == [SMOKE.first_val, SMOKE.max_iters]
    logged = range(SMOKE.log_interval, SMOKE.max_iters + 1, SMOKE.log_interval)
    assert set(logged) <= set(train.index) and train.index.max() == SMOKE.max_iters
    runs = sorted((work_dir / 'vis_data' / 'wandb').glob('offline-run-*'))
    assert len(runs) == 2 and all(r.name.endswith(run_id) for r in runs)
    resumed = {h['iter'] for h in wandb_history(runs[1]) if 'loss' in h}
    assert min(resumed) > int(checkpoint.rsplit('_', 1)[1].split('.')[0])
    # bit for bit the uninterrupted run of the same seed (the module's smoke job)
    ref_train, ref_val = read_curves(job_dir(smoke[0], 'smoke', table, row, 0))
    assert val[['mIoU', 'mAcc', 'aAcc']].to_dict() == ref_val[['mIoU', 'mAcc', 'aAcc']].to_dict()
    assert train['loss'].to_dict() == ref_train['loss'].to_dict()


@pytest.mark.browser
def test_html_report_reads_in_a_headless_browser(smoke):
    """Debian's Chromium renders the report: table and figures (comparison, curves, per-class)
    loaded and drawn, no None or nan text, nothing fetched."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    _, reports, _ = smoke
    options = webdriver.ChromeOptions()
    options.binary_location = '/usr/bin/chromium'
    for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
                 '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--window-size=1600,1200'):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service('/usr/bin/chromedriver'), options=options)
    try:
        for table, row in JOBS:
            driver.get((reports / 'smoke' / table / 'report.html').as_uri())
            # every figure loaded, shown, and drawn (its share of dark pixels, read back from a
            # canvas: a blank PNG has none)
            images = driver.execute_script(
                'return [...document.images].map(i => { const c = document.createElement('
                "'canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight; "
                "const g = c.getContext('2d'); g.drawImage(i, 0, 0); "
                'const d = g.getImageData(0, 0, c.width, c.height).data; let dark = 0; '
                'for (let k = 0; k < d.length; k += 4) if (d[k] + d[k + 1] + d[k + 2] < 300) '
                'dark++; return [i.alt, i.complete, i.naturalWidth, '
                'i.getBoundingClientRect().width, dark / (d.length / 4)]; })')
            assert images and all(done and natural > 600 and shown > 300 and dark > 0.002
                                  for _, done, natural, shown, dark in images), images
            alts = ' '.join(alt for alt, *_ in images)
            assert 'comparison' in alts and f'per-class IoU: {row}' in alts, alts
            text = driver.execute_script('return document.body.innerText')
            assert not re.search(r'\bNone\b|\bnan\b|\bNaN\b', text)
            width, height, rows = driver.execute_script(
                "const t = document.querySelector('table.results'); "
                'const r = t.getBoundingClientRect(); return [r.width, r.height, t.rows.length]')
            assert width > 600 and height > 100
            assert rows == 1 + len(load_table(table).rows)
            fetched = driver.execute_script(
                "return performance.getEntriesByType('resource').map(e => e.name)")
            assert [u for u in fetched if not u.startswith('data:')] == []  # self-contained
            with Image.open(io.BytesIO(driver.get_screenshot_as_png())) as shot:
                assert shot.size[0] >= 1200 and shot.convert('L').getextrema()[0] < 100  # not blank
    finally:
        driver.quit()


def _evaluation(trained):
    """The multi-scale evaluation folder of a training job's final checkpoint."""
    return ours_eval_dir(trained, True, read_result(trained)['checkpoint']['sha256'])


def test_our_models_evaluated_multi_scale_fill_their_column(smoke, synthetic_root):
    work, reports, _ = smoke
    table, row = JOBS[0]
    result = harness_cli('evaluate', '--ours', '--multi-scale', '--table', table, '--rows', row,
                         '--seeds', 2, '--profile', 'smoke', '--data-root', synthetic_root,
                         '--work-root', work, '--reports', reports)
    assert result.returncode == 0, result.stdout + result.stderr
    mious = [read_state(_evaluation(job_dir(work, 'smoke', table, row, seed)))
             ['metrics']['mIoU'] for seed in range(2)]
    results = pd.read_csv(reports / 'smoke' / table / 'results.csv').set_index('row')
    assert results.loc[row, 'miou_ms'] == pytest.approx(sum(mious) / 2)
    assert all(0 < m <= 100 for m in mious)
    for seed in range(2):  # W&B lineage: each evaluation used its training job's checkpoint
        trained = job_dir(work, 'smoke', table, row, seed)
        (train_run,) = (trained / 'vis_data' / 'wandb').glob('offline-run-*')
        (eval_run,) = (_evaluation(trained) / 'vis_data' / 'wandb').glob('offline-run-*')
        logged = _artifacts(train_run)
        used = _artifacts(eval_run)
        assert [a['use_after_commit'] for a in logged] == [False]
        assert [a['use_after_commit'] for a in used] == [True]
        assert used[0]['name'] == logged[0]['name'] == f'checkpoint-smoke-{table}-{row}-seed{seed}'
        assert used[0]['digest'] == logged[0]['digest']  # the same file, by checksum
        assert logged[0]['manifest']['contents'][0]['ref'] == \
            f'file://{latest_checkpoint(trained).resolve()}'
        run = next(r['run'] for r in wandb_records(eval_run) if r['type'] == 'run')
        assert run['display_name'] == f'{row}-seed{seed}-eval-multi-scale'
        assert run['job_type'] == 'eval' and run['run_group'] == f'{table}/{row}'
        assert {'eval', 'ours', 'multi-scale'} <= set(run['tags'])


def test_sync_help_names_every_offline_run(smoke):
    """``sync-help``'s patterns, expanded by the shell, reach every offline W&B run the smoke
    jobs, their evaluations and their reports wrote, and nothing else."""
    import glob
    work, reports, _ = smoke
    result = harness_cli('sync-help', '--work-root', work, '--reports', reports)
    assert result.returncode == 0, result.stderr
    patterns = [line.split(' sync ', 1)[1] for line in result.stdout.splitlines()
                if ' sync ' in line]
    named = {Path(REPO_ROOT, path).resolve() for pattern in patterns
             for path in glob.glob(str(Path(REPO_ROOT, pattern)))}
    on_disk = {p.resolve() for root in (work, reports) for p in root.rglob('offline-run-*')}
    assert any(p.is_relative_to(reports.resolve()) for p in on_disk)  # the report runs too
    assert named == on_disk


def _artifacts(run_dir):
    """The model artifacts a run logged or used (W&B also stores logged tables as artifacts)."""
    return [{'use_after_commit': False, **r['artifact']} for r in wandb_records(run_dir)
            if r['type'] == 'artifact' and r['artifact']['type'] == 'model']


def test_mixed_precision_is_an_option_the_report_states(smoke, tmp_path, synthetic_root):
    """--amp bf16 trains the same job under bf16 autocast (CPU too): the curve departs from the
    fp32 run of the same seed, the job and the report say so; fp16 and tf32 without a GPU are
    refused."""
    table, row = JOBS[0]
    work, reports = tmp_path / 'work', tmp_path / 'reports'
    result = harness_cli(*smoke_run_args(table, row, work, reports, synthetic_root), '--amp', 'bf16')
    assert result.returncode == 0, result.stdout + result.stderr
    work_dir = job_dir(work, 'smoke', table, row, 0)
    assert read_state(work_dir)['meta']['amp'] == 'bf16'
    assert "type='BF16AutocastOptimWrapper'" in (work_dir / 'job_config.py').read_text()
    amp_train, amp_val = read_curves(work_dir)
    fp32_train, _ = read_curves(job_dir(smoke[0], 'smoke', table, row, 0))
    assert amp_train['loss'].iloc[0] != fp32_train['loss'].iloc[0]  # autocast changed the maths
    assert amp_val['mIoU'].iloc[-1] > amp_val['mIoU'].iloc[0] + 5  # and it still learns
    report = (reports / 'smoke' / table / 'report.md').read_text()
    assert f'**Reduced precision**: {row} seed0 (bf16) trained under' in report
    assert 'bf16 training precision' in report.split('## Provenance')[1]

    for gpu_only, needs in (('fp16', 'a GPU'), ('tf32', 'an NVIDIA GPU')):
        refused = harness_cli(*smoke_run_args(table, row, tmp_path / 'w2', reports, synthetic_root),
                              '--amp', gpu_only)
        assert refused.returncode == 2 and not (tmp_path / 'w2').exists()
        assert refused.stderr.strip().startswith(f'error: --amp {gpu_only} needs {needs}')
        assert len(refused.stderr.strip().splitlines()) == 1
