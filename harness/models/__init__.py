"""Modules the harness registers in mmseg's registries (imported through ``custom_imports``)."""
from .distilled_vit import DistilledVisionTransformer
from .loss import ChannelsLastCrossEntropyLoss
from .mask_head import OfficialInitSegmenterMaskHead
from .segmentor import BatchedSegTTAModel, BatchedSlideEncoderDecoder
from .vit import SegmenterViT

__all__ = ['BatchedSegTTAModel', 'BatchedSlideEncoderDecoder', 'ChannelsLastCrossEntropyLoss',
           'DistilledVisionTransformer', 'OfficialInitSegmenterMaskHead', 'SegmenterViT']
