"""scarce vs Avalanche on the same class-incremental split: iCaRL and LwF.

Both frameworks get the same data (Fashion-MNIST as configured in ``configs/cil/fmnist_protocol.yaml``: same
training subsample, full test set, no augmentation, same normalisation), the same class order, base classes
and phases, the same memory (20 exemplars per class, herding), the same backbone class
(:class:`scarce.cil.models.ConvNet`), optimiser (SGD, momentum, weight decay, batch size), epochs and
per-phase cosine learning-rate schedule, the same seed and the same number of torch threads.
Avalanche's iCaRL is evaluated with its nearest-class-mean classifier and scarce's with NME; LwF with the
trained head in both. Accuracies come from the same metric code (scarce.cil.metrics) applied to each
framework's accuracy matrix. Wall time covers training and the per-phase evaluations (plus, for scarce,
its checkpoints and report).

    python benchmarks/cil_vs_avalanche.py --seeds 0 1 2

Avalanche (PyPI ``avalanche-lib``) is a benchmark-only dependency: ``pip install avalanche-lib``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from scarce.cil import AccuracyMatrix, average_incremental_accuracy, last_accuracy, load_config, run
from scarce.cil.models import ConvNet
from scarce.cil.trainer import Trainer, load_data, build_protocol
from scarce.cil.protocol import Scenario

ROOT = Path(__file__).resolve().parent.parent


class Features(nn.Module):
    """Avalanche's iCaRL wants a feature extractor returning the pooled features."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)[0]


class FeaturesThenHead(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features = Features(backbone)
        self.classifier = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LabelledTensors(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: np.ndarray) -> None:
        self.x, self.targets = x, [int(v) for v in y]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.x[i], self.targets[i]


def avalanche_run(cfg, method: str) -> dict:
    from avalanche.benchmarks import nc_benchmark
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.models import IncrementalClassifier
    from avalanche.training import ICaRL, LwF
    from avalanche.training.plugins import EvaluationPlugin, LRSchedulerPlugin

    t0 = time.perf_counter()
    data = load_data(cfg)
    protocol = build_protocol(cfg, data)
    trainer = Trainer(cfg, "/nonexistent", progress=False, data=data)  # for its preprocessing only
    scen = Scenario(protocol, data.train.labels, data.test.labels)
    keep_train = np.flatnonzero(scen.train_targets >= 0)
    keep_test = np.flatnonzero(scen.test_targets >= 0)
    x_train = trainer.pre(data.train.load(keep_train))
    x_test = trainer.pre(data.test.load(keep_test))
    train_ds = LabelledTensors(x_train, data.train.labels[keep_train])
    test_ds = LabelledTensors(x_test, data.test.labels[keep_test])
    bench = nc_benchmark(
        train_ds, test_ds, n_experiences=protocol.n_tasks, task_labels=False, seed=cfg.seed,
        fixed_class_order=list(protocol.class_order), per_exp_classes={0: protocol.n_base},
        class_ids_from_zero_from_first_exp=True,
    )
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    t = cfg.train
    backbone = ConvNet(trainer.in_channels)
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
    if method == "icarl":
        feats = Features(backbone)
        classifier = nn.Linear(backbone.out_dim, protocol.n_classes)
        params = list(feats.parameters()) + list(classifier.parameters())
    else:
        model = FeaturesThenHead(backbone, IncrementalClassifier(backbone.out_dim, initial_out_features=protocol.n_base))
        params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    sched = LRSchedulerPlugin(torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs), reset_scheduler=True,
                              reset_lr=True, step_granularity="epoch")
    common = dict(optimizer=opt, train_mb_size=t.batch_size, train_epochs=t.epochs, eval_mb_size=t.eval_batch_size,
                  device="cpu", plugins=[sched], evaluator=evaluator)
    if method == "icarl":
        mem = protocol.memory
        strategy = ICaRL(feature_extractor=feats, classifier=classifier, memory_size=mem.size, buffer_transform=None,
                         fixed_memory=mem.mode == "total", **common)
    else:
        strategy = LwF(model=model, criterion=nn.CrossEntropyLoss(), alpha=1.0, temperature=2.0, **common)
    rows = []
    for p, exp in enumerate(bench.train_stream):
        strategy.train(exp)
        res = strategy.eval(bench.test_stream[: p + 1])
        rows.append([100.0 * res[f"Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{t:03d}"] for t in range(p + 1)])
    sizes = [len(e.dataset) for e in bench.test_stream]
    return {"matrix": AccuracyMatrix(rows, sizes), "wall_time_s": time.perf_counter() - t0}


def scarce_run(cfg, method: str, out: Path) -> dict:
    t0 = time.perf_counter()
    result = run(cfg, out, progress=False)
    head = "nme" if method == "icarl" else "cnn"
    return {"matrix": result.matrices[head], "wall_time_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs/cil/fmnist_protocol.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["icarl", "lwf"], choices=["icarl", "lwf"])
    ap.add_argument("--out", type=Path, default=ROOT / "runs/cil/vs_avalanche")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")  # Avalanche warns about optional solvers and deprecated APIs
    results: dict[tuple[str, str], list[dict]] = {}
    # untimed warm-up of both frameworks (imports, first optimiser step, plotting) so that no run pays them
    for method in args.methods:
        tiny = load_config(args.config, args.overrides + [f"method.name={method}", "data.subset=true",
                                                          "data.train_per_class=10", "data.test_per_class=5", "train.epochs=1"])
        scarce_run(tiny, method, args.out / f"warmup-{method}")
        avalanche_run(tiny, method)
    for seed in args.seeds:
        for method in args.methods:
            cfg = load_config(args.config, args.overrides + [f"method.name={method}", f"seed={seed}"])
            if cfg.train.schedule != "cosine":
                sys.exit("the benchmark mirrors the cosine schedule only (set train.schedule=cosine)")
            prev_threads = torch.get_num_threads()
            if cfg.train.threads:
                torch.set_num_threads(cfg.train.threads)
            # alternate the order so that a busy machine penalises both frameworks alike
            order = ["scarce", "avalanche"] if seed % 2 == 0 else ["avalanche", "scarce"]
            for fw in order:
                r = (scarce_run(cfg, method, args.out / f"{method}-seed{seed}") if fw == "scarce"
                     else avalanche_run(cfg, method))
                r["aia"], r["last"] = average_incremental_accuracy(r["matrix"]), last_accuracy(r["matrix"])
                results.setdefault((method, fw), []).append(r)
                print(f"seed {seed} {method:5s} {fw:9s} avg inc acc {r['aia']:6.2f}  last {r['last']:6.2f}  "
                      f"wall {r['wall_time_s']:6.1f} s", flush=True)
            torch.set_num_threads(prev_threads)

    def ms(vals):
        return f"{statistics.fmean(vals):.2f} ± {statistics.stdev(vals) if len(vals) > 1 else 0.0:.2f}"

    lines = [f"seeds {args.seeds}; mean ± std; accuracy in percent", "",
             "| method | framework | avg inc acc | last acc | wall time (s) |", "|---|---|---|---|---|"]
    summary = {}
    for (method, fw), rs in results.items():
        lines.append(f"| {method} | {fw} | {ms([r['aia'] for r in rs])} | {ms([r['last'] for r in rs])} | "
                     f"{ms([r['wall_time_s'] for r in rs])} |")
        summary[f"{method}/{fw}"] = [{"aia": r["aia"], "last": r["last"], "wall_time_s": r["wall_time_s"],
                                      "per_task": r["matrix"].per_task} for r in rs]
    table = "\n".join(lines)
    print("\n" + table)
    for method in args.methods:
        s, a = results[(method, "scarce")], results[(method, "avalanche")]
        acc_ok = statistics.fmean(r["aia"] for r in s) >= statistics.fmean(r["aia"] for r in a)
        time_ok = statistics.fmean(r["wall_time_s"] for r in s) <= statistics.fmean(r["wall_time_s"] for r in a)
        print(f"{method}: scarce accuracy ≥ Avalanche: {'yes' if acc_ok else 'NO'}; "
              f"scarce wall time ≤ Avalanche: {'yes' if time_ok else 'NO'}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    (args.out / "table.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
