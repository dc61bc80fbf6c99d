# Linear decoder of Table 3: one linear layer on the patch tokens (a 1x1 conv on the token
# grid), logits upsampled bilinearly to the input before the loss.
_base_ = ['./segmenter_recipe.py']

model = dict(
    decode_head=dict(
        _delete_=True,
        type='FCNHead',
        in_channels=768,
        channels=768,
        num_convs=0,
        concat_input=False,
        dropout_ratio=0.0,
        num_classes=150,
        align_corners=False,
        # mean over the non-ignored pixels, as the official torch cross-entropy (mmseg's loss,
        # computed on per-pixel rows of logits: same value, faster)
        loss_decode=dict(type='ChannelsLastCrossEntropyLoss', use_sigmoid=False,
                         loss_weight=1.0, avg_non_ignore=True)))
