"""ADE20K checks: every defect is one line naming the file, and nothing on disk is lost."""
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from harness.assets.data import DataError, check_files, check_layout, unpack
from harness.assets.synthetic import SPLITS
from tests.conftest import harness_cli

SMALL_COUNTS = {split: count for split, (_, count) in SPLITS.items()}


@pytest.fixture
def copy(tmp_path, synthetic_root):
    root = tmp_path / 'ADEChallengeData2016'
    shutil.copytree(synthetic_root, root)
    return root


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob('*') if p.is_file())


def test_a_sound_copy_passes(copy):
    assert check_files(copy, SMALL_COUNTS) == SMALL_COUNTS


def _defect(copy, kind):
    val_images, val_labels = copy / 'images/validation', copy / 'annotations/validation'
    if kind == 'missing folder':
        shutil.rmtree(val_labels)
        return f'missing folder: {val_labels}'
    if kind == 'missing annotation':
        (val_labels / 'ADE_val_00000003.png').unlink()
        return f'image without annotation: {val_images / "ADE_val_00000003.jpg"}'
    if kind == 'corrupt image':
        (val_images / 'ADE_val_00000004.jpg').write_bytes(b'\xff\xd8 truncated')
        return f'unreadable file: {val_images / "ADE_val_00000004.jpg"}'
    if kind == 'label out of range':
        path = val_labels / 'ADE_val_00000005.png'
        label = np.array(Image.open(path))
        label[0, 0] = 200
        Image.fromarray(label).save(path)
        return f'label 200 out of range 0..150: {path}'
    raise AssertionError(kind)


@pytest.mark.parametrize('kind', ['missing folder', 'missing annotation', 'corrupt image',
                                  'label out of range'])
def test_each_defect_is_named(copy, kind):
    expected = _defect(copy, kind)
    before = _files(copy)
    with pytest.raises(DataError) as err:
        check_files(copy, SMALL_COUNTS)
    assert str(err.value).startswith(expected) and '\n' not in str(err.value)
    assert _files(copy) == before  # the check reads, never writes


def test_wrong_counts_through_the_cli(copy):
    result = harness_cli('check-data', '--data-root', copy)
    assert result.returncode == 2 and result.stderr.count('\n') == 1
    assert f'{copy / "images/training"}: 40 images, expected 20210' in result.stderr
    with pytest.raises(DataError, match='expected 20210'):
        check_layout(copy)


def test_unpack_the_official_zip_then_check(tmp_path, copy):
    archive = tmp_path / 'ADEChallengeData2016.zip'
    with zipfile.ZipFile(archive, 'w') as zf:
        for path in copy.rglob('*'):
            zf.write(path, path.relative_to(copy.parent))
    data_dir = tmp_path / 'data'
    data_dir.mkdir()
    root = unpack(archive, data_dir)
    assert root == data_dir / 'ADEChallengeData2016'
    assert check_files(root, SMALL_COUNTS) == SMALL_COUNTS
    with pytest.raises(DataError, match='exists'):  # a second unpack never overwrites
        unpack(archive, data_dir)
    assert check_files(root, SMALL_COUNTS) == SMALL_COUNTS
    broken = tmp_path / 'broken.zip'
    broken.write_bytes(b'PK not a zip')
    other = tmp_path / 'other'
    other.mkdir()
    with pytest.raises(DataError, match='cannot open'):
        unpack(broken, other)
    assert list(other.iterdir()) == []  # no partial folder left behind
