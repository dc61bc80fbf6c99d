"""Modules the harness registers in mmseg's registries (imported through ``custom_imports``)."""
from .distilled_vit import DistilledVisionTransformer
from .mask_head import OfficialInitSegmenterMaskHead

__all__ = ['DistilledVisionTransformer', 'OfficialInitSegmenterMaskHead']
