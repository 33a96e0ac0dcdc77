"""Refinement of CAM seeds (dense CRF, PAMR, SCG, affinity random walk, SAM prompts) behind one interface (see base).

Importing a refiner's module registers it under its name (``refine: [pamr, crf]``).
"""

from scarce.refinement.base import (REFINERS, RefineContext, Refiner, RefinerChain, RefineStep, build_refiner,
                                    register_refiner)
from scarce.refinement import crf, pamr, random_walk, sam, scg  # noqa: F401  (importing registers them)

__all__ = ["REFINERS", "RefineContext", "Refiner", "RefinerChain", "RefineStep", "build_refiner", "register_refiner"]
