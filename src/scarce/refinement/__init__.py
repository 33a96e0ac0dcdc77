"""Refinement of CAM seeds (dense CRF, PAMR, SCG, affinity random walk) behind one interface (see base)."""

from scarce.refinement.base import (REFINERS, RefineContext, Refiner, RefinerChain, RefineStep, build_refiner,
                                    register_refiner)

__all__ = ["REFINERS", "RefineContext", "Refiner", "RefinerChain", "RefineStep", "build_refiner", "register_refiner"]
