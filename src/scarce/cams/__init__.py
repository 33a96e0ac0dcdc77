"""Class activation maps: one core (multi-scale, flip, normalisation) and small method plug-ins."""

from scarce.cams.base import (
    CAM_METHODS,
    CamConfig,
    CamExtractor,
    CamMethod,
    build_cam_method,
    multiscale_cams,
    normalize_cams,
    register_cam_method,
)
from scarce.cams import cam as _cam, gradcam as _gradcam  # noqa: F401  (register the built-in methods)
from scarce.cams.cam import ClassActivationMap
from scarce.cams.gradcam import GradCam

__all__ = [
    "CAM_METHODS", "CamConfig", "CamExtractor", "CamMethod", "build_cam_method", "multiscale_cams",
    "normalize_cams", "register_cam_method", "ClassActivationMap", "GradCam",
]
