"""Modules the harness registers in mmseg's registries (imported through ``custom_imports``)."""
from .distilled_vit import DistilledVisionTransformer

__all__ = ['DistilledVisionTransformer']
