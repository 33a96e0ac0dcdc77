"""SAM prompts: each class's CAM prompts a Segment Anything model (Kirillov et al., ICCV'23), whose mask is the
refined map of that class.

The first seed's remark: a box around an object, given to SAM, returns its mask (on VOC, ground-truth boxes
through SAM give masks at 86 % mIoU). Here the prompt comes from the CAM instead of a detector:

- ``box`` (default): the box of the largest 8-connected region where the CAM exceeds ``box_threshold`` × its
  maximum (CAM's own box rule, Zhou et al. CVPR'16: 20 % of the max, the largest component), in SAM's XYXY
  pixel-edge coordinates;
- ``point``: the CAM's peak as one positive point;
- ``box+point``: both.

As SAM's ``SamPredictor.predict`` advises and its predictor example does, a single point (an ambiguous prompt)
asks for three candidate masks and keeps the one with the highest predicted IoU, while a box (alone or with the
point) asks for one mask. Its logits go through a sigmoid, so the refined map is SAM's mask probability in
[0, 1]: the pipeline's background threshold (chosen on val) then applies as to any map.
A class whose CAM is zero everywhere has no prompt and gets an all-zero map.

No checkpoint can be downloaded here: ``checkpoint`` (the official ``sam_vit_b_01ec64.pth`` etc.) is required
and ``model_type`` must match it (``vit_b``, ``vit_l``, ``vit_h``). ``segment-anything`` is the ``sam`` extra.
The tests check the plumbing with a small randomly initialised SAM, never the quality of SAM's masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from scarce.errors import ConfigError
from scarce.localization.boxes import boxes_from_cam
from scarce.refinement.base import Refiner, register_refiner
from scarce.refinement.pamr import check_batch

PROMPTS = ("box", "point", "box+point")
CAM_BOX_THRESHOLD = 0.2  # CAM (Zhou et al., CVPR'16): 20 % of the map's max, the largest connected component


def cam_prompt(cam: np.ndarray, prompt: str, box_threshold: float) -> dict[str, np.ndarray] | None:
    """SAM's prompt arguments for one (H, W) CAM: ``box`` (XYXY, pixel edges) and/or ``point_coords`` (x, y) with
    ``point_labels`` 1; None when the map is zero everywhere (no region to prompt)."""
    if not np.any(cam > 0):
        return None
    out: dict[str, np.ndarray] = {}
    if "box" in prompt:
        boxes = boxes_from_cam(cam, threshold=box_threshold, rule="largest", standard="max")
        if not boxes:
            return None
        box = boxes[0]
        out["box"] = np.array([box.x0, box.y0, box.x1, box.y1], dtype=np.float32)
    if "point" in prompt:
        y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
        out["point_coords"] = np.array([[x, y]], dtype=np.float32)
        out["point_labels"] = np.array([1], dtype=np.int64)
    return out


@register_refiner("sam")
class SamRefiner(Refiner):
    """Options: ``checkpoint`` (required: a Segment Anything checkpoint file), ``model_type`` (vit_b; must match
    the checkpoint), ``prompt`` (box | point | box+point; box), ``box_threshold`` (0.2 of the CAM's max),
    ``device`` (default: cuda when available, else cpu)."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        known = {"checkpoint", "model_type", "prompt", "box_threshold", "device"}
        unknown = set(self.options) - known
        if unknown:
            raise ConfigError(f"refine sam: unknown option(s) {sorted(unknown)}; known: {', '.join(sorted(known))}")
        if not self.options.get("checkpoint"):
            raise ConfigError("refine sam: option 'checkpoint' is required: the path of a Segment Anything "
                              "checkpoint (e.g. sam_vit_b_01ec64.pth from facebookresearch/segment-anything); "
                              "scarce cannot download one")
        self.checkpoint = Path(self.options["checkpoint"])
        self.model_type = str(self.options.get("model_type", "vit_b"))
        self.prompt = str(self.options.get("prompt", "box"))
        self.box_threshold = float(self.options.get("box_threshold", CAM_BOX_THRESHOLD))
        if self.prompt not in PROMPTS:
            raise ConfigError(f"refine sam: prompt must be one of {', '.join(PROMPTS)}, got {self.prompt!r}")
        if not 0.0 <= self.box_threshold < 1.0:
            raise ConfigError(f"refine sam: box_threshold must lie in [0, 1), got {self.box_threshold}")
        self.device = self.options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        self._predictor: Any = None

    def predictor(self) -> Any:
        """SAM's predictor, built once: the registry's architecture, then the checkpoint's weights (loaded safely)."""
        if self._predictor is None:
            try:
                from segment_anything import SamPredictor, sam_model_registry
            except ImportError as error:
                raise ConfigError("refine sam needs the segment-anything package: pip install 'scarce[sam]'") from error
            if self.model_type not in sam_model_registry:
                raise ConfigError(f"refine sam: model_type must be one of {', '.join(sam_model_registry)}, "
                                  f"got {self.model_type!r}")
            if not self.checkpoint.is_file():
                raise ConfigError(f"refine sam: checkpoint {self.checkpoint} does not exist")
            model = sam_model_registry[self.model_type]()
            try:
                state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
                model.load_state_dict(state)
            except Exception as error:  # a wrong file or another model type: say which file
                raise ConfigError(f"refine sam: cannot load {self.checkpoint} as a {self.model_type} SAM checkpoint: "
                                  f"{error}") from error
            self._predictor = SamPredictor(model.to(self.device).eval())
        return self._predictor

    def __call__(self, images: torch.Tensor, cams: Sequence[torch.Tensor],
                 keys: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        check_batch(images, cams, keys)
        out = []
        for image, maps in zip(images, cams):
            refined = torch.zeros_like(maps)
            prompts = [cam_prompt(m.detach().cpu().numpy(), self.prompt, self.box_threshold) for m in maps]
            if any(p is not None for p in prompts):
                predictor = self.predictor()
                rgb = (image.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
                predictor.set_image(rgb)  # the image embedding is computed once for all its classes
                for k, prompt in enumerate(prompts):
                    if prompt is None:
                        continue
                    ambiguous = "box" not in prompt  # one click: three candidates, the best-scored kept
                    with torch.no_grad():
                        logits, scores, _ = predictor.predict(**prompt, multimask_output=ambiguous,
                                                              return_logits=True)
                    best = torch.as_tensor(np.asarray(logits[int(np.argmax(scores))]), dtype=torch.float32)
                    refined[k] = torch.sigmoid(best).to(maps.device, maps.dtype)
            out.append(refined)
        return out
