"""Rehearsals: the full-profile job of a row at its real size, through the real launcher and job
process, on synthetic ADE20K-sized data with a random release in the real key layout; and every
row of both tables trained in its smoke form.

The CPU rehearsal runs Seg-T/16 and Seg-T-Mask/16 (the smallest encoders; same code path as the
others) at batch 1 for 2 iterations, and a row whose spec points at another backbone's release,
which must fail alone with one line.
"""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import yaml
from mmcv.image import rescale_size
from mmengine.config import Config
from PIL import Image

from harness.assets.synthetic import ADE20K_SIZED_SPLITS
from harness.assets.weights import RELEASE_GRID, original_name
from harness.core.layout import CONFIG_FILE, REQUEST_FILE, checkpoint_name, job_dir
from harness.core.request import JobRequest
from harness.core.spec import EXPERIMENTS, load_table
from harness.core.state import read_state
from harness.launch.job import job_env
from tests.helpers import harness_cli

ROWS = [('table3', 'seg-t-16'), ('table6', 'seg-t-mask-16')]
ALLOCATED_CPUS = 2  # what SLURM would give each process: its loader workers
BAD = 'seg-s-32'  # its spec below points at Seg-T/16's release (another width and patch)
ITERS, BATCH = 2, 1


@pytest.fixture(scope='module')
def rehearsal(tmp_path_factory, ade_sized_root):
    root = tmp_path_factory.mktemp('rehearsal')
    data = yaml.safe_load((EXPERIMENTS / 'table3.yaml').read_text())
    tiny = next(r for r in data['rows'] if r['id'] == 'seg-t-16')['pretrained']['file']
    for r in data['rows']:
        if r['id'] == BAD:
            r['pretrained']['file'] = tiny
    spec = root / 'spec' / 'table3.yaml'
    spec.parent.mkdir()
    spec.write_text(yaml.safe_dump(data, allow_unicode=True))
    work, out = root / 'work', root / 'out'
    result = harness_cli('rehearse', '--table', spec, '--table', 'table6', '--rows',
                         f'seg-t-16,{BAD},seg-t-mask-16', '--iters', ITERS, '--batch', BATCH,
                         '--data-root', ade_sized_root, '--work-root', work, '--out', out,
                         '--keep-checkpoints', timeout=2400,
                         env={**os.environ, 'SLURM_CPUS_PER_TASK': str(ALLOCATED_CPUS)})
    return result, work / 'cpu', out, spec


def _drift(trained, start) -> float:
    """How far training moved a tensor from where it started, relative to its size (a
    tensor not loaded from ``start`` sits about 1 away: independent values of the same scale)."""
    return float((trained - start).abs().mean() / start.abs().mean())


def _windows(side: int, crop: int, stride: int) -> int:
    return max(math.ceil((side - crop) / stride), 0) + 1


@pytest.mark.e2e
def test_a_broken_row_fails_alone_with_one_line(rehearsal):
    result, _, out, _ = rehearsal
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'error: rehearsal of table3/{BAD} failed'), \
        result.stderr
    assert 'did not arrive in the encoder' in lines[0]
    # the output: each line names its row (or is the closing summary), nothing printed untagged
    untagged = [line for line in result.stdout.splitlines()
                if not line.startswith(('[', 'rehearsal: '))]
    assert not untagged, untagged[:3]
    results = json.loads((out / 'rehearsal.json').read_text())
    rows = results['cpu']['fp32']['rows']
    assert 'error' in rows[f'table3/{BAD}']
    assert {f'{t}/{r}' for t, r in ROWS} <= {k for k, v in rows.items() if 'error' not in v}


@pytest.mark.e2e
@pytest.mark.parametrize('table, row', ROWS)
def test_row_rehearsed_at_real_size(rehearsal, ade_sized_root, table, row):
    result, work, out, spec = rehearsal
    entry = json.loads((out / 'rehearsal.json').read_text())['cpu']['fp32']['rows'][
        f'{table}/{row}']
    spec_row = load_table(spec if table == 'table3' else table).row(row)
    train_dir = job_dir(work, 'full', spec_row.folder, row, 0)  # a spec by path: its own
    state = read_state(train_dir)
    assert state['status'] == 'finished'
    # the loaders fed from the allocation the rehearsal ran under (SLURM's, set below)
    assert state['meta']['loader']['workers'] == entry['workers'] == ALLOCATED_CPUS
    assert state['meta']['loader']['cpus'] == f'SLURM_CPUS_PER_TASK={ALLOCATED_CPUS}'
    cfg = Config.fromfile(train_dir / CONFIG_FILE)  # what the job ran
    crop, stride = cfg.model.test_cfg.crop_size[0], cfg.model.test_cfg.stride[0]
    assert crop == spec_row.crop_size == 512 and cfg.train_dataloader.batch_size == BATCH
    assert cfg.train_cfg.max_iters == ITERS

    # the pretrained tensors arrived: the release file (random values, release layout) is
    # what the trained checkpoint started from, two SGD steps at lr <= 1e-3 away
    release = torch.load(work / 'weights' / 'original' / original_name(spec_row),
                         weights_only=True)
    release = release.get('model', release)
    trained = torch.load(train_dir / checkpoint_name(ITERS), weights_only=False)['state_dict']
    qkv = trained['backbone.layers.0.attn.attn.in_proj_weight']
    assert _drift(qkv, release['blocks.0.attn.qkv.weight']) < 0.1
    assert not torch.equal(qkv, release['blocks.0.attn.qkv.weight'])  # and it trained
    grid = crop // cfg.model.backbone.patch_size
    pos = trained['backbone.pos_embed']
    assert pos.shape == (1, 1 + grid ** 2, cfg.model.backbone.embed_dims)
    dims = release['pos_embed'].shape[-1]
    old = release['pos_embed'][:, 1:].reshape(1, RELEASE_GRID, RELEASE_GRID, dims)
    resized = F.interpolate(old.permute(0, 3, 1, 2), size=(grid, grid), mode='bilinear',
                            align_corners=False).flatten(2).transpose(1, 2)
    assert _drift(pos[:, 1:], resized) < 0.1
    assert _drift(pos[:, :1], release['pos_embed'][:, :1]) < 0.1  # the class token's
    assert 'position grid 24x24 -> 32x32' in entry['weights_loaded']
    # the checkpoint is the real model's: every parameter of the full-size row
    assert entry['checkpoint_bytes'] == (train_dir / checkpoint_name(ITERS)).stat().st_size
    assert sum(v.numel() for k, v in trained.items() if k.startswith('backbone.layers.')) == \
        cfg.model.backbone.num_layers * 12 * cfg.model.backbone.embed_dims ** 2 + \
        cfg.model.backbone.num_layers * 13 * cfg.model.backbone.embed_dims

    assert math.isfinite(entry['loss'])
    # resumed: the second job started from the checkpoint and ran one more iteration
    resumed = job_dir(work / 'resumed', 'full', spec_row.folder, row, 0)
    assert read_state(resumed)['measured']['train/time']['count'] == ITERS + 1
    assert (resumed / checkpoint_name(ITERS + 1)).is_file()
    assert entry['resumed'] == f'from {checkpoint_name(ITERS)} to iteration {ITERS + 1}'

    # evaluation: the row's sliding window over each validation image at its test size
    # (short side resized to the crop, at most 4x as long), every window counted
    images = sorted((ade_sized_root / 'images' / 'validation').iterdir())
    expected = 0
    for path in images:
        w, h = rescale_size(Image.open(path).size, (4 * crop, crop))
        expected += _windows(h, crop, stride) * _windows(w, crop, stride)
    assert entry['eval_images'] == len(images) == ADE20K_SIZED_SPLITS['validation'][1]
    assert entry['eval_windows'] == expected > len(images)

    for key in ('train_s_per_iter', 'train_first_iter_s', 'images_per_s_per_worker',
                'eval_s_per_image', 'checkpoint_save_s'):
        assert entry[key] > 0, key
    assert entry['peak_memory']['bytes'] > entry['checkpoint_bytes']
    assert entry['workers'] == cfg.train_dataloader.num_workers
    md = (out / 'rehearsal.md').read_text()
    assert f"| {table}/{row} | {BATCH} | {entry['train_s_per_iter']:.2f} |" in md
    assert f'memory at the real batch 8 not measured (batch {BATCH})' in md


@pytest.mark.e2e
def test_plan_takes_hours_from_the_rehearsal(rehearsal, tmp_path):
    """With 8 GPUs a job's per-GPU batch is 1, the rehearsal's: plan uses its figures."""
    result, _, out, _ = rehearsal
    entry = json.loads((out / 'rehearsal.json').read_text())['cpu']['fp32']['rows'][
        'table3/seg-t-16']
    plan = harness_cli('plan', '--table', 'table3', '--rows', 'seg-t-16', '--gpus', 8,
                       '--device', 'cpu', '--rehearsals', out, '--work-root', tmp_path)
    assert plan.returncode == 0, plan.stderr
    evals = 160000 // 16000
    hours = (160000 * entry['train_s_per_iter'] * 8 + evals * 2000 * entry['eval_s_per_image'])
    assert f'GPU-hours {hours / 3600:.1f}, wall-clock hours' in plan.stdout
    assert 'rehearsal on cpu' in plan.stdout
    one_gpu = harness_cli('plan', '--table', 'table3', '--rows', 'seg-t-16', '--device', 'cpu',
                          '--rehearsals', out, '--work-root', tmp_path)
    assert 'GPU-hours unknown' in one_gpu.stdout
    assert "rehearsal on cpu at batch 1, not the job's 8 per GPU" in one_gpu.stdout


SMOKE_ONLY_FORWARD = [('table3', r) for r in ('seg-s-16', 'seg-bd-16', 'seg-b-8', 'seg-l-16')] + \
    [('table6', r) for r in ('seg-t-mask-16', 'seg-s-mask-16', 'seg-b-mask-16', 'seg-l-mask-16')]


# the job process's own entry, once per request, in one interpreter: a process start per row
# (torch, mmseg and W&B imports) costs more than the row's training
JOBS_IN_ONE_PROCESS = '''
import sys
from harness.launch.job import main
sys.exit(max(main([request]) for request in sys.argv[1:]))
'''


@pytest.mark.e2e
def test_every_other_row_trains_in_smoke_form(tmp_path, synthetic_root):
    """The rows no other test trains: a few smoke iterations each, by the job process's code
    from requests written as the launcher writes them."""
    iters = 3
    requests = []
    for table, row in SMOKE_ONLY_FORWARD:
        work_dir = job_dir(tmp_path / 'work', 'smoke', table, row, 0)
        work_dir.mkdir(parents=True)
        request = JobRequest(row=load_table(table).row(row), profile='smoke', seed=0,
                             work_dir=work_dir, data_root=synthetic_root, max_iters=iters)
        request.write(work_dir / REQUEST_FILE)
        requests.append(work_dir / REQUEST_FILE)
    result = subprocess.run([sys.executable, '-c', JOBS_IN_ONE_PROCESS, *map(str, requests)],
                            env=job_env(request), cwd=tmp_path, capture_output=True, text=True,
                            timeout=2400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for table, row in SMOKE_ONLY_FORWARD:
        work_dir = job_dir(tmp_path / 'work', 'smoke', table, row, 0)
        state = read_state(work_dir)
        assert state['status'] == 'finished', (row, state.get('error'))
        assert state['meta']['model'] == load_table(table).row(row).model
        loss = state['measured']['train/loss']
        assert loss['count'] == iters and math.isfinite(loss['last']), row
        assert (work_dir / checkpoint_name(iters)).is_file()


@pytest.mark.parametrize('args, message', [
    (['--iters', '1'], '--iters must be at least 2'),
    (['--batch', '0'], '--batch must be at least 1, got 0'),
    (['--rows', 'seg-x-99'], "no row 'seg-x-99'"),
    (['--device', 'tpu'], "unknown --device 'tpu' (choose cpu or cuda)"),
])
def test_bad_rehearsal_arguments_are_one_line_and_write_nothing(tmp_path, args, message):
    result = harness_cli('rehearse', '--table', 'table3', '--work-root', tmp_path / 'w',
                         '--out', tmp_path / 'out', '--data-root', tmp_path / 'd', *args)
    assert result.returncode == 2
    assert result.stderr.startswith('error: ') and result.stderr.count('\n') == 1, result.stderr
    assert message in result.stderr
    assert not any(tmp_path.iterdir())
