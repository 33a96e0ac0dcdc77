"""Dense CRF (Krähenbühl & Koltun) through ``pydensecrf2``, as AffinityNet's (jiwoon-ahn/psa) ``crf_inference``.

The K foreground maps of an image become K + 1 label probabilities with a background plane first; the CRF's
unary is −log p (``unary_from_softmax``), its pairwise terms are PSA's: a Gaussian (sxy 3, compat 3) and a
bilateral kernel (sxy 80, srgb 13 on the 8-bit RGB image, compat 10), 10 mean-field iterations. The output is
the K foreground marginals, so the pipeline's val-chosen threshold applies to them as to any map in [0, 1].

The background plane (option ``background``):

- ``threshold`` (default): a constant plane at the seeds' val-chosen threshold (``RefineContext.threshold``,
  or the option ``threshold``). This is how IRN places the background for its CRF (``crf_inference_label`` on
  the argmax with a plane at ``conf_fg_thres`` / ``conf_bg_thres``) and how RecurSeed's
  ``convert_seed_to_pseudo_masks.py`` does with ``bg_th``; the CRF then refines exactly the decision the
  pipeline scores. Unlike IRN it keeps PSA's soft unary instead of hard labels (``unary_from_labels``,
  gt_prob 0.7), so that the output stays a map a later step can threshold or refine.
- ``power``: PSA's bg = (1 − max_k m_k)^α (``_crf_with_alpha``; α 4 and 32 for its confident regions, 16 for
  its plain predictions, the default here).

PSA's bilateral sxy 80 is for ~500-px VOC images (IRN: 50); on the 128-px scenes it spans the whole image, so the
bilateral term acts as a colour-only term there. The defaults stay PSA's; a config may lower them.

Images are refined in a pool of ``workers`` processes (default min(2, CPU count)); ``workers: 1`` runs inline.
``pydensecrf2`` builds from source (no wheels, a C++ compiler, about a minute), so it is the ``crf`` extra.
"""

from __future__ import annotations

import multiprocessing
import os
import weakref
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Sequence

import numpy as np
import torch

from scarce.errors import ConfigError
from scarce.refinement.base import RefineContext, Refiner, register_refiner
from scarce.refinement.pamr import check_batch

PAIRWISE = {"gaussian_sxy": 3.0, "gaussian_compat": 3.0, "bilateral_sxy": 80.0, "bilateral_srgb": 13.0,
            "bilateral_compat": 10.0}


def require_densecrf() -> None:
    try:
        import pydensecrf.densecrf  # noqa: F401
        import pydensecrf.utils  # noqa: F401
    except ImportError:
        raise ConfigError("refine crf needs pydensecrf2, which is not installed: pip install 'scarce[crf]'") from None


def crf_marginals(image: np.ndarray, probs: np.ndarray, iterations: int, pairwise: dict[str, float]) -> np.ndarray:
    """(H, W, 3) uint8 image and (L, H, W) label probabilities → (L, H, W) float32 marginals after mean field."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    labels, height, width = probs.shape
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    crf.addPairwiseGaussian(sxy=pairwise["gaussian_sxy"], compat=pairwise["gaussian_compat"])
    crf.addPairwiseBilateral(sxy=pairwise["bilateral_sxy"], srgb=pairwise["bilateral_srgb"],
                             rgbim=np.ascontiguousarray(image), compat=pairwise["bilateral_compat"])
    return np.asarray(crf.inference(iterations), dtype=np.float32).reshape(labels, height, width)


def _crf_task(task: tuple[np.ndarray, np.ndarray, int, dict[str, float]]) -> np.ndarray:
    return crf_marginals(*task)


@register_refiner("crf")
class CrfRefiner(Refiner):
    """Options: ``background`` (``threshold`` | ``power``), ``threshold`` (overrides the context's), ``alpha``
    (16), ``iterations`` (10), the pairwise parameters of :data:`PAIRWISE`, ``workers`` (min(2, CPU count))."""

    OPTIONS = ("background", "threshold", "alpha", "iterations", "workers", *PAIRWISE)

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        unknown = set(self.options) - set(self.OPTIONS)
        if unknown:
            raise ConfigError(f"refine crf: unknown option(s) {sorted(unknown)}; known: {', '.join(self.OPTIONS)}")
        require_densecrf()
        get = self.options.get
        self.background = str(get("background", "threshold"))
        if self.background not in ("threshold", "power"):
            raise ConfigError(f"refine crf: background must be threshold or power, got {self.background!r}")
        self.threshold = None if get("threshold") is None else float(get("threshold"))
        self.alpha = float(get("alpha", 16.0))
        self.iterations = int(get("iterations", 10))
        self.pairwise = {name: float(get(name, default)) for name, default in PAIRWISE.items()}
        self.workers = int(get("workers", min(2, os.cpu_count() or 1)))
        if self.workers < 1 or self.iterations < 0:
            raise ConfigError(f"refine crf: need workers ≥ 1 and iterations ≥ 0, got {self.workers}, {self.iterations}")
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"refine crf: threshold must lie in (0, 1), got {self.threshold}")
        self._pool: ProcessPoolExecutor | None = None

    def prepare(self, context: RefineContext) -> None:
        """Take the seeds' val-chosen threshold for the background plane, unless the options fix one."""
        if self.threshold is None and context.threshold is not None:
            self.threshold = float(context.threshold)

    def label_probabilities(self, cams: np.ndarray) -> np.ndarray:
        """(K, H, W) foreground maps → (K + 1, H, W) with the background plane first."""
        if self.background == "power":
            bg = (1.0 - cams.max(axis=0, initial=0.0)) ** self.alpha
        elif self.threshold is None:
            raise ConfigError("refine crf: background 'threshold' needs the val-chosen threshold (prepare with a "
                              "RefineContext that has one) or the option threshold")
        else:
            bg = np.full(cams.shape[1:], self.threshold, dtype=np.float32)
        return np.concatenate([bg[None].astype(np.float32), cams.astype(np.float32)])

    def _map(self, tasks: list) -> list[np.ndarray]:
        if self.workers == 1 or len(tasks) == 1:
            return [_crf_task(task) for task in tasks]
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context())
            weakref.finalize(self, self._pool.shutdown)
        return list(self._pool.map(_crf_task, tasks))

    def close(self) -> None:
        """Stop the worker processes (they also stop when the refiner is collected)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __call__(self, images: torch.Tensor, cams: Sequence[torch.Tensor],
                 keys: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        check_batch(images, cams, keys)
        rgb = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        tasks = [(rgb[i], self.label_probabilities(cam.detach().float().cpu().numpy()), self.iterations,
                  self.pairwise) for i, cam in enumerate(cams)]
        marginals = self._map(tasks)
        return [torch.from_numpy(q[1:]).to(cam.device, cam.dtype) for q, cam in zip(marginals, cams)]
