"""The benchmark commands: the GPU set fails clearly without a GPU; the loss-only table's keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hyvl.cli.main import main as cli_main

TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(TOOLS))
    import bench as module

    return module


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_gpu_set_without_a_gpu_is_one_line_and_exit_2(monkeypatch, capsys, bench, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main(["--device", device, "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"bench: --device {device}: no CUDA device available")
    assert len(err.splitlines()) == 1
    # the CLI verb passes --device through and keeps the exit status
    assert cli_main(["bench", "--device", device]) == 2
    assert "no CUDA device available" in capsys.readouterr().err


def test_unknown_device_is_refused(capsys, bench):
    assert bench.main(["--device", "tpu"]) == 2
    assert "unknown device" in capsys.readouterr().err


def test_loss_only_rows_have_ratios_to_clip(bench):
    (row,) = bench.loss_only_scaling([32], d=16, reps=1)
    assert row["batch"] == 32
    for kind in ("clip", "meru", "hycoclip"):
        assert row[f"{kind}_ms"] > 0
    assert row["meru_over_clip"] == pytest.approx(row["meru_ms"] / row["clip_ms"])
    assert row["hycoclip_over_clip"] == pytest.approx(row["hycoclip_ms"] / row["clip_ms"])


def test_gpu_check_report_fails_on_an_error_or_a_nan(monkeypatch, tmp_path, bench):
    import json

    import gpu_check

    def broken(plan):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(gpu_check, "make_shards", lambda plan: "")
    checks = {
        "good": lambda plan: {"ok": True, "images_per_s": 12.5},
        # a step set: per-variant step seconds and images/s (the check's wall time is apart)
        "steps": lambda plan: {
            "ok": True,
            "batch": 8,
            "autocast": "bf16",
            "seconds": {"clip": 0.5, "meru": 0.25},
            "images_per_s": {"clip": 16.0, "meru": 32.0},
        },
        "nan": lambda plan: {"ok": True, "loss": float("nan"), "steps": [1.0, float("inf")]},
        "broken": broken,
    }
    monkeypatch.setattr(gpu_check, "CHECKS", checks)
    report_file, table = tmp_path / "r.json", tmp_path / "r.md"
    args = ["--dry-run", "--json", str(report_file), "--markdown", str(table)]
    assert gpu_check.main(args) == 1
    report = json.loads(report_file.read_text())
    assert set(report) == {"ok", "device", "checks"} and report["ok"] is False
    got = report["checks"]
    assert got["good"]["ok"] and got["good"]["images_per_s"] == 12.5
    assert not got["nan"]["ok"] and got["nan"]["loss"] is None
    assert got["nan"]["steps"] == [1.0, None]  # NaN and inf are null in the JSON
    assert not got["broken"]["ok"] and "ZeroDivisionError" in got["broken"]["error"]
    assert "| broken | NO |" in table.read_text() and "| good | yes |" in table.read_text()
    assert "| meru | 0.2500 | 32 |" in table.read_text()  # the step set's variants, side by side
    assert (
        got["steps"]["seconds"] == {"clip": 0.5, "meru": 0.25} and "check_seconds" in got["steps"]
    )
    # only the good check left: ok, exit 0
    monkeypatch.setattr(gpu_check, "CHECKS", {"good": checks["good"]})
    assert gpu_check.main(args) == 0 and json.loads(report_file.read_text())["ok"] is True


def test_gpu_check_without_a_gpu_is_one_line_and_exit_2(monkeypatch, capsys, bench):
    import gpu_check

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2
    assert capsys.readouterr().err.startswith("gpu_check: --device cuda: no CUDA device")
    assert cli_main(["bench", "--device", "cuda", "--full"]) == 2
