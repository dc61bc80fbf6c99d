"""Pascal Context and Cityscapes as declared datasets: their synthetic copies are in the layout
mmseg reads, check-data lists every defect of a copy (a missing, an extra, a stray file) in one
line each, the Cityscapes conversion draws polygons as train ids (and names what it lacks),
and the tables load with their dataset. Real files, generated once per module (a few seconds)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

from harness.assets.data import check_files
from harness.assets.synthetic import ensure_dataset
from harness.core.datasets import dataset, datasets
from harness.core.errors import SpecError
from harness.core.spec import EXPERIMENTS, load_table
from tests.helpers import REPO_ROOT


@pytest.fixture(scope='module')
def generated(tmp_path_factory):
    """The smoke copies of both datasets, generated once."""
    root = tmp_path_factory.mktemp('datasets')
    return {name: ensure_dataset(root / name / dataset(name).folder, declared=dataset(name))
            for name in ('cityscapes', 'pascal_context')}


def _copy(generated, name, tmp_path):
    root = tmp_path / name
    shutil.copytree(generated[name], root)
    return root


# mmseg's dataset class, configured as the row's config configures it, built on a copy: in a
# process of its own (check-data's decoding forks; a process that has loaded torch's threads
# must not)
READ_BY_MMSEG = """
import json, os, sys
from mmengine.config import Config
from mmseg.registry import DATASETS
from mmseg.utils import register_all_modules
register_all_modules()
cfg, found = Config.fromfile(sys.argv[1]), {}
for loader in ('train_dataloader', 'val_dataloader'):
    spec = cfg[loader].dataset.copy()
    spec.update(data_root=sys.argv[2], pipeline=[])
    built = DATASETS.build(spec)
    infos = [built.get_data_info(i) for i in range(len(built))]
    found[loader] = sum(os.path.isfile(i['img_path']) and os.path.isfile(i['seg_map_path'])
                        for i in infos)
print(json.dumps(found))
"""


@pytest.mark.parametrize('name', ['cityscapes', 'pascal_context'])
def test_the_synthetic_copy_is_the_layout_mmseg_reads(generated, name):
    """The copy passes the full check, and mmseg's own dataset class, configured as the table's
    config configures it, lists every image with its label map."""
    import json
    declared, root = dataset(name), generated[name]
    counts = declared.synthetic.counts
    assert check_files(root, counts, 2, declared) == counts
    row = load_table(name).rows[0]
    out = subprocess.run([sys.executable, '-c', READ_BY_MMSEG, str(row.config_path), str(root)],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, 'PYTHONPATH': str(REPO_ROOT)})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {
        'train_dataloader': counts['training'], 'val_dataloader': counts['validation']}
    labels = np.concatenate([np.unique(np.asarray(Image.open(p))) for p in
                             sorted(root.rglob(f'*{declared.label_suffix}'))[:8]])
    allowed = set(declared.synthetic.classes) | {declared.synthetic.seam}
    assert set(labels.tolist()) <= allowed


def _check_data(name, root):
    """check-data in a process of its own (its decoding forks), expecting the synthetic
    copy's counts."""
    program = ('import sys; from harness.core.datasets import datasets; '
               'from tests.helpers import with_counts; d = datasets()[sys.argv[1]]; '
               'datasets()[sys.argv[1]] = with_counts(d, d.synthetic.counts); '
               'from harness.cli import main; '
               "sys.exit(main(['check-data', '--dataset', sys.argv[1], '--data-root', "
               "sys.argv[2], '--workers', '2']))")
    out = subprocess.run([sys.executable, '-c', program, name, str(root)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, 'PYTHONPATH': str(REPO_ROOT)})
    return out.returncode, out.stdout.splitlines(), out.stderr


def _defects(lines):
    return [line.strip() for line in lines if line.startswith('  ')]


def test_cityscapes_missing_extra_and_stray_files_are_one_line_each(generated, tmp_path):
    root = _copy(generated, 'cityscapes', tmp_path)
    city = root / 'gtFine' / 'val' / 'frankfurt'
    missing = city / 'frankfurt_000003_000019_gtFine_labelTrainIds.png'
    missing.unlink()
    extra = root / 'leftImg8bit' / 'train' / 'aachen' / 'aachen_000099_000019_leftImg8bit.png'
    shutil.copy(root / 'leftImg8bit' / 'train' / 'aachen' / 'aachen_000001_000019_leftImg8bit.png',
                extra)
    stray = city / 'notes.txt'
    stray.write_text('not a label\n')
    companion = city / 'frankfurt_000004_000019_gtFine_polygons.json'  # the official archive's
    companion.write_text('{}')
    code, lines, err = _check_data('cityscapes', root)
    assert code != 0 and err.count('\n') == 1 and err.startswith('error: 4 defects in ')
    image = root / 'leftImg8bit' / 'val' / 'frankfurt' / 'frankfurt_000003_000019_leftImg8bit.png'
    assert sorted(_defects(lines)) == sorted([
        f'image without annotation: {image} (expected {missing})',
        f'image without annotation: {extra} (expected '
        f'{root / "gtFine/train/aachen/aachen_000099_000019_gtFine_labelTrainIds.png"})',
        f'{root / "leftImg8bit/train"}: 41 images, expected 40',
        f'unexpected file: {stray} (neither a Cityscapes image, an annotation nor a known '
        'companion of one)'])


def test_pascal_context_missing_and_unlisted_files_are_one_line_each(generated, tmp_path):
    root = _copy(generated, 'pascal_context', tmp_path)
    listed_gone = root / 'JPEGImages' / '2010_000002.jpg'
    listed_gone.unlink()
    unlisted = root / 'SegmentationClassContext' / '2011_000001.png'
    shutil.copy(root / 'SegmentationClassContext' / '2008_000001.png', unlisted)
    # an image in no list is VOC2010's (it holds more images than Pascal Context labels): fine
    shutil.copy(root / 'JPEGImages' / '2008_000001.jpg', root / 'JPEGImages' / '2011_000002.jpg')
    label = root / 'SegmentationClassContext' / '2008_000005.png'
    values = np.asarray(Image.open(label)).copy()
    values[0, 0] = 60  # one past the 60 classes 0..59
    Image.fromarray(values).save(label)
    code, lines, err = _check_data('pascal_context', root)
    assert code != 0 and err.startswith('error: 3 defects in ') and err.count('\n') == 1
    val_list = root / 'ImageSets' / 'SegmentationContext' / 'val.txt'
    assert sorted(_defects(lines)) == sorted([
        f'listed image missing: {listed_gone} (listed in {val_list})',
        f'annotation in no split list: {unlisted}',
        f'label 60 out of range 0..59 or 255: {label}'])


def test_a_missing_dataset_says_what_it_is_and_how_to_get_it(tmp_path):
    for name, env in (('pascal_context', 'PASCAL_CONTEXT_ROOT'), ('cityscapes', 'CITYSCAPES_ROOT')):
        code, _, err = _check_data(name, tmp_path / 'none')
        assert code != 0 and err.count('\n') == 1
        assert f'{dataset(name).title} not found: no {tmp_path / "none"}/' in err and env in err


def test_cityscapes_conversion_without_cityscapesscripts_says_how_to_get_it(generated, tmp_path):
    """In a process where the package cannot be imported (whether or not this machine has it)."""
    root = _copy(generated, 'cityscapes', tmp_path)
    program = ("import sys; sys.modules['cityscapesscripts'] = None; "
               'from harness.cli import main; '
               "sys.exit(main(['check-data', '--dataset', 'cityscapes', '--convert', "
               "'--data-root', sys.argv[1]]))")
    out = subprocess.run([sys.executable, '-c', program, str(root)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, 'PYTHONPATH': str(REPO_ROOT)})
    assert out.returncode != 0 and out.stderr.count('\n') == 1, out.stderr
    assert out.stderr.startswith('error: cityscapesscripts is not installed: '
                                 '`pip install --no-deps -r requirements-no-deps.txt`')


def test_the_new_tables_name_their_dataset_and_an_unknown_one_is_refused(tmp_path):
    assert {name: load_table(name).dataset for name in ('pascal_context', 'cityscapes',
                                                         'table3')} == \
        {'pascal_context': 'pascal_context', 'cityscapes': 'cityscapes', 'table3': 'ade20k'}
    row = load_table('cityscapes').row('seg-l-mask-16')
    assert row.data.classes == 19 and row.references['official_zoo_ms'].miou == 81.3
    spec = yaml.safe_load((EXPERIMENTS / 'cityscapes.yaml').read_text())
    spec['dataset'] = 'coco'
    path = tmp_path / 'cityscapes.yaml'
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    with pytest.raises(SpecError) as err:
        load_table(path)
    assert str(err.value) == (f"{path}: field 'dataset': expected one of "
                              f"{', '.join(datasets())}, got 'coco'")


def test_cityscapes_conversion_draws_each_polygon_as_its_train_id(generated, tmp_path):
    """A frame whose train-id map is missing and whose polygon file is there: ``check-data
    --convert`` draws it with cityscapesscripts (later polygons over earlier ones, outside
    every polygon the unlabeled train id), and the copy then passes the check. The expected map
    is drawn here from the polygons the test writes."""
    from cityscapesscripts.helpers.labels import name2label
    root = _copy(generated, 'cityscapes', tmp_path)
    label = (root / 'gtFine' / 'val' / 'frankfurt'
             / 'frankfurt_000002_000019_gtFine_labelTrainIds.png')
    width, height = Image.open(label).size
    label.unlink()
    road = [[0, height // 2], [width - 1, height // 2], [width - 1, height - 1], [0, height - 1]]
    car = [[width // 4, height // 4], [width // 2, height // 4], [width // 2, 3 * height // 4],
           [width // 4, 3 * height // 4]]
    polygons = label.with_name(label.name.replace('_labelTrainIds.png', '_polygons.json'))
    polygons.write_text(json.dumps({'imgHeight': height, 'imgWidth': width, 'objects': [
        {'label': 'road', 'polygon': road}, {'label': 'car', 'polygon': car}]}))
    program = ('import sys; from harness.core.datasets import datasets; '
               'from tests.helpers import with_counts; d = datasets()["cityscapes"]; '
               'datasets()["cityscapes"] = with_counts(d, d.synthetic.counts); '
               'from harness.cli import main; '
               "sys.exit(main(['check-data', '--dataset', 'cityscapes', '--convert', "
               "'--data-root', sys.argv[1], '--workers', '2']))")
    out = subprocess.run([sys.executable, '-c', program, str(root)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, 'PYTHONPATH': str(REPO_ROOT)})
    assert out.returncode == 0, out.stdout + out.stderr
    drawn = np.array(Image.open(label))
    expected = Image.new('L', (width, height), name2label['unlabeled'].trainId)
    for name, polygon in (('road', road), ('car', car)):
        ImageDraw.Draw(expected).polygon([tuple(p) for p in polygon],
                                         fill=name2label[name].trainId)
    assert drawn.shape == (height, width)
    assert np.array_equal(drawn, np.array(expected))
    assert {int(v) for v in np.unique(drawn)} == {name2label[n].trainId
                                                  for n in ('unlabeled', 'road', 'car')}
