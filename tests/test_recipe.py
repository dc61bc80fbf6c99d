"""The full profile of every row is the official Segmenter recipe, number by number.

Each expected value is the official code's (rstrudel/segmenter), as listed in the project's
reference notes; changing any one of them in a config makes this test fail.
"""
import pytest

from harness.core.request import JobRequest
from harness.core.spec import available_tables, load_table
from harness.prepare.job_config import build_config

ROWS = [row for name in available_tables() for row in load_table(name).rows]
# The official code's values per dataset (segm/config.yml, segm/data/config/<dataset>.py,
# segm/data/<dataset>.py): learning rate, iterations (its epochs at its batch, as mmseg rounds
# them), batch, mmseg dataset class, classes, zero-label reduction, the (long, short) scale of
# the test image at the dataset's own crop, and the sliding window's stride at that crop
OFFICIAL = {
    'ade20k': dict(lr=0.001, iters=160000, batch=8, type='ADE20KDataset', classes=150,
                   reduce=True, crop=512, scale=(2048, 512), stride=480),
    'pascal_context': dict(lr=0.001, iters=80000, batch=16, type='PascalContextDataset',
                           classes=60, reduce=False, crop=480, scale=(4160, 520), stride=320),
    'cityscapes': dict(lr=0.01, iters=80000, batch=8, type='CityscapesDataset', classes=19,
                       reduce=False, crop=768, scale=(2048, 1024), stride=512),
}
# ADE20K's Seg-L-Mask/16 trains on 640 crops (official ade20k config), scale and stride with it
OTHER_CROPS = {('ade20k', 640): dict(scale=(2560, 640), stride=608)}


def official(row) -> dict:
    values = OFFICIAL[row.dataset]
    return {**values, **OTHER_CROPS.get((row.dataset, row.crop_size), {})}


def test_the_dataset_declarations_are_the_official_recipes():
    """experiments/datasets.yaml, which the checks, the plan and the synthetic data read, holds
    the same recipe as the configs build."""
    from harness.core.datasets import datasets
    assert set(datasets()) == set(OFFICIAL)
    for name, declared in datasets().items():
        values, recipe = OFFICIAL[name], declared.recipe
        assert (recipe.lr, recipe.iterations, recipe.batch, declared.mmseg_type,
                declared.classes, declared.reduce_zero_label, recipe.crop, recipe.test_scale,
                recipe.slide_crop, recipe.slide_stride) == \
            (values['lr'], values['iters'], values['batch'], values['type'], values['classes'],
             values['reduce'], values['crop'], values['scale'], values['crop'],
             values['stride']), name
VIT_NORM = dict(mean=[127.5] * 3, std=[127.5] * 3)  # AugReg ViT weights
IMAGENET_NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])  # DeiT


@pytest.fixture(scope='module', params=ROWS, ids=lambda r: f'{r.table}-{r.id}')
def row_cfg(request, tmp_path_factory):
    row, folder = request.param, tmp_path_factory.mktemp(request.param.id)
    return row, build_config(JobRequest(row=row, profile='full', seed=0, work_dir=folder,
                                        data_root=folder))


def test_optimiser_and_schedule(row_cfg):
    row, cfg = row_cfg
    values = official(row)
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.momentum, optimizer.nesterov,
            optimizer.weight_decay) == ('SGD', values['lr'], 0.9, True, 0.0)
    assert 'paramwise_cfg' not in cfg.optim_wrapper  # one lr for encoder and decoder
    assert cfg.optim_wrapper.get('clip_grad') is None
    (poly,) = cfg.param_scheduler  # no warm-up
    assert (poly.type, poly.power, poly.eta_min, poly.begin, poly.end, poly.by_epoch) == \
        ('PolyLR', 0.9, 1e-5, 0, values['iters'], False)
    assert cfg.train_cfg.max_iters == values['iters']
    assert cfg.train_dataloader.batch_size == cfg.total_batch_size == values['batch']


def test_data_and_augmentation(row_cfg):
    row, cfg = row_cfg
    crop = (row.crop_size, row.crop_size)
    values = official(row)
    dataset = cfg.train_dataloader.dataset.dataset
    assert dataset.type == cfg.test_dataloader.dataset.type == values['type']
    steps = {s['type']: s for s in dataset.pipeline}
    assert list(steps) == ['LoadImageFromFile', 'LoadAnnotations', 'RandomResize', 'RandomCrop',
                           'RandomFlip', 'PhotoMetricDistortion', 'PackSegInputs']
    assert steps['LoadAnnotations'].get('reduce_zero_label', False) is values['reduce']
    assert steps['RandomResize']['scale'] == values['scale']
    tests = {s['type']: s for s in cfg.test_dataloader.dataset.pipeline}
    assert tests['Resize']['scale'] == values['scale'] and tests['Resize']['keep_ratio']
    assert tests['LoadAnnotations'].get('reduce_zero_label', False) is values['reduce']
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
    cfg = build_config(JobRequest(row=load_table('table3').rows[0], profile=profile, seed=3,
                                  work_dir=tmp_path,
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
    assert head.num_classes == official(row)['classes']
    loss = head.loss_decode
    assert (loss.type, loss.use_sigmoid, loss.avg_non_ignore, loss.get('class_weight')) == \
        ('ChannelsLastCrossEntropyLoss', False, True, None)


def test_single_scale_evaluation(row_cfg):
    row, cfg = row_cfg
    test_cfg = cfg.model.test_cfg
    stride = official(row)['stride']
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
