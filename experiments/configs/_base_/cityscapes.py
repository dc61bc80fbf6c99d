# Cityscapes as the authors' code trains it (segm/config.yml, segm/data/config/cityscapes.py):
# 19 train-id classes, crop 768, batch 8, lr 1e-2, 216 epochs (~80k iterations), sliding
# window 768 / stride 512, test images at 2048x1024. Rows set the backbone size.
_base_ = ['./segmenter_recipe.py']

crop_size = (768, 768)
total_batch_size = 8
max_iters = 80000
num_classes = 19
# stock mmseg's cityscapes base crops 512x1024; the authors crop 768x768 (mmseg's cityscapes_768
# base would resize to 2049x1025); both test at the full 2048x1024 as here
test_scale = (2048, 1024)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=test_scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=test_scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=total_batch_size, dataset=dict(
    _delete_=True, type='CityscapesDataset', data_root='data/cityscapes',
    data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train'),
    pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(
    _delete_=True, type='CityscapesDataset', data_root='data/cityscapes',
    data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
    pipeline=test_pipeline))
test_dataloader = val_dataloader

data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(img_size=crop_size),
    decode_head=dict(num_classes=num_classes),
    test_cfg=dict(crop_size=crop_size, stride=(512, 512)))
# official: lr 1e-2 on Cityscapes (1e-3 elsewhere)
optim_wrapper = dict(optimizer=dict(lr=0.01))
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=8000)
