"""Released checkpoints evaluate through the same job, tracking and report path, each file in
a folder of its own SHA-256.

The evaluated model is built so that its answer is known: a linear decoder with zero weights and
one large bias predicts one class everywhere, whatever the encoder does; the expected mIoU then
follows from the annotation files alone.
"""
import shutil

import yaml

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from harness.core.hashing import sha256_file
from harness.core.layout import released_dir, released_dirs
from harness.core.spec import EXPERIMENTS, load_table
from harness.core.state import read_state
from harness.launch.targets import evaluate_released_targets
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
    # one image: a full-size model's windows at six scales, flipped, are most of the test's time
    for name in ('ADE_val_00000001',):
        shutil.copy(synthetic_root / 'images/validation' / f'{name}.jpg',
                    data / 'images/validation')
        shutil.copy(synthetic_root / 'annotations/validation' / f'{name}.png',
                    data / 'annotations/validation')
    _convert(root, root / 'checkpoints' / f'{ROW.id}.pth', PREDICTED)
    return root, data


def _convert(root, out, predicted):
    """A released checkpoint of ROW that predicts class ``predicted`` everywhere, converted
    into ``out`` by ``convert-official``."""
    _, dims = row_dims(ROW)
    official = random_state(official_shapes(grid=32, **dims), torch.Generator().manual_seed(3))
    official['decoder.head.weight'].zero_()
    official['decoder.head.bias'].zero_()
    official['decoder.head.bias'][predicted] = 10.0
    torch.save({'model': official}, root / 'checkpoint.pth')
    result = harness_cli('convert-official', root / 'checkpoint.pth', '--table', 'table3',
                         '--row', ROW.id, '--out', out)
    assert result.returncode == 0, result.stderr


def _expected_miou(data, predicted=PREDICTED):
    labels = [np.array(Image.open(p)) for p in sorted((data / 'annotations/validation').iterdir())]
    valid = sum(int((lab != 0).sum()) for lab in labels)
    hit = sum(int((lab == predicted + 1).sum()) for lab in labels)
    present = set().union(*(set(np.unique(lab)) - {0} for lab in labels)) | {predicted + 1}
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
    folder = released_dir(root / 'work', 'table3', ROW.id, multi_scale,
                          sha256_file(root / 'checkpoints' / f'{ROW.id}.pth'))
    state = read_state(folder)
    assert state['status'] == 'finished'
    assert state['metrics']['mIoU'] == pytest.approx(_expected_miou(data), abs=0.01)
    results = pd.read_csv(root / 'reports' / 'table3' / 'results.csv').set_index('row')
    column = 'released_ms' if multi_scale else 'released_ss'
    assert results.loc[ROW.id, column] == pytest.approx(state['metrics']['mIoU'])
    assert 'released checkpoint (ss / ms)' in (root / 'reports/table3/report.md').read_text()
    run_dir, = (folder / 'vis_data' / 'wandb').glob('offline-run-*')
    records = wandb_records(run_dir)
    assert next(r['run'] for r in records if r['type'] == 'run')['job_type'] == 'eval'
    summary = {}
    for r in records:
        if r['type'] == 'summary':
            summary.update(r['summary'].get('update', {}))
    scale = 'ms' if multi_scale else 'ss'
    assert summary[f'mIoU_{scale}'] == pytest.approx(state['metrics']['mIoU'])


@pytest.mark.e2e
def test_each_released_file_is_evaluated_in_a_folder_of_its_own(released, tmp_path):
    """A released checkpoint converted again (other bytes at the same path) is another
    evaluation beside the first, which stays; the same file is not evaluated twice; a spec
    given by path evaluates into its own table folder."""
    root, data = released
    checkpoints, work = tmp_path / 'checkpoints', tmp_path / 'work'
    checkpoint = checkpoints / f'{ROW.id}.pth'
    checkpoints.mkdir()
    shutil.copy(root / 'checkpoints' / checkpoint.name, checkpoint)

    def evaluate(table='table3'):
        result = harness_cli('evaluate', '--table', table, '--rows', ROW.id, '--checkpoints',
                             checkpoints, '--data-root', data, '--work-root', work,
                             '--no-report')
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    evaluate()
    first = released_dir(work, 'table3', ROW.id, False, sha256_file(checkpoint))
    kept = {name: (first / name).read_bytes() for name in ('job.json', 'result.json')}
    assert 'finished before, skipped' in evaluate().stdout  # the same file: evaluated once

    other = (PREDICTED + 1) % 150
    assert _expected_miou(data, other) != pytest.approx(_expected_miou(data), abs=0.01)
    checkpoint.unlink()  # converted again (convert-official writes no file over another):
    _convert(tmp_path, checkpoint, other)  # other bytes at the same path
    evaluate()
    second = released_dir(work, 'table3', ROW.id, False, sha256_file(checkpoint))
    assert second != first
    assert released_dirs(work, 'table3', ROW.id, False) == sorted([first, second])
    assert {name: (first / name).read_bytes() for name in kept} == kept  # the first stays
    assert read_state(first)['metrics']['mIoU'] == pytest.approx(_expected_miou(data), abs=0.01)
    assert read_state(second)['metrics']['mIoU'] == pytest.approx(_expected_miou(data, other),
                                                                  abs=0.01)

    spec = tmp_path / 'mine.yaml'  # the same rows, given by path: a folder of its own
    spec.write_text(yaml.safe_dump(yaml.safe_load((EXPERIMENTS / 'table3.yaml').read_text()),
                    allow_unicode=True))
    row = load_table(spec).row(ROW.id)
    assert row.folder != 'table3'
    (target,), refused = evaluate_released_targets([row], work, checkpoints, False,
                                                   profile='full', data_root=data)
    assert refused == 0 and target.work_dir == released_dir(work, row.folder, ROW.id, False,
                                                            sha256_file(checkpoint))
    assert target.work_dir not in released_dirs(work, 'table3', ROW.id, False)


def test_missing_checkpoint_folder_is_one_line(tmp_path, synthetic_root):
    result = harness_cli('evaluate', '--table', 'table3', '--checkpoints', tmp_path / 'none',
                         '--data-root', synthetic_root, '--work-root', tmp_path / 'work')
    assert result.returncode == 2 and result.stderr.count('\n') == 1
    assert 'no checkpoint folder' in result.stderr
