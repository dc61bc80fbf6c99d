# Seg-B† rows: DeiT-B distilled encoder (class + distillation token) and ImageNet normalisation,
# which is what DeiT weights expect (AugReg ViT weights expect mean = std = 127.5).
model = dict(
    data_preprocessor=dict(
        mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]),
    backbone=dict(type='DistilledVisionTransformer'))
