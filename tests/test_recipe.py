"""The full profile of every row is the official Segmenter recipe, number by number.

Each expected value is the official code's (rstrudel/segmenter), as listed in the project's
reference notes; changing any one of them in a config makes this test fail.
"""
import pytest

from harness.core.request import JobRequest
from harness.core.spec import load_table
from harness.prepare.job_config import build_config

ROWS = [row for name in ('table3', 'table6') for row in load_table(name).rows]
VIT_NORM = dict(mean=[127.5] * 3, std=[127.5] * 3)  # AugReg ViT weights
IMAGENET_NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])  # DeiT


@pytest.fixture(scope='module', params=ROWS, ids=lambda r: r.id)
def row_cfg(request, tmp_path_factory):
    row, folder = request.param, tmp_path_factory.mktemp(request.param.id)
    return row, build_config(JobRequest(row=row, profile='full', seed=0, work_dir=folder,
                                        data_root=folder))


def test_optimiser_and_schedule(row_cfg):
    _, cfg = row_cfg
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.momentum, optimizer.nesterov,
            optimizer.weight_decay) == ('SGD', 0.001, 0.9, True, 0.0)
    assert 'paramwise_cfg' not in cfg.optim_wrapper  # one lr for encoder and decoder
    assert cfg.optim_wrapper.get('clip_grad') is None
    (poly,) = cfg.param_scheduler  # no warm-up
    assert (poly.type, poly.power, poly.eta_min, poly.begin, poly.end, poly.by_epoch) == \
        ('PolyLR', 0.9, 1e-5, 0, 160000, False)
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.train_dataloader.batch_size == 8


def test_data_and_augmentation(row_cfg):
    row, cfg = row_cfg
    crop = (row.crop_size, row.crop_size)
    short = row.crop_size
    steps = {s['type']: s for s in cfg.train_dataloader.dataset.dataset.pipeline}
    assert list(steps) == ['LoadImageFromFile', 'LoadAnnotations', 'RandomResize', 'RandomCrop',
                           'RandomFlip', 'PhotoMetricDistortion', 'PackSegInputs']
    assert steps['LoadAnnotations']['reduce_zero_label'] is True
    assert steps['RandomResize']['scale'] == (4 * short, short)
    assert steps['RandomResize']['ratio_range'] == (0.5, 2.0)
    assert steps['RandomCrop']['crop_size'] == crop
    assert steps['RandomCrop']['cat_max_ratio'] == 0.75
    assert steps['RandomFlip']['prob'] == 0.5
    preprocessor = cfg.model.data_preprocessor
    assert preprocessor.size == crop and preprocessor.seg_pad_val == 255
    norm = IMAGENET_NORM if row.backbone.startswith('DeiT') else VIT_NORM
    assert (preprocessor.mean, preprocessor.std) == (norm['mean'], norm['std'])


@pytest.mark.parametrize('profile', ['full', 'smoke'])
def test_data_is_seeded_by_position_in_both_profiles(profile, tmp_path):
    """Data order and augmentations come from (seed, position), not from the loader workers;
    a resume skips to its iteration without loading the batches before it."""
    cfg = build_config(JobRequest(row=ROWS[0], profile=profile, seed=3, work_dir=tmp_path,
                                  data_root=tmp_path))
    loader = cfg.train_dataloader
    assert loader.sampler == dict(type='PositionSampler', shuffle=True)
    assert loader.dataset.type == 'PositionSeededDataset'
    assert loader.dataset.dataset.type == 'ADE20KDataset'
    assert [h['type'] for h in cfg.custom_hooks].count('DataResumeHook') == 1
    assert cfg.randomness.seed == 3  # mmengine hands it to the sampler


def test_encoder(row_cfg):
    row, cfg = row_cfg
    backbone = cfg.model.backbone
    assert backbone.drop_path_rate == 0.1 and backbone.drop_rate == 0.0
    assert backbone.attn_drop_rate == 0.0
    assert backbone.patch_bias is True
    assert backbone.interpolate_mode == 'bilinear'
    assert backbone.final_norm is True and backbone.with_cls_token is True
    assert backbone.norm_cfg.eps == 1e-5  # nn.LayerNorm's default, as in the official ViT
    assert backbone.patch_size == row.patch_size
    # official block: drop path on the attention branch too (mmseg's layer: MLP branch only)
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    import harness.models  # noqa: F401
    from harness.models.vit import SegmenterViT
    register_all_modules()
    assert issubclass(MODELS.get(backbone.type), SegmenterViT)
    assert backbone.get('fused_attention', True) is True


def test_decoder_and_loss(row_cfg):
    row, cfg = row_cfg
    head = cfg.model.decode_head
    if row.decoder == 'mask':
        assert head.type == 'OfficialInitSegmenterMaskHead'
        assert (head.num_layers, head.drop_rate, head.drop_path_rate) == (2, 0.1, 0.0)
        assert head.num_heads == head.embed_dims // 64 and head.embed_dims == head.in_channels
        assert head.get('mlp_ratio', 4) == 4
    else:
        assert (head.type, head.num_convs, head.kernel_size if 'kernel_size' in head else 1,
                head.dropout_ratio, head.concat_input) == ('FCNHead', 0, 1, 0.0, False)
    assert head.num_classes == 150
    loss = head.loss_decode
    assert (loss.type, loss.use_sigmoid, loss.avg_non_ignore, loss.get('class_weight')) == \
        ('ChannelsLastCrossEntropyLoss', False, True, None)


def test_single_scale_evaluation(row_cfg):
    row, cfg = row_cfg
    test_cfg = cfg.model.test_cfg
    stride = {512: 480, 640: 608}[row.crop_size]
    assert (test_cfg.mode, test_cfg.crop_size, test_cfg.stride) == \
        ('slide', (row.crop_size,) * 2, (stride, stride))


def test_pretrained_weights_are_the_rows(row_cfg):
    row, cfg = row_cfg
    assert cfg.model.pretrained.endswith(row.pretrained_file)
    expected = {
        'ViT-Ti': 'vit_tiny_patch16_384', 'ViT-S': f'vit_small_patch{row.patch_size}_384',
        'ViT-B': f'vit_base_patch{row.patch_size}_384', 'ViT-L': 'vit_large_patch16_384',
        'DeiT-B distilled (IN-1k)': 'deit_base_distilled_patch16_384'}[row.backbone]
    if row.id == 'seg-b-8':
        assert row.pretrained_id is None  # no public release matches: the user supplies it
    else:
        assert row.pretrained_id.split('/')[1].split('.')[0] == expected
