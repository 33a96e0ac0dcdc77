import json

from scarce.cli import main

from cil_helpers import TINY


def _sets(*extra):
    out = []
    for item in TINY + list(extra):
        out += ["--set", item]
    return out


def test_cil_run_writes_the_run_folder(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method:\n  name: icarl\n")
    out = tmp_path / "run"
    assert main(["cil", "run", str(cfg), "--out", str(out), "--quiet", *_sets()]) == 0
    text = capsys.readouterr().out
    assert "icarl [nme *] average incremental accuracy" in text
    matrix = json.loads((out / "acc_matrix.json").read_text())
    assert set(matrix["heads"]) == {"cnn", "nme"} and matrix["task_sizes"] == [20, 20, 20]
    metrics = json.loads((out / "metrics.json").read_text())
    assert "Chaudhry" in metrics["definitions"]["forgetting_max"]
    html = (out / "report.html").read_text()
    assert "Accuracy versus phase" in html and "<img" in html
    # a second run into the same folder must be explicit
    assert main(["cil", "run", str(cfg), "--out", str(out), "--quiet", *_sets()]) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(["cil", "run", str(cfg), "--out", str(out), "--quiet", "--resume", *_sets()]) == 0


def test_cil_compare_writes_one_table(tmp_path, capsys):
    base = tmp_path / "protocol.yaml"
    base.write_text("protocol:\n  n_base: 2\n")
    for m in ("finetune", "lwf"):
        (tmp_path / f"{m}.yaml").write_text(f"base: protocol.yaml\nmethod:\n  name: {m}\n")
    out = tmp_path / "cmp"
    args = ["cil", "compare", str(tmp_path / "finetune.yaml"), str(tmp_path / "lwf.yaml"), "--out", str(out),
            "--seeds", "0", "1", "--quiet", *_sets()]
    assert main(args) == 0
    table = (out / "compare.md").read_text()
    assert "| finetune | cnn * |" in table and "| lwf | cnn * |" in table and " ± " in table
    assert (out / "lwf" / "seed1" / "metrics.json").is_file() and (out / "compare.html").is_file()
    assert main(args + ["--resume"]) == 0  # reuses the finished runs
    # a run made before a settings key existed (here: train.amp at its default) is still the same run
    stored = out / "lwf" / "seed1" / "config.yaml"
    stored.write_text("".join(line for line in stored.read_text().splitlines(True) if not line.strip().startswith("amp:")))
    finished = (out / "lwf" / "seed1" / "metrics.json").stat().st_mtime_ns
    assert main(args + ["--resume"]) == 0
    assert (out / "lwf" / "seed1" / "metrics.json").stat().st_mtime_ns == finished  # reused, not rerun
    assert main(args + ["--resume", "--set", "train.lr=0.01"]) == 1  # but not runs made with other settings
    assert "different configuration" in capsys.readouterr().err


def test_cil_errors_are_reported_without_traceback(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method:\n  name: icarl\nprotocol:\n  class_order: [0, 1, 2, 3, 4, 99]\n")
    assert main(["cil", "run", str(cfg), "--out", str(tmp_path / "r"), "--quiet", "--set", "data.subset=true"]) == 1
    assert "unknown classes [99]" in capsys.readouterr().err
    cfg.write_text("method:\n  name: icarl\nprotocol:\n  memory: {mode: total, size: 5}\n")
    assert main(["cil", "run", str(cfg), "--out", str(tmp_path / "r"), "--quiet", "--set", "data.subset=true"]) == 1
    assert "smaller than the 10 classes" in capsys.readouterr().err
    cfg.write_text("method:\n  name: icarl\n  T: 3\n  gamma: 1\n")
    assert main(["cil", "run", str(cfg), "--out", str(tmp_path / "r"), "--quiet"]) == 1
    assert "method: unknown key(s) gamma" in capsys.readouterr().err
    cfg.write_text("protocol:\n  memory: true\n")
    assert main(["cil", "run", str(cfg), "--out", str(tmp_path / "r"), "--quiet"]) == 1
    assert "memory" in capsys.readouterr().err
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("method: {name: lwf}\n")
    b.write_text("method: {name: icarl}\nprotocol: {n_base: 6, n_phases: 2}\n")
    assert main(["cil", "compare", str(a), str(b), "--out", str(tmp_path / "x"), "--quiet"]) == 1
    assert "must share data, protocol and model" in capsys.readouterr().err


def test_cil_run_with_rmm_trains_and_stores_the_policy(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method:\n  name: lucir\nrmm:\n  episodes: 2\n  pseudo_epochs: 1\n")
    out = tmp_path / "run"
    assert main(["cil", "run", str(cfg), "--out", str(out), "--quiet", *_sets()]) == 0
    assert "RMM policy: 2 pseudo tasks in" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["memory_policy"]["splits"]) == ["1", "2"] and (out / "rmm_policy.pt").is_file()
