"""Pseudo labels: CAMs → label maps (IRN background rule, confident seeds) and label PNG output."""

from scarce.pseudo.masks import (
    IGNORE_LABEL,
    cams_to_confident_labels,
    cams_to_labels,
    save_label_png,
    top_class,
    voc_palette,
)

__all__ = ["IGNORE_LABEL", "cams_to_labels", "cams_to_confident_labels", "save_label_png", "top_class", "voc_palette"]
