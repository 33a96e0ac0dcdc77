"""scarce: visual recognition when labels are scarce.

Two parts share this package: weakly-supervised segmentation/localization from image-level tags
(``scarce.data`` → ``scarce.training`` → ``scarce.cams`` → ``scarce.refinement`` → ``scarce.pseudo`` →
``scarce.metrics``; the whole chain reads top to bottom in ``scarce.pipeline``) and class-incremental
learning (``scarce.cil``).
"""

from scarce.errors import ScarceError, DataError, ConfigError

__version__ = "0.1.0"
__all__ = ["ScarceError", "DataError", "ConfigError", "__version__"]
