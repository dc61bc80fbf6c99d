# The recipe every row shares: mmseg's own Segmenter bases, with stock mmseg's departures from
# the official training recipe (rstrudel/segmenter) fixed where a config can fix them.
# Rows set the backbone size; the harness sets data root, weights, batch and work dir.
_base_ = [
    'mmseg::_base_/models/segmenter_vit-b16_mask.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]

# registers the project's modules (models, IterationWandbVisBackend, hooks, AMP wrapper)
custom_imports = dict(imports=['harness.models', 'harness.runtime'],
                      allow_failed_imports=False)

crop_size = (512, 512)
checkpoint = None  # stock bases name a pretrained URL here; weights come from the row spec
total_batch_size = 8  # the paper's batch; the harness divides it by the GPU count
max_iters = 160000  # the paper's schedule (the harness reads both values from here)

data_preprocessor = dict(size=crop_size)
model = dict(
    # mmseg's EncoderDecoder, sliding windows evaluated slide_batch at a time (same logits)
    type='BatchedSlideEncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,  # the row's converted weights file, filled in by the harness
    backbone=dict(
        # mmseg's ViT on fused attention, drop path on both residual branches (official;
        # stock: MLP branch only)
        type='SegmenterViT',
        img_size=crop_size,
        # official ViT (like timm and DeiT) has a bias in the patch embedding; stock drops it
        patch_bias=True,
        # official code resizes the 24x24 pretrained position grid bilinearly (stock: bicubic)
        interpolate_mode='bilinear',
        drop_path_rate=0.1,
        drop_rate=0.0,
        # official ViT uses nn.LayerNorm's default eps 1e-5 (stock: 1e-6, timm's value)
        norm_cfg=dict(type='LN', eps=1e-5, requires_grad=True),
    ),
    # official mask decoder: dropout 0.1, no drop path (stock: the reverse); official loss is
    # torch's cross-entropy, a mean over the non-ignored pixels (stock: over all pixels); mmseg's
    # loss computed on per-pixel rows of logits, on CPU from the low-resolution ones (same
    # value, faster)
    decode_head=dict(type='OfficialInitSegmenterMaskHead',  # projections drawn as officially
                     drop_path_rate=0.0, drop_rate=0.1,
                     loss_decode=dict(type='ChannelsLastCrossEntropyLoss', use_sigmoid=False,
                                      loss_weight=1.0, avg_non_ignore=True)),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(480, 480), slide_batch=8),
)

# official: timm SGD with Nesterov momentum, lr 1e-3, no weight decay, one lr for all
# parameters (stock: plain momentum)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.001, momentum=0.9, nesterov=True, weight_decay=0.0),
    clip_grad=None)
# official: poly 0.9 per iteration down to 1e-5, no warm-up (stock floor: 1e-4)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=16000)

train_dataloader = dict(batch_size=total_batch_size, num_workers=4)
val_dataloader = dict(batch_size=1, num_workers=4)
test_dataloader = val_dataloader

# stock hook's options; its files are written to a temporary name and renamed (a full disk or a
# kill never leaves a truncated checkpoint or pointer under the final name)
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=8000,
                    max_keep_ckpts=2, save_last=True))
