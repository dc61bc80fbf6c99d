"""The Pascal Context and Cityscapes tables through the stages the ADE20K tables go through:
each dataset's own batch divides among the processes (the command line refuses a count by the
row's dataset), the rehearsal feeds a row its dataset's real-size synthetic copy at its crop and
batch, a smoke job of a new table is reported with the spec's paper values beside the mIoU it
wrote, and an authors' release of a new row (19 classes) converts and evaluates into the
released-checkpoint column. Real CLI runs on small real files."""
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mmengine.config import Config
from PIL import Image

from harness.assets.synthetic import REAL_COUNTS, REAL_SHAPES, ensure_dataset
from harness.cli.run import RunOptions
from harness.cli.options import OptionError
from harness.core.datasets import dataset
from harness.core.hashing import sha256_file
from harness.core.layout import CONFIG_FILE, job_dir, released_dir
from harness.core.request import JobRequest
from harness.core.spec import EXPERIMENTS, load_table
from harness.core.state import read_curves, read_state
from harness.prepare.job_config import build_config
from tests.helpers import REPO_ROOT, harness_cli, official_shapes, random_state, row_dims

PASCAL, CITYSCAPES = dataset('pascal_context'), dataset('cityscapes')
ADE20K = dataset('ade20k')


# --- the batch is the dataset's ------------------------------------------------------------------

def test_a_process_count_is_checked_against_the_rows_dataset_batch():
    """Pascal Context's total batch (16) divided by 16 processes is accepted for its rows and
    refused for ADE20K's (8), by the options as the parser builds them and by the request."""
    gpus = PASCAL.recipe.batch
    assert ADE20K.recipe.batch % gpus  # the count that tells the two apart
    RunOptions(table=['pascal_context'], gpus=gpus, launcher='torchrun')  # accepted
    for tables in (['table3'], ['pascal_context', 'table6']):
        with pytest.raises(OptionError) as refused:
            RunOptions(table=tables, gpus=gpus, launcher='torchrun')
        assert str(refused.value) == (f'{gpus} processes (--gpus x --nodes) do not divide the '
                                      f'total batch {ADE20K.recipe.batch} ({ADE20K.title})')
    row = load_table('pascal_context').rows[0]
    request = JobRequest(row=row, profile='full', seed=0, work_dir=None, data_root=None,
                         gpus=gpus)
    assert build_config(request).train_dataloader.batch_size == PASCAL.recipe.batch // gpus
    with pytest.raises(ValueError, match=f'does not divide the total batch '
                                         f'{ADE20K.recipe.batch}'):
        JobRequest(row=load_table('table3').rows[0], profile='full', seed=0, work_dir=None,
                   data_root=None, gpus=gpus)


def test_plan_takes_the_batch_per_gpu_from_the_rows_dataset():
    gpus = PASCAL.recipe.batch
    result = harness_cli('plan', '--table', 'pascal_context', '--gpus', gpus)
    assert result.returncode == 0, result.stderr
    assert f'batch/GPU {PASCAL.recipe.batch // gpus}, ' in result.stdout
    # no rehearsal of these rows on record: their hours are unknown, not guessed
    assert 'GPU-hours unknown' in result.stdout
    bad = harness_cli('plan', '--table', 'table3', '--gpus', gpus)
    assert bad.returncode == 2 and bad.stderr == (
        f'error: --gpus {gpus} does not divide the total batch {ADE20K.recipe.batch} '
        f'({ADE20K.title})\n')


# --- the rehearsal's data, crop and batch --------------------------------------------------------

def test_the_rehearsal_feeds_a_new_row_its_datasets_real_sizes_crop_and_batch(tmp_path):
    """What ``rehearse`` hands a Pascal Context row: the synthetic copy at VOC2010's image sizes,
    the row's crop (480) and the dataset's batch (16) in the job's config, and training samples
    that reach the model as crops of that size."""
    from mmseg.registry import DATASETS, MODELS
    from mmseg.utils import register_all_modules
    register_all_modules()
    root = ensure_dataset(tmp_path / PASCAL.folder, size='real', declared=PASCAL)
    for split, count in REAL_COUNTS[PASCAL.name].items():
        listed = (root / PASCAL.splits[split].list).read_text().split()
        assert len(listed) == count
        shapes = {Image.open(root / PASCAL.splits[split].images / f'{stem}.jpg').size[::-1]
                  for stem in listed}
        assert shapes <= set(REAL_SHAPES[PASCAL.name]) and len(shapes) > 1
    row = load_table('pascal_context').row('seg-l-mask-16')
    request = JobRequest(row=row, profile='full', seed=0, work_dir=None, data_root=root,
                         max_iters=2)
    cfg = build_config(request)
    crop = row.crop_size
    assert cfg.train_dataloader.batch_size == PASCAL.recipe.batch
    assert tuple(cfg.model.test_cfg.crop_size) == (crop, crop) == \
        (PASCAL.recipe.slide_crop,) * 2
    assert tuple(cfg.model.test_cfg.stride) == (PASCAL.recipe.slide_stride,) * 2
    train = DATASETS.build(cfg.train_dataloader.dataset)
    assert len(train) == REAL_COUNTS[PASCAL.name]['training']
    preprocessor = MODELS.build(cfg.model.data_preprocessor)
    batch = preprocessor({'inputs': [train[i]['inputs'] for i in range(2)],
                          'data_samples': [train[i]['data_samples'] for i in range(2)]},
                         training=True)
    assert batch['inputs'].shape == (2, 3, crop, crop)


def test_rehearse_refuses_one_data_root_for_two_datasets(tmp_path):
    out = tmp_path / 'out'
    result = harness_cli('rehearse', '--table', 'table3', '--table', 'pascal_context',
                         '--rows', 'seg-t-16,seg-l-mask-16', '--data-root', tmp_path,
                         '--work-root', tmp_path / 'work', '--out', out)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        'error: --data-root names one folder, and the rows train on ade20k, pascal_context: '
        'rehearse them one dataset at a time']
    assert not out.exists()


# --- a smoke job of a new table, reported ------------------------------------------------------

SMOKE_ITERS = 10  # the smallest schedule that still evaluates twice (at 5 and at the end)


@pytest.fixture(scope='module')
def cityscapes_data(tmp_path_factory):
    """The smoke copy of Cityscapes, generated once (a few seconds)."""
    return ensure_dataset(tmp_path_factory.mktemp('cityscapes') / CITYSCAPES.folder,
                          declared=CITYSCAPES)


@pytest.mark.e2e
def test_a_new_tables_smoke_report_holds_its_rows_paper_values_and_mious(cityscapes_data,
                                                                          tmp_path):
    """One smoke job of the Cityscapes table's smallest row, reported as `make smoke` reports
    it; the expected cells are the spec's paper values and the job's own final mIoU."""
    work, reports = tmp_path / 'work', tmp_path / 'reports'
    result = harness_cli('run', '--table', 'cityscapes', '--rows', 'seg-l-16', '--profile',
                         'smoke', '--max-iters', SMOKE_ITERS, '--work-root', work,
                         '--reports', reports, '--data-root', cityscapes_data,
                         '--no-wandb-report')
    assert result.returncode == 0, result.stdout + result.stderr
    table = load_table('cityscapes')
    trained = table.row('seg-l-16')
    folder = job_dir(work, 'smoke', 'cityscapes', trained.id, 0)
    assert read_state(folder)['status'] == 'finished'
    cfg = Config.fromfile(folder / CONFIG_FILE)  # the smoke form of the row's own recipe
    assert cfg.model.decode_head.num_classes == CITYSCAPES.classes
    assert cfg.train_dataloader.batch_size == CITYSCAPES.recipe.batch
    final = read_curves(folder)[1]['mIoU'].iloc[-1]

    out = reports / 'smoke' / 'cityscapes'
    results = pd.read_csv(out / 'results.csv').set_index('row')
    assert list(results.index) == [row.id for row in table.rows]
    for row in table.rows:
        for version in ('v1', 'v3'):
            paper = row.paper[version].miou
            cell = results.loc[row.id, f'paper_miou_{version}']
            assert (pd.isna(cell) if paper is None else cell == pytest.approx(paper))
    assert results.loc[trained.id, 'miou_ss'] == pytest.approx(final)
    assert results.loc[trained.id, 'status'] == 'finished'
    assert results.loc['seg-l-mask-16', 'status'] == 'not run'
    report = (out / 'report.md').read_text()
    assert table.title in report and f'| {trained.id} |' in report
    assert f'{trained.paper["v3"].miou:.1f}' in report and f'{final:.2f}' in report
    page = (out / 'report.html').read_text()
    assert f'<td>{trained.id}</td>' in page and f'{final:.2f}' in page


# --- an authors' release of a new row, converted and evaluated ---------------------------------

def _tiny_spec(tmp_path):
    """The Cityscapes table with its linear row on a ViT-Ti/16 encoder (the row's crop, classes,
    data and evaluation; a width a CPU evaluates at 2048x1024 in seconds): a spec and a config
    of the test's own."""
    config = tmp_path / 'seg-t-16-cityscapes.py'
    base = REPO_ROOT / 'experiments' / 'configs' / 'cityscapes' / 'seg-l-16.py'
    config.write_text(f"_base_ = [{str(base)!r}]\nmodel = dict(backbone=dict(embed_dims=192, "
                      "num_layers=2, num_heads=3), decode_head=dict(in_channels=192, "
                      "channels=192))\n")
    spec = yaml.safe_load((EXPERIMENTS / 'cityscapes.yaml').read_text())
    spec['rows'] = [r for r in spec['rows'] if r['id'] == 'seg-l-16']
    spec['rows'][0]['config'] = str(config)
    path = tmp_path / 'cityscapes.yaml'
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    return path


@pytest.mark.e2e
def test_a_new_rows_release_converts_and_evaluates_into_the_released_column(
        cityscapes_data, tmp_path):
    """A release of the Cityscapes linear row (19 classes, its 768-pixel position grid) that
    predicts one class everywhere converts through ``convert-official`` and evaluates through
    ``evaluate`` to the mIoU its annotations give; the report's released column shows it."""
    smoke_data = cityscapes_data
    data = tmp_path / CITYSCAPES.folder  # two validation frames of the smoke copy
    split = CITYSCAPES.splits['validation']
    for kind, suffix in ((split.images, CITYSCAPES.image_suffix),
                         (split.labels, CITYSCAPES.label_suffix)):
        for path in sorted((smoke_data / kind).rglob(f'*{suffix}'))[:2]:
            target = data / kind / path.relative_to(smoke_data / kind)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    for folder in (CITYSCAPES.splits['training'].images, CITYSCAPES.splits['training'].labels):
        (data / folder).mkdir(parents=True)
    spec = _tiny_spec(tmp_path)
    row = load_table(spec).row('seg-l-16')
    _, dims = row_dims(row)
    assert dims['classes'] == CITYSCAPES.classes
    labels = [np.array(Image.open(p)) for p in (data / split.labels).rglob(
        f'*{CITYSCAPES.label_suffix}')]
    present = sorted(set().union(*(set(np.unique(lab)) for lab in labels)) - {255})
    predicted = present[1]
    official = random_state(official_shapes(grid=row.crop_size // row.patch_size, **dims),
                            torch.Generator().manual_seed(5))
    official['decoder.head.weight'].zero_()
    official['decoder.head.bias'].zero_()
    official['decoder.head.bias'][predicted] = 10.0
    torch.save({'model': official}, tmp_path / 'checkpoint.pth')
    checkpoints = tmp_path / 'checkpoints'
    converted = harness_cli('convert-official', tmp_path / 'checkpoint.pth', '--table', spec,
                            '--row', row.id, '--out', checkpoints / f'{row.id}.pth')
    assert converted.returncode == 0, converted.stderr
    work, reports = tmp_path / 'work', tmp_path / 'reports'
    result = harness_cli('evaluate', '--table', spec, '--rows', row.id, '--checkpoints',
                         checkpoints, '--data-root', data, '--work-root', work, '--reports',
                         reports, '--no-wandb-report')
    assert result.returncode == 0, result.stdout + result.stderr
    valid = sum(int((lab != 255).sum()) for lab in labels)
    hit = sum(int((lab == predicted).sum()) for lab in labels)
    expected = 100 * (hit / valid) / len(present)  # one class right, the others' IoU 0
    folder = released_dir(work, row.folder, row.id, False,
                          sha256_file(checkpoints / f'{row.id}.pth'))
    assert read_state(folder)['metrics']['mIoU'] == pytest.approx(expected, abs=0.01)
    results = pd.read_csv(reports / row.folder / 'results.csv').set_index('row')
    assert results.loc[row.id, 'released_ss'] == pytest.approx(
        read_state(folder)['metrics']['mIoU'])
