"""Single-stage WSSS: RecurSeed (RS) and EdgePredictMix (EPM) on one network, and the mixing baselines.

Public API::

    from scarce.singlestage import SingleStageRun, load_config

    cfg = load_config("configs/recurseed/rs_epm.yaml", {"train": {"epochs": 4}})
    metrics = SingleStageRun(cfg, "runs/rs_epm").run()   # train, then score the decoder on val and test
    metrics["single_stage"]["test"]["miou"]              # with cfg.multi_stage: metrics["multi_stage"] too

Modules: :mod:`.network` (shared encoder, CAM branch, DeepLabV3+ decoder), :mod:`.recurseed` (seeds M_rs, CF,
the losses), :mod:`.mixing` (EP, the mixing identities, CutMix and ClassMix masks), :mod:`.objective` (one
training step), :mod:`.run` (config, stages, inference protocol). Command line: ``scarce recurseed run``.
See docs/recurseed.md.
"""

from scarce.singlestage.mixing import edge_predict, foreground_union, mix, partners
from scarce.singlestage.network import DecoderConfig, NetworkConfig, SingleStageNet, build_network
from scarce.singlestage.objective import MixConfig, SingleStageObjective
from scarce.singlestage.recurseed import RecurSeedConfig, SeedMaker, confident_labels, masked_l1
from scarce.singlestage.run import InferConfig, SingleStageConfig, SingleStageRun, load_config

__all__ = [
    "DecoderConfig", "InferConfig", "MixConfig", "NetworkConfig", "RecurSeedConfig", "SeedMaker", "SingleStageConfig",
    "SingleStageNet", "SingleStageObjective", "SingleStageRun", "build_network", "confident_labels", "edge_predict",
    "foreground_union", "load_config", "masked_l1", "mix", "partners",
]
