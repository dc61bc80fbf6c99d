# Pascal Context as the authors' code trains it (segm/config.yml, segm/data/config/
# pascal_context.py): 60 classes, crop 480, batch 16, lr 1e-3, 256 epochs (~80k iterations),
# sliding window 480 / stride 320. Rows set the backbone size.
_base_ = ['./segmenter_recipe.py']

crop_size = (480, 480)
total_batch_size = 16
max_iters = 80000
num_classes = 60
# The authors' PascalContextDataset keeps background as class 0 (n_cls = 60, no zero-label
# reduction, background counted in mIoU): mmseg's PascalContextDataset, not the 59-class one.
# Stock mmseg resizes to scale (520, 520), which bounds the long side by 520; the authors
# resize the short side to 520 (img_scale (8 x 520, 520)), in training and testing alike.
test_scale = (4160, 520)
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
    _delete_=True, type='PascalContextDataset', data_root='data/VOCdevkit/VOC2010',
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassContext'),
    ann_file='ImageSets/SegmentationContext/train.txt', pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(
    _delete_=True, type='PascalContextDataset', data_root='data/VOCdevkit/VOC2010',
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassContext'),
    ann_file='ImageSets/SegmentationContext/val.txt', pipeline=test_pipeline))
test_dataloader = val_dataloader

data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(img_size=crop_size),
    decode_head=dict(num_classes=num_classes),
    test_cfg=dict(crop_size=crop_size, stride=(320, 320)))
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=8000)
