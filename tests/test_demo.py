"""`hyvl demo`, the main job: trains all three models, evaluates, prints one table, writes the
demo JSON (docs/contract.md), loadable checkpoints and the plot. A short budget on a small demo world: the
accuracy targets are measured by `make demo` (README), not here."""

import json

import pytest
import torch

import hyvl
from hyvl.cli.main import main
from hyvl.data.demo import make_demo


@pytest.fixture
def demo_run(tmp_path):
    out = tmp_path / "demo"
    # hyvl demo reuses DIR/data when it holds shards: a small world keeps the test short.
    make_demo(
        out / "data",
        train_samples=64,
        val_samples=16,
        zeroshot_per_class=2,
        retrieval_images=8,
        samples_per_shard=32,
    )
    return out


def test_demo_all_trains_evaluates_and_reports(demo_run, capsys):
    out = demo_run
    argv = ["demo", "--out", str(out), "--all", "--steps", "2", "--batch-size", "8"]
    assert main([*argv, "--json", str(out / "results.json")]) == 0
    printed = capsys.readouterr().out
    for kind in ("hycoclip", "meru", "clip"):
        assert kind in printed
    assert "d0 box text" in printed and "zero-shot top1 %" in printed
    assert "zero-shot top-1 % per family" in printed and "round shape (chance 25)" in printed

    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"hycoclip", "meru", "clip"}
    for kind, res in results.items():
        zs, rt = res["zeroshot"], res["retrieval"]
        assert set(zs) >= {"top1", "top5", "mean_per_class", "num_samples", "num_classes", "chance"}
        assert zs["num_classes"] == 12 and zs["num_samples"] == 24
        assert zs["chance"] == pytest.approx(100 / 12)
        assert 0 <= zs["top1"] <= zs["top5"] <= 100
        # per class, and per family of the world's hierarchy.tsv (found beside zeroshot/)
        assert len(zs["per_class"]) == 12 and set(zs["per_family"]) == {"round shape", "polygon"}
        assert set(rt["image_to_text"]) == {"R@1", "R@5", "R@10"}
        assert rt["num_images"] == 8 and rt["num_texts"] == 16
        assert res["seconds"] > 0
        d0 = res["dist_to_origin"]
        assert set(d0) == {"image", "text", "box_image", "box_text"}
        if kind == "clip":  # unit sphere: no distance to the origin to report
            assert all(v is None for v in d0.values())
        else:
            assert all(v is not None and v > 0 for v in d0.values())
        # each model's output dir loads, and its metrics say it trained the asked budget
        model, preprocess, tokenizer = hyvl.load(out / kind)
        assert model.geometry == ("euclidean" if kind == "clip" else "lorentz")
        steps = [json.loads(line)["step"] for line in (out / kind / "metrics.jsonl").open()]
        assert steps[-1] == 2
    assert (out / "demo.png").stat().st_size > 10_000

    # the reported distances come from the saved model: recompute one from the export
    from hyvl.train.demo import distances_to_origin

    model, preprocess, tokenizer = hyvl.load(out / "meru")
    with torch.no_grad():
        d = distances_to_origin(model, preprocess, tokenizer, out / "data")
    assert d["image"]["mean"] == pytest.approx(results["meru"]["dist_to_origin"]["image"], rel=1e-6)


def test_demo_rejects_a_bad_budget(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err


def test_demo_rerun_with_other_steps_is_refused_then_accepted_by_its_flags(demo_run, capsys):
    out = demo_run
    argv = ["demo", "--out", str(out), "--model", "clip", "--batch-size", "4"]
    assert main([*argv, "--steps", "15"]) == 0
    metrics = (out / "clip" / "metrics.jsonl").read_text()
    capsys.readouterr()

    # fewer steps change the warm-up: refused before anything trains, naming both flags
    assert main([*argv, "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "train.warmup_steps: 2 -> 1" in err
    assert "--overwrite" in err and "--allow-config-change" in err
    assert (out / "clip" / "metrics.jsonl").read_text() == metrics

    # --allow-config-change continues the run (already past 2 steps) and records the change
    assert main([*argv, "--steps", "2", "--allow-config-change"]) == 0
    notes = [json.loads(line) for line in (out / "clip" / "metrics.jsonl").open()]
    assert notes[-1]["event"] == "config_change" and notes[-1]["step"] == 15

    # --overwrite trains afresh and keeps the earlier run beside it
    assert main([*argv, "--steps", "2", "--overwrite"]) == 0
    assert "kept as clip.replaced-1" in capsys.readouterr().err
    steps = [json.loads(line)["step"] for line in (out / "clip" / "metrics.jsonl").open()]
    assert steps[-1] == 2 and max(steps) == 2
    kept = [json.loads(line) for line in (out / "clip.replaced-1" / "metrics.jsonl").open()]
    assert kept[-1]["event"] == "config_change" and hyvl.load(out / "clip.replaced-1")

    # a folder hyvl did not make where a model's run goes: refused, naming --overwrite
    (out / "meru").mkdir()
    (out / "meru" / "notes.txt").write_text("mine")
    meru = ["demo", "--out", str(out), "--model", "meru", "--batch-size", "4", "--steps", "2"]
    assert main(meru) == 2
    assert "--overwrite moves the folder aside as meru.replaced-N" in capsys.readouterr().err
    assert [p.name for p in (out / "meru").iterdir()] == ["notes.txt"]
