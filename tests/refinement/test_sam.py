"""SAM prompts: the plumbing only, with a small randomly initialised Segment Anything model (no real checkpoint can
be had here, so nothing is said about the quality of its masks).

Prompts are checked against boxes and peaks computed by hand; the map kept is checked against what a stub
predictor returns (the best-scored of three for a point, the one mask asked for a box); the real (tiny) model checks shapes, ranges and the checkpoint loading."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from scarce.errors import ConfigError
from scarce.refinement import RefineStep, build_refiner
from scarce.refinement.sam import cam_prompt

segment_anything = pytest.importorskip("segment_anything")


def tiny_sam(checkpoint=None):
    """SAM's architecture at toy size: 64-px input, one block each, 32 channels."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(0)
    return Sam(
        image_encoder=ImageEncoderViT(img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=1, mlp_ratio=2,
                                      out_chans=32, qkv_bias=True,
                                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6)),
        prompt_encoder=PromptEncoder(embed_dim=32, image_embedding_size=(4, 4), input_image_size=(64, 64),
                                     mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=1, embedding_dim=32,
                                 mlp_dim=64, num_heads=2), transformer_dim=32, iou_head_depth=1, iou_head_hidden_dim=16),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375]).eval()


@pytest.fixture
def tiny_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setitem(segment_anything.sam_model_registry, "tiny", tiny_sam)
    path = tmp_path / "tiny_sam.pth"
    torch.save(tiny_sam().state_dict(), path)
    return path


def blob_cam(height=40, width=48):
    cam = np.zeros((height, width), np.float32)
    cam[10:20, 5:30] = 0.5  # the largest region above 20 % of the max
    cam[14, 12] = 1.0  # the peak, inside it
    cam[30:33, 40:43] = 0.9  # a smaller region, also above the threshold
    return cam


def test_prompts_are_the_cams_box_and_peak_by_hand():
    prompt = cam_prompt(blob_cam(), "box+point", 0.2)
    # the largest component spans rows 10..19 and columns 5..29: XYXY pixel edges (5, 10, 30, 20)
    assert prompt["box"].tolist() == [5.0, 10.0, 30.0, 20.0]
    assert prompt["point_coords"].tolist() == [[12.0, 14.0]] and prompt["point_labels"].tolist() == [1]
    assert set(cam_prompt(blob_cam(), "point", 0.2)) == {"point_coords", "point_labels"}
    assert cam_prompt(np.zeros((8, 8), np.float32), "box", 0.2) is None


def test_missing_checkpoint_and_bad_options_are_named(tmp_path, tiny_checkpoint):
    with pytest.raises(ConfigError, match="'checkpoint' is required"):
        build_refiner("sam")
    with pytest.raises(ConfigError, match="prompt"):
        build_refiner(RefineStep("sam", {"checkpoint": str(tiny_checkpoint), "prompt": "scribble"}))
    missing = build_refiner(RefineStep("sam", {"checkpoint": str(tmp_path / "none.pth"), "model_type": "tiny"}))
    with pytest.raises(ConfigError, match="none.pth"):
        missing.predictor()
    torch.save({"not": torch.zeros(1)}, tmp_path / "other.pth")
    wrong = build_refiner(RefineStep("sam", {"checkpoint": str(tmp_path / "other.pth"), "model_type": "tiny"}))
    with pytest.raises(ConfigError, match="other.pth"):
        wrong.predictor()


class StubPredictor:
    """Records the prompts; returns three candidates with known logits and scores (the second scores best) when
    asked for several, else one mask of logit 1."""

    def __init__(self, shape):
        self.shape, self.calls, self.images = shape, [], 0

    def set_image(self, image):
        assert image.dtype == np.uint8 and image.shape == (*self.shape, 3)
        self.images += 1

    def predict(self, multimask_output, return_logits, **prompt):
        assert return_logits
        self.calls.append({**prompt, "multimask_output": multimask_output})
        if not multimask_output:
            return np.full((1, *self.shape), 1.0, np.float32), np.array([0.3], np.float32), None
        logits = np.stack([np.full(self.shape, v, np.float32) for v in (-3.0, 2.0, 5.0)])
        return logits, np.array([0.1, 0.9, 0.5], np.float32), None


def sigmoid(x: float) -> float:
    return 1 / (1 + np.exp(-x))


def test_a_point_keeps_the_best_scored_of_three_candidates_and_a_box_asks_for_one(tiny_checkpoint):
    cams = torch.from_numpy(np.stack([blob_cam(), np.zeros((40, 48), np.float32)]))
    point = build_refiner(RefineStep("sam", {"checkpoint": str(tiny_checkpoint), "model_type": "tiny",
                                             "prompt": "point"}))
    point._predictor = StubPredictor((40, 48))
    out = point(torch.rand(1, 3, 40, 48), [cams], [[2, 5]])[0]
    assert out.shape == (2, 40, 48)
    assert torch.allclose(out[0], torch.full((40, 48), sigmoid(2.0)))  # candidate 1: score 0.9
    assert torch.count_nonzero(out[1]) == 0  # no prompt for an all-zero CAM
    assert point._predictor.images == 1 and [c["multimask_output"] for c in point._predictor.calls] == [True]
    box = build_refiner(RefineStep("sam", {"checkpoint": str(tiny_checkpoint), "model_type": "tiny"}))
    box._predictor = StubPredictor((40, 48))
    out = box(torch.rand(1, 3, 40, 48), [cams], [[2, 5]])[0]
    assert torch.allclose(out[0], torch.full((40, 48), sigmoid(1.0)))  # the one mask a box asks for
    assert [c["multimask_output"] for c in box._predictor.calls] == [False]
    assert box._predictor.calls[0]["box"].tolist() == [5.0, 10.0, 30.0, 20.0]


def test_a_tiny_random_sam_refines_through_the_real_predictor(tiny_checkpoint):
    refiner = build_refiner(RefineStep("sam", {"checkpoint": str(tiny_checkpoint), "model_type": "tiny",
                                               "prompt": "box+point", "device": "cpu"}))
    cams = [torch.from_numpy(np.stack([blob_cam(), blob_cam()[::-1].copy()])), torch.zeros(1, 40, 48)]
    with torch.no_grad():
        out = refiner(torch.rand(2, 3, 40, 48), cams, [[0, 3], [1]])
    assert [tuple(o.shape) for o in out] == [(2, 40, 48), (1, 40, 48)]
    assert all(float(o.min()) >= 0.0 and float(o.max()) <= 1.0 for o in out)
    assert torch.count_nonzero(out[1]) == 0 and torch.count_nonzero(out[0]) > 0
    # the weights in use are the checkpoint's
    loaded = refiner.predictor().model.state_dict()
    saved = torch.load(tiny_checkpoint, weights_only=True)
    assert all(torch.equal(loaded[k].cpu(), v) for k, v in saved.items())
