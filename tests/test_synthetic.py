import numpy as np
import pytest
from mmseg.datasets import ADE20KDataset
from mmseg.utils import register_all_modules
from PIL import Image

from harness.assets.synthetic import (
    COMPLETE_MARK,
    SCENE_CLASSES,
    SPLITS,
    ensure_dataset,
)


def test_exact_ade20k_layout_and_label_range(synthetic_root):
    for split, (prefix, count) in SPLITS.items():
        images = sorted((synthetic_root / 'images' / split).iterdir())
        labels = sorted((synthetic_root / 'annotations' / split).iterdir())
        assert len(images) == len(labels) == count
        assert images[0].name == f'ADE_{prefix}_00000001.jpg'
        for image_path, label_path in zip(images, labels):
            assert image_path.stem == label_path.stem and label_path.suffix == '.png'
            image, label = Image.open(image_path), np.array(Image.open(label_path))
            assert image.mode == 'RGB' and image.size == label.shape[::-1]
            assert set(np.unique(label)) <= {0, *SCENE_CLASSES}  # 0 = other (ignored)


def test_mmseg_reads_it_as_ade20k(synthetic_root):
    register_all_modules()  # mmseg's LoadAnnotations, not mmcv's
    dataset = ADE20KDataset(
        data_root=str(synthetic_root),
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=[dict(type='LoadAnnotations', reduce_zero_label=True)])
    assert len(dataset) == SPLITS['validation'][1]
    seg = dataset[0]['gt_seg_map']
    assert set(np.unique(seg)) <= {255, *(c - 1 for c in SCENE_CLASSES)}


def test_generated_once_and_refuses_foreign_folder(synthetic_root, tmp_path):
    mark = synthetic_root / COMPLETE_MARK
    before = mark.stat().st_mtime_ns
    assert ensure_dataset(synthetic_root) == synthetic_root
    assert mark.stat().st_mtime_ns == before
    foreign = tmp_path / 'ADEChallengeData2016'
    foreign.mkdir()
    (foreign / 'keep.txt').write_text('mine')
    with pytest.raises(FileExistsError, match='not a complete synthetic dataset'):
        ensure_dataset(foreign)
    assert (foreign / 'keep.txt').read_text() == 'mine'


def test_ade20k_sized_dataset_has_ade20k_image_sizes(ade_sized_root):
    from harness.assets.synthetic import (
        ADE20K_ASPECTS,
        ADE20K_SHORT_SIDE,
        ADE20K_SIZED_SPLITS,
    )
    register_all_modules()
    shapes = set()
    for split, (prefix, count) in ADE20K_SIZED_SPLITS.items():
        images = sorted((ade_sized_root / 'images' / split).iterdir())
        labels = sorted((ade_sized_root / 'annotations' / split).iterdir())
        assert len(images) == len(labels) == count
        assert [p.name for p in images] == [f'ADE_{prefix}_{i:08d}.jpg'
                                            for i in range(1, count + 1)]
        for image_path, label_path in zip(images, labels):
            image, label = Image.open(image_path), np.array(Image.open(label_path))
            assert image.mode == 'RGB' and image.size == label.shape[::-1]
            assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, *SCENE_CLASSES}
            short, long = sorted(image.size)
            assert short in ADE20K_SHORT_SIDE
            assert any(abs(long - short * max(a, 1 / a)) <= 1 for a in ADE20K_ASPECTS)
            shapes.add(image.size[0] > image.size[1])
            assert len(np.unique(label)) >= 3  # several classes in every 512 crop's reach
    assert shapes == {True, False}  # landscape and portrait images
    dataset = ADE20KDataset(
        data_root=str(ade_sized_root),
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=[dict(type='LoadAnnotations', reduce_zero_label=True)])
    assert len(dataset) == ADE20K_SIZED_SPLITS['training'][1]


def test_unknown_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic size 'huge'"):
        ensure_dataset(tmp_path / 'x', size='huge')
    assert not (tmp_path / 'x').exists()
