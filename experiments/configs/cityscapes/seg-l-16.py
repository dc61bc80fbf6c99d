_base_ = ['../_base_/cityscapes.py']

# the linear decoder of _base_/segmenter_linear.py (a config inherits one chain: that file's
# recipe base is the ADE20K one)
model = dict(
    backbone=dict(embed_dims=1024, num_layers=24, num_heads=16, patch_size=16),
    decode_head=dict(
        _delete_=True, type='FCNHead', in_channels=1024, channels=1024, num_convs=0,
        concat_input=False, dropout_ratio=0.0, num_classes=19, align_corners=False,
        loss_decode=dict(type='ChannelsLastCrossEntropyLoss', use_sigmoid=False,
                         loss_weight=1.0, avg_non_ignore=True)))
