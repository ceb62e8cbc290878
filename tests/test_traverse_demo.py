"""Issue 7's check on a real model: a HyCoCLIP model trained on the demo world (small towers,
100 steps) walks from an image to the origin monotonically and reads ever more generic texts of
the demo hierarchy (coloured shape > shape > family > "shape").

The budget was chosen so that the assertions hold with margin for training seeds 0, 1 and 2
(depth gap 0.89 / 0.91 / 1.78 against the 0.5 asked, 53-60 of 60 walks meeting a text, 58-60
monotone) and fail short of it: untrained, no walk meets a text; 60 steps at lr 1e-3, the
depth gap is 0.16."""

import json

import pytest
import torch
from PIL import Image

import hyvl
from hyvl.cli.main import main
from hyvl.data.demo import make_demo
from hyvl.evaluation.retrieval import load_coco
from hyvl.search.traverse import tangent_path, traverse
from hyvl.train.demo import demo_config
from hyvl.train.loop import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("trav")
    data = make_demo(
        root / "data", train_samples=1000, val_samples=8, zeroshot_per_class=1,
        retrieval_images=60,
    )  # fmt: skip
    cfg = demo_config("hycoclip", data, steps=100, batch_size=32)
    small = {
        "base": "hycoclip_tiny",
        "vision": {"image_size": 32, "depth": 2},
        "text": {"layers": 2},
    }
    # the cones this test walks need the entailment term from step 0: pin the recipe the test
    # was measured with, not the tiny recipe's later tuning (warm-up, gate, clipping, box size, box pair)
    objective = cfg.objective.model_copy(
        update={"entail_warmup_steps": 0, "entail_gate": 0.0, "box_pair_weight": 0.0}
    )
    data_cfg = cfg.data.model_copy(update={"min_box_size": 32})
    # (200 steps at the recipe's lr 1e-3 reach the same; half the steps at twice the lr do too)
    # fused: the same embeddings as split up to rounding; auto's timing of both at start (8
    # tower passes, ~8% of this run) is not what this test checks (test_train's run does)
    train_cfg = cfg.train.model_copy(update={"grad_clip": 0.0, "lr": 2e-3, "box_towers": "fused"})
    update = {"model": small, "objective": objective, "data": data_cfg, "train": train_cfg}
    train(cfg.model_copy(update=update), root / "model")
    return root, data


def _depths(data):
    edges = [line.split("\t") for line in (data / "hierarchy.tsv").read_text().splitlines()]
    parent = {child: p for p, child in edges}
    nodes = sorted({n for e in edges for n in e})

    def depth(n):
        return 0 if n not in parent else 1 + depth(parent[n])

    return nodes, [depth(n) for n in nodes]


def test_walks_to_the_origin_read_more_generic_texts(trained):
    root, data = trained
    model, preprocess, tokenizer = hyvl.load(root / "model")
    nodes, depth = _depths(data)
    with torch.no_grad():
        texts = model.encode_text(tokenizer(nodes))
    paths, _, _ = load_coco(data / "retrieval" / "captions.json")
    with torch.no_grad():
        images = model.encode_image(
            torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])
        )
    monotone, first, last = 0, [], []
    for x in images:
        steps = traverse(tangent_path(x, None, 10, model.curv), texts, model.curv)
        d0 = [s["dist0"] for s in steps]
        assert all(a > b for a, b in zip(d0, d0[1:], strict=False)) and d0[-1] < 1e-4
        chosen = [depth[s["text"]] for s in steps if s["text"] is not None]
        monotone += all(a >= b for a, b in zip(chosen, chosen[1:], strict=False))
        if chosen:
            first.append(chosen[0])
            last.append(chosen[-1])
    assert len(first) >= len(paths) // 2  # most walks meet texts whose cones hold them
    assert monotone >= 0.9 * len(paths)  # generality never decreases along a walk
    # walks start at specific texts and end at generic ones (depth 3 = "red circle", 0 = "shape")
    assert sum(first) / len(first) - sum(last) / len(last) >= 0.5


def test_cli_traverse_on_the_trained_model(trained, tmp_path, capsys):
    root, data = trained
    nodes, _ = _depths(data)
    (tmp_path / "texts.txt").write_text("\n".join(nodes) + "\n")
    image = sorted((data / "retrieval" / "images").glob("*.jpg"))[0]
    args = ["traverse", "--checkpoint", root / "model", "--texts", tmp_path / "texts.txt",
            "--image", image, "--steps", "8", "--json", tmp_path / "t.json"]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    assert "traversal from" in capsys.readouterr().out
    steps = json.loads((tmp_path / "t.json").read_text())["steps"]
    assert len(steps) == 8 and steps[-1]["dist0"] < 1e-4
