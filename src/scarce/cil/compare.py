"""Several methods under one protocol, over several seeds, into one table."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

from scarce.cil.config import CILConfig, load_config
from scarce.cil.trainer import load_data, run
from scarce.config import to_dict
from scarce.errors import ConfigError
from scarce.io import read_json, write_json, write_text
from scarce.provenance import environment

SHARED_SECTIONS = ("data", "protocol", "model")
COLUMNS = (
    ("average_incremental_accuracy", "avg inc acc"),
    ("last_accuracy", "last acc"),
    ("forgetting_max", "forgetting (max)"),
    ("forgetting_initial", "forgetting (init−final)"),
)
# Stability and plasticity apart: the mean over the incremental phases (p ≥ 1) of the per-phase accuracy on
# earlier phases' classes and on the phase's own new classes. Two methods with equal average accuracy can
# trade one for the other (AANets on PODNet does), which the average hides.
SPLIT_COLUMNS = (
    ("old_accuracy", "old acc (mean p≥1)"),
    ("new_accuracy", "new acc (mean p≥1)"),
)


def check_same_protocol(configs: list[CILConfig], names: list[str]) -> None:
    ref = to_dict(configs[0])
    for cfg, name in zip(configs[1:], names[1:]):
        d = to_dict(cfg)
        for section in SHARED_SECTIONS:
            if d[section] != ref[section]:
                raise ConfigError(
                    f"compare: {name} differs from {names[0]} in '{section}' ({d[section]} vs {ref[section]}); "
                    "methods must share data, protocol and model"
                )


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    m, s = _mean_std(vals)
    return f"{m:.2f} ± {s:.2f}" if len(vals) > 1 else f"{m:.2f}"


def compare(configs: list[CILConfig], out_dir: str | Path, *, seeds: list[int] | None = None,
            names: list[str] | None = None, resume: bool = False, progress: bool = True) -> list[dict[str, Any]]:
    """Run every config for every seed into ``out_dir/NAME/seedS`` and write ``compare.{md,json,html}``.

    With ``resume``, finished runs are reused and interrupted ones resumed from their checkpoints.
    """
    out_dir = Path(out_dir)
    names = names or [c.method_name for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError(f"compare: run names must be unique, got {names}")
    check_same_protocol(configs, names)
    seeds = seeds if seeds else [configs[0].seed]
    data = load_data(configs[0])
    results: dict[str, list[dict[str, Any]]] = {}
    for cfg, name in zip(configs, names):
        for seed in seeds:
            run_dir = out_dir / name / f"seed{seed}"
            metrics_path = run_dir / "metrics.json"
            c = dataclasses.replace(cfg, seed=seed)
            if resume and metrics_path.is_file() and read_json(metrics_path).get("complete"):
                if not _same_settings(run_dir / "config.yaml", c):
                    raise ConfigError(f"{run_dir}: finished with a different configuration than {name}'s; "
                                      "delete the folder to rerun it or choose another --out")
                metrics = read_json(metrics_path)
            else:
                has_ckpt = (run_dir / "checkpoints" / "last.pt").is_file()
                metrics = run(c, run_dir, resume=resume and has_ckpt, progress=progress, data=data).metrics
            results.setdefault(name, []).append(metrics)
    rows, curves = table_rows(results)
    write_json(out_dir / "compare.json", {"seeds": seeds, "rows": rows, "environment": environment(), "runs": {
        n: [{"seed": m["seed"], "metrics": m["heads"], "wall_time_s": m["wall_time_s"]} for m in ms] for n, ms in results.items()}})
    write_text(out_dir / "compare.md", markdown_table(rows, seeds, results))
    from scarce.cil.report import write_compare_report

    write_compare_report(out_dir / "compare.html", f"Class-incremental comparison ({next(iter(results.values()))[0]['protocol']})",
                         rows, curves)
    return rows


def _same_settings(stored: Path, cfg: CILConfig) -> bool:
    """Whether a finished run's ``config.yaml`` holds ``cfg``'s settings. Read back through the config loader,
    so keys added to scarce since the run (at their defaults) do not make an unchanged run look different."""
    if not stored.is_file():
        return False
    try:
        return to_dict(load_config(stored)) == to_dict(cfg)
    except ConfigError:
        return False


def table_rows(results: dict[str, list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    rows, curves = [], {}
    for name, runs in results.items():
        for head in runs[0]["heads"]:
            primary = head == runs[0]["primary_head"]
            row: dict[str, Any] = {"method": name, "head": head + (" *" if primary else "")}
            for key, label in COLUMNS:
                row[label] = fmt([r["heads"][head][key] for r in runs])
            for key, label in SPLIT_COLUMNS:
                row[label] = fmt([_incremental_mean(r["heads"][head][key]) for r in runs])
            row["wall time (s)"] = fmt([r["wall_time_s"] for r in runs])
            base = base_row_name(name, list(results))
            row["base"] = base or "–"
            row["Δ avg vs base"] = row["cost vs base"] = "–"
            if base is not None and head in results[base][0]["heads"]:
                row["Δ avg vs base"] = _signed(statistics.fmean(r["heads"][head]["average_incremental_accuracy"] for r in runs)
                                               - statistics.fmean(r["heads"][head]["average_incremental_accuracy"]
                                                                  for r in results[base]))
                cost = statistics.fmean(r["wall_time_s"] for r in runs) / statistics.fmean(
                    r["wall_time_s"] for r in results[base])
                row["cost vs base"] = f"{cost:.2f}"
            rows.append(row)
            if primary:
                n = len(runs[0]["heads"][head]["seen_accuracy"])
                curves[name] = [statistics.fmean(r["heads"][head]["seen_accuracy"][p] for r in runs) for p in range(n)]
    return rows, curves


def base_row_name(name: str, names: list[str]) -> str | None:
    """The row a method adds to: the longest other name that ``name`` extends by ``_suffix``.

    ``lucir_aanets_rmm`` → ``lucir_aanets`` → ``lucir``; ``mnemonics`` has none. Only names decide, so a run
    named so compares with its base learner without extra configuration.
    """
    bases = [n for n in names if n != name and name.startswith(n + "_")]
    return max(bases, key=len) if bases else None


def _incremental_mean(per_phase: list[float | None]) -> float | None:
    values = [v for v in per_phase[1:] if v is not None]
    return statistics.fmean(values) if values else None


def _signed(x: float) -> str:
    return f"{x:+.2f}"


def markdown_table(rows: list[dict[str, Any]], seeds: list[int], results: dict[str, list[dict[str, Any]]]) -> str:
    cols = list(rows[0])
    first = next(iter(results.values()))[0]
    lines = [
        f"Protocol: {first['dataset']} ({first['data_source']}), {first['protocol']}; seeds {seeds}. "
        "Mean ± std over seeds, percent; * = the head each method is usually quoted with. "
        "Δ avg vs base: difference of the seed means of average incremental accuracy against the row named "
        "'base' (same head); cost vs base: ratio of mean wall times (comparable only when the runs had the "
        "same load).",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"
