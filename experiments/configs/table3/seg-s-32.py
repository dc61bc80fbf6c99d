_base_ = ['../_base_/segmenter_linear.py']

model = dict(
    backbone=dict(embed_dims=384, num_layers=12, num_heads=6, patch_size=32),
    decode_head=dict(in_channels=384, channels=384))
