_base_ = ['../_base_/segmenter_linear.py']

# Seg-B†: DeiT-B distilled encoder (class + distillation token), with the ImageNet
# normalisation DeiT weights expect (AugReg ViT weights expect mean = std = 127.5)
model = dict(
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]),
    backbone=dict(type='DistilledVisionTransformer', embed_dims=768, num_layers=12,
                  num_heads=12, patch_size=16),
    decode_head=dict(in_channels=768, channels=768))
