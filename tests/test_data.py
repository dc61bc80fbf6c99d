"""ADE20K checks: every defect is one line naming the file, and nothing on disk is lost."""
import re
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from harness.assets.data import DataError, check_files, check_layout, unpack
from harness.assets.synthetic import SPLITS
from tests.helpers import harness_cli

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
        return f'ADE20K not found: no {val_labels}'
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


def test_every_defect_is_listed_not_only_the_first(copy, tmp_path):
    expected = [_defect(copy, kind) for kind in ('missing annotation', 'corrupt image',
                                                 'label out of range')]
    with pytest.raises(DataError) as serial:
        check_files(copy, SMALL_COUNTS, workers=1)
    with pytest.raises(DataError) as parallel:
        check_files(copy, SMALL_COUNTS, workers=2)
    for err in (serial.value, parallel.value):
        assert err.count == 3 and len(err.defects) == 3
        assert all(d.startswith(e) for d, e in zip(sorted(err.defects), sorted(expected)))
    assert serial.value.defects == parallel.value.defects  # file order, however many workers
    result = harness_cli('check-data', '--data-root', copy)
    assert result.returncode == 2 and result.stderr.count('\n') == 1
    assert result.stderr.startswith(f'error: {3 + 2} defects in {copy} (listed above)')
    listed = [line.strip() for line in result.stdout.splitlines() if line.startswith('  ')]
    # and the two count mismatches of the small copy against the real ADE20K counts
    assert len(listed) == 5 and all(any(line.startswith(e) for line in listed)
                                    for e in expected)
    progress = re.search(r'decoding (\d+) files .* (\d+)/(\d+) +(\d+) defects', result.stdout)
    pairs = sum(SMALL_COUNTS.values()) - 1  # one image lost its annotation
    assert progress and progress.groups() == (str(2 * pairs), str(pairs), str(pairs), '5')


def test_a_missing_dataset_is_explained_by_every_check(tmp_path):
    missing = tmp_path / 'nowhere' / 'ADEChallengeData2016'
    for args in (('check-data', '--layout-only'), ('check-data',),
                 ('run', '--table', 'table3', '--profile', 'full', '--work-root',
                  tmp_path / 'work')):
        result = harness_cli(*args, '--data-root', missing)
        assert result.returncode == 2 and result.stderr.count('\n') == 1, result.stderr
        assert result.stderr.startswith(f'error: ADE20K not found: no {missing / "images"}')
        assert 'make data ZIP=' in result.stderr and 'ADE20K_ROOT=' in result.stderr
    assert not (tmp_path / 'work').exists()


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


def _zip(archive, root, prefix=''):
    with zipfile.ZipFile(archive, 'w') as zf:
        zf.writestr(f'{prefix}README.txt', 'not part of the dataset')
        for path in sorted(root.rglob('*')):
            zf.write(path, f'{prefix}{path.relative_to(root.parent)}')
    return archive


def test_a_nested_dataset_folder_is_found_and_unpacked_once(tmp_path, copy):
    archive = _zip(tmp_path / 'ade.zip', copy, prefix='release_2016/')
    data_dir = tmp_path / 'data'
    data_dir.mkdir()
    root = unpack(archive, data_dir)
    assert root == data_dir / 'ADEChallengeData2016'
    assert [p.name for p in data_dir.iterdir()] == ['ADEChallengeData2016']  # nothing else
    assert _files(root) == _files(copy)
    assert check_files(root, SMALL_COUNTS) == SMALL_COUNTS


def test_an_archive_without_the_dataset_is_refused_before_writing(tmp_path, copy):
    other = copy.rename(copy.with_name('SomethingElse'))
    archive = _zip(tmp_path / 'other.zip', other)
    data_dir = tmp_path / 'data'
    data_dir.mkdir()
    result = harness_cli('check-data', '--zip', archive, '--data-root',
                         data_dir / 'ADEChallengeData2016')
    assert result.returncode == 2 and result.stderr.count('\n') == 1
    assert f'{archive} has no ADEChallengeData2016/ folder' in result.stderr
    assert list(data_dir.iterdir()) == []
