from pathlib import Path

import pytest

from scarce.cil import Protocol, load_config
from scarce.cil.methods import method_class
from scarce.config import from_dict, to_dict

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "cil").glob("*.yaml"))
N_CLASSES = {"fashion_mnist": 10, "cifar100": 100, "imagenet_subset": 100}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)
    cls = method_class(cfg.method_name)
    from_dict(cls.Params, {k: v for k, v in cfg.method.items() if k != "name"}, where="method")
    p = cfg.protocol
    protocol = Protocol.build(N_CLASSES[cfg.data.name], class_order=p.class_order, n_base=p.n_base,
                              n_phases=p.n_phases, increment=p.increment, memory=to_dict(p.memory))
    subset = len(p.class_order) if isinstance(p.class_order, list) else None  # a protocol over some classes
    assert protocol.n_classes == (6 if path.name == "tiny.yaml" else subset or N_CLASSES[cfg.data.name])


def test_method_files_inherit_the_shared_protocol():
    a = load_config(CONFIGS[0].parent / "fmnist_icarl.yaml")
    b = load_config(CONFIGS[0].parent / "fmnist_podnet.yaml")
    assert to_dict(a)["protocol"] == to_dict(b)["protocol"] and a.data == b.data
    assert (a.method_name, b.method_name) == ("icarl", "podnet") and a.data.train_per_class == 500
