"""Refinement of CAM seeds (dense CRF, PAMR, SCG, affinity random walk) behind one interface (see base)."""

from scarce.refinement.base import (REFINERS, RefineContext, Refiner, RefinerChain, RefineStep, build_refiner,
                                    register_refiner)
from scarce.refinement import random_walk  # noqa: F401,E402  (registers "random_walk")

__all__ = ["REFINERS", "RefineContext", "Refiner", "RefinerChain", "RefineStep", "build_refiner", "register_refiner"]
