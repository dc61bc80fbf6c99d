_base_ = ['../_base_/pascal_context.py']

model = dict(
    backbone=dict(embed_dims=1024, num_layers=24, num_heads=16, patch_size=16),
    decode_head=dict(in_channels=1024, channels=1024, embed_dims=1024, num_heads=16))
