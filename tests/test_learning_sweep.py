"""tools/learning_sweep.py: a smoke run writes the contract's JSON, names families below 3x
chance, reuses finished runs and names a bad world or model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.fixture
def sweep(monkeypatch):
    monkeypatch.syspath_prepend(str(TOOLS))
    import learning_sweep as module

    return module


def test_quick_sweep_reports_families_health_and_reuses_runs(sweep, tmp_path, capsys):
    argv = ["--quick", "--worlds", "digits", "--models", "clip", "--out", str(tmp_path)]
    assert sweep.main([*argv, "--json", str(tmp_path / "s.json")]) == 0
    printed = capsys.readouterr().out
    assert "handwritten digit" in printed and "below 3x chance:" in printed
    entry = json.loads((tmp_path / "s.json").read_text())["worlds"]["digits"]["clip"]
    assert list(entry["per_family"]) == ["handwritten digit"]
    assert entry["per_family"]["handwritten digit"] == entry["top1"]  # one family: the mean
    assert entry["chance"] == 10.0 and isinstance(entry["health"], str)
    assert entry["families_at_chance"] in ([], ["handwritten digit"])
    assert 1 <= entry["num_predicted_classes"] <= entry["num_classes"] == 10
    assert len(entry["per_class"]) == 10 and entry["runs"][0]["steps"] == sweep.QUICK_STEPS
    # a rerun trains nothing: the finished run's result is read back; --no-train lists the rest
    argv[argv.index("clip")] = "clip,meru"
    assert sweep.main([*argv, "--no-train", "--json", str(tmp_path / "n.json")]) == 0
    assert "not run: 1 of 2 runs" in capsys.readouterr().out
    again = json.loads((tmp_path / "n.json").read_text())["worlds"]["digits"]
    assert again["clip"]["per_family"] == entry["per_family"]
    assert again["meru"]["health"] == "not run" and again["meru"]["per_family"] == {}
    (run,) = (tmp_path / "runs" / "digits").iterdir()
    assert (run / "sweep.json").is_file() and run.name.startswith("clip-s0-")


def test_bad_world_or_model_is_named(sweep, capsys):
    assert sweep.main(["--worlds", "real,moon"]) == 2
    assert "world 'moon': choose one of real" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sweep.main(["--models", "clip,siglip"])
    assert "--models siglip: choose from clip, meru, hycoclip" in capsys.readouterr().err


def test_a_failed_run_says_why_and_the_sweep_goes_on(sweep, tmp_path, capsys, monkeypatch):
    import hyvl.train.loop
    from hyvl.errors import DataError

    def broken(cfg, output_dir):
        raise DataError(f"{cfg.data.train_shards}: no training samples")

    monkeypatch.setattr(hyvl.train.loop, "train", broken)
    argv = ["--quick", "--worlds", "digits", "--models", "clip,meru", "--out", str(tmp_path)]
    assert sweep.main([*argv, "--json", str(tmp_path / "f.json")]) == 0
    printed = capsys.readouterr().out
    assert "unhealthy or failed: digits / clip / seed 0: failed: " in printed
    assert "no training samples" in printed and "digits / meru / seed 0: failed" in printed
    entry = json.loads((tmp_path / "f.json").read_text())["worlds"]["digits"]["meru"]
    assert entry["problems"] == ["failed"] and entry["per_family"] == {}
