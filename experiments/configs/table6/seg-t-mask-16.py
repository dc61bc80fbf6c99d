_base_ = ['../_base_/segmenter_recipe.py']

model = dict(
    backbone=dict(embed_dims=192, num_layers=12, num_heads=3, patch_size=16),
    decode_head=dict(in_channels=192, channels=192, embed_dims=192, num_heads=3))
