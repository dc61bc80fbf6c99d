"""Released checkpoints evaluate through the same job, tracking and report path.

The evaluated model is built so that its answer is known: a linear decoder with zero weights and
one large bias predicts one class everywhere, whatever the encoder does; the expected mIoU then
follows from the annotation files alone.
"""
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from harness.core.layout import released_dir
from harness.core.spec import load_table
from harness.core.state import read_state
from tests.helpers import (
    harness_cli,
    official_shapes,
    random_state,
    row_dims,
    wandb_records,
)

ROW = load_table('table3').row('seg-t-16')
PREDICTED = 4  # 0-based class index, i.e. label value 5 in the annotation PNGs


@pytest.fixture(scope='module')
def released(tmp_path_factory, synthetic_root):
    root = tmp_path_factory.mktemp('released')
    data = root / 'ADEChallengeData2016'
    for kind in ('images', 'annotations'):
        (data / kind / 'training').mkdir(parents=True)
        (data / kind / 'validation').mkdir(parents=True)
    for name in ('ADE_val_00000001', 'ADE_val_00000002'):
        shutil.copy(synthetic_root / 'images/validation' / f'{name}.jpg',
                    data / 'images/validation')
        shutil.copy(synthetic_root / 'annotations/validation' / f'{name}.png',
                    data / 'annotations/validation')
    _, dims = row_dims(ROW)
    official = random_state(official_shapes(grid=32, **dims), torch.Generator().manual_seed(3))
    official['decoder.head.weight'].zero_()
    official['decoder.head.bias'].zero_()
    official['decoder.head.bias'][PREDICTED] = 10.0
    torch.save({'model': official}, root / 'checkpoint.pth')
    converted = root / 'checkpoints' / f'{ROW.id}.pth'
    result = harness_cli('convert-official', root / 'checkpoint.pth', '--table', 'table3',
                         '--row', ROW.id, '--out', converted)
    assert result.returncode == 0, result.stderr
    return root, data


def _expected_miou(data):
    labels = [np.array(Image.open(p)) for p in sorted((data / 'annotations/validation').iterdir())]
    valid = sum(int((lab != 0).sum()) for lab in labels)
    hit = sum(int((lab == PREDICTED + 1).sum()) for lab in labels)
    present = set().union(*(set(np.unique(lab)) - {0} for lab in labels)) | {PREDICTED + 1}
    return 100 * (hit / valid) / len(present)


@pytest.mark.e2e
@pytest.mark.parametrize('multi_scale', [False, True], ids=['single-scale', 'multi-scale'])
def test_released_checkpoint_is_evaluated_and_reported(released, multi_scale):
    root, data = released
    args = ['evaluate', '--table', 'table3', '--rows', ROW.id, '--checkpoints',
            root / 'checkpoints', '--data-root', data, '--work-root', root / 'work',
            '--reports', root / 'reports'] + (['--multi-scale'] if multi_scale else [])
    result = harness_cli(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    state = read_state(released_dir(root / 'work', 'table3', ROW.id, multi_scale))
    assert state['status'] == 'finished'
    assert state['metrics']['mIoU'] == pytest.approx(_expected_miou(data), abs=0.01)
    results = pd.read_csv(root / 'reports' / 'table3' / 'results.csv').set_index('row')
    column = 'released_ms' if multi_scale else 'released_ss'
    assert results.loc[ROW.id, column] == pytest.approx(state['metrics']['mIoU'])
    assert 'released checkpoint (ss / ms)' in (root / 'reports/table3/report.md').read_text()
    run_dir, = (released_dir(root / 'work', 'table3', ROW.id, multi_scale) / 'vis_data' /
                'wandb').glob('offline-run-*')
    records = wandb_records(run_dir)
    assert next(r['run'] for r in records if r['type'] == 'run')['job_type'] == 'eval'
    summary = {}
    for r in records:
        if r['type'] == 'summary':
            summary.update(r['summary'].get('update', {}))
    scale = 'ms' if multi_scale else 'ss'
    assert summary[f'mIoU_{scale}'] == pytest.approx(state['metrics']['mIoU'])


def test_missing_checkpoint_folder_is_one_line(tmp_path, synthetic_root):
    result = harness_cli('evaluate', '--table', 'table3', '--checkpoints', tmp_path / 'none',
                         '--data-root', synthetic_root, '--work-root', tmp_path / 'work')
    assert result.returncode == 2 and result.stderr.count('\n') == 1
    assert 'no checkpoint folder' in result.stderr
