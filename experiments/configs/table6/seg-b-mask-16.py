_base_ = ['../_base_/segmenter_recipe.py']

model = dict(
    backbone=dict(embed_dims=768, num_layers=12, num_heads=12, patch_size=16),
    decode_head=dict(in_channels=768, channels=768, embed_dims=768, num_heads=12))
