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
