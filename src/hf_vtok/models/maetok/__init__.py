from .configuration_maetok import MAETOK_PRESETS, MAETokConfig
from .feature_targets_maetok import HOGFeatures, MAETokFeatureTargets
from .modeling_maetok import MAETokModel

__all__ = ["MAETOK_PRESETS", "HOGFeatures", "MAETokConfig", "MAETokFeatureTargets", "MAETokModel"]
