"""The real-image demo world: packaged scans and photographs, the shapes demo's layout, small
grey objects, held-out pixels for evaluation, deterministic."""

import json
import random

import numpy as np
import pytest
from open_clip.tokenizer import SimpleTokenizer
from PIL import Image

from hyvl.cli.main import main
from hyvl.data import real
from hyvl.data.pipeline import build_eval_loader
from hyvl.errors import ConfigError


def small(out, seed=0):
    return real.make_real_demo(
        out,
        seed,
        train_samples=24,
        val_samples=8,
        zeroshot_per_class=2,
        retrieval_images=6,
        samples_per_shard=10,
    )


def test_layout_matches_the_shapes_demo(tmp_path):
    out = small(tmp_path / "real")
    assert len(list((out / "train").glob("*.tar"))) == 3
    assert len(list((out / "val").glob("*.tar"))) == 1
    classes = (out / "zeroshot" / "classnames.txt").read_text().split("\n")[:-1]
    assert classes == real.CLASSES and len(classes) == 13
    folders = sorted(p for p in (out / "zeroshot").iterdir() if p.is_dir())
    assert [len(list(f.glob("*.jpg"))) for f in folders] == [2] * 13
    coco = json.loads((out / "retrieval" / "captions.json").read_text())
    assert len(coco["images"]) == 6 and len(coco["annotations"]) == 12
    for image in coco["images"]:
        assert (out / "retrieval" / "images" / image["file_name"]).is_file()
    edges = [line.split("\t") for line in (out / "hierarchy.tsv").read_text().splitlines()]
    assert ["handwritten digit", "handwritten three"] in edges and ["object", "texture"] in edges


def test_scenes_are_grey_with_small_named_boxes(tmp_path):
    out = small(tmp_path / "real")
    loader = build_eval_loader(
        str(out / "train" / "*.tar"),
        batch_size=24,
        image_size=64,
        tokenizer=SimpleTokenizer(context_length=32),
        boxes_per_sample=1,
    )
    batch = next(iter(loader))
    assert batch.box_images is not None and batch.box_images.shape[0] == 24
    for seed in range(20):
        image, caption, boxes, labels = real.make_scene(random.Random(seed))
        pixels = np.asarray(image).astype(int)
        assert (pixels[..., 0] == pixels[..., 1]).all()  # no colour anywhere
        assert 1 <= len(boxes) <= 3 and caption == real.caption_of(boxes)
        for box, label in zip(boxes, labels, strict=True):
            x1, y1, x2, y2 = box["bbox"]
            assert real.BOX[0] <= x2 - x1 <= real.BOX[1] and box["text"] == real.CLASSES[label]
            assert box["text"] in caption


def test_deterministic_and_held_out(tmp_path):
    a, b = small(tmp_path / "a"), small(tmp_path / "b")
    for path in sorted(a.rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (b / path.relative_to(a)).read_bytes(), path
    digits, textures = real._sources()
    train, held = digits["train"][0], digits["held_out"][0]
    assert len(train) + len(held) == 1797 and len(held) == 360
    # held-out scans are other scans (the scanned set holds a few exact repeats itself)
    dup = (held[:, None] == train[None]).all(axis=(2, 3)).any(axis=1).mean()
    assert dup < 0.02
    assert textures["train"]["brick"].shape[1] == textures["held_out"]["brick"].shape[1]


def test_cli_writes_the_real_kind(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["data", "demo", "--kind", "real", "--world", "digits", "--wording", "scene"]
    assert main([*argv, "--out", str(out), "--train-samples", "4"]) == 0
    printed = capsys.readouterr().out
    assert "world: digits on light, 22-30 px, 1-3 per scene, scene captions" in printed
    assert "written" in printed
    assert len((out / "zeroshot" / "classnames.txt").read_text().split()) == 20  # ten digits
    image = Image.open(next((out / "zeroshot" / "00_handwritten_zero").glob("*.jpg")))
    assert image.size == (real.CANVAS, real.CANVAS)
    coco = json.loads((out / "retrieval" / "captions.json").read_text())
    assert coco["annotations"][0]["caption"].startswith("a picture with a handwritten ")


def test_demo_on_real_data_trains_reports_health_and_refuses_mixed_data(tmp_path, capsys):
    out = tmp_path / "demo"
    small(out / "data")  # hyvl demo reuses DIR/data when it holds shards
    argv = ["demo", "--data", "real", "--model", "clip", "--out", str(out)]
    assert (
        main([*argv, "--steps", "2", "--batch-size", "8", "--json", str(tmp_path / "r.json")]) == 0
    )
    printed = capsys.readouterr().out
    assert "hyvl demo (real)" in printed and "clip: checkpoint" in printed
    assert "healthy" in printed  # the run's health verdict, healthy or not
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["zeroshot"]["num_classes"] == 13 and result["zeroshot"]["num_samples"] == 26
    assert result["zeroshot"]["chance"] == 100 / 13
    assert set(result["zeroshot"]["per_family"]) == {"handwritten digit", "texture"}
    assert "handwritten digit (chance 10)" in printed  # the per-family table
    # the shapes demo on top of the real data is refused, not silently mixed
    assert main(["demo", "--model", "clip", "--out", str(out), "--steps", "1"]) == 2
    assert "holds another demo's data" in capsys.readouterr().err


def test_worlds_change_sources_background_size_count_and_wording(tmp_path):
    world = real.get_world("mixed", background="noisy", objects=(2, 2), wording="terse")
    out = real.make_real_demo(
        tmp_path / "w",
        world=world,
        train_samples=6,
        val_samples=2,
        zeroshot_per_class=1,
        retrieval_images=3,
        samples_per_shard=10,
    )
    classes = (out / "zeroshot" / "classnames.txt").read_text().split("\n")[:-1]
    assert classes == real.CLASSES + ["human face", "coin"]
    edges = [line.split("\t") for line in (out / "hierarchy.tsv").read_text().splitlines()]
    assert ["object", "photographed object"] in edges and ["photographed object", "coin"] in edges
    coco = json.loads((out / "retrieval" / "captions.json").read_text())
    assert all(
        ", " in a["caption"] and not a["caption"].startswith("a ") for a in coco["annotations"]
    )
    loader = build_eval_loader(
        str(out / "train" / "*.tar"),
        batch_size=6,
        image_size=64,
        tokenizer=SimpleTokenizer(context_length=32),
        boxes_per_sample=2,
    )
    assert next(iter(loader)).box_images.shape[0] == 12  # two boxes in every scene
    rng = random.Random(0)
    for name, want in (("light", (190, 240)), ("dark", (15, 60))):
        w = real.get_world("real", background=name, object_size=(40, 46), objects=(1, 1))
        image, _, boxes, _ = real.make_scene(rng, "held_out", [10], w)  # a brick patch
        x1, y1, x2, y2 = boxes[0]["bbox"]
        assert 40 <= x2 - x1 <= 46
        corner = np.asarray(image)[..., 0].astype(float)
        corner[y1:y2, x1:x2] = np.nan
        assert want[0] - 10 <= np.nanmean(corner) <= want[1] + 10
    noisy = np.asarray(real.make_scene(rng, "train", [0], real.get_world("noisy"))[0])
    assert noisy[..., 0].std() > 20  # a textured background, not a plain one


def test_photographed_objects_are_held_out_too():
    splits = real._photo_sources()
    for name, train_n, held_n in (("human face", 80, 20), ("coin", 18, 6)):
        train, held = splits["train"][name], splits["held_out"][name]
        assert (len(train), len(held)) == (train_n, held_n)
        for pixels, alpha in held:
            assert not any(p.shape == pixels.shape and (p == pixels).all() for p, _ in train)
            assert alpha.shape == pixels.shape and alpha.min() >= 0 and alpha.max() <= 1
    coin_alpha = splits["train"]["coin"][0][1]
    assert coin_alpha[0, 0] == 0 and coin_alpha[coin_alpha.shape[0] // 2].max() == 1  # cut out


def test_bad_world_options_are_named(tmp_path, capsys):
    for change, word in (
        ({"background": "purple"}, "background 'purple'"),
        ({"sources": ("digits", "fish")}, "'fish'"),
        ({"object_size": (30, 70)}, "object size 30-70"),
        ({"objects": (0, 2)}, "objects per scene 0-2"),
        ({"wording": "poetic"}, "wording 'poetic'"),
    ):
        with pytest.raises(ConfigError, match=word):
            real.get_world("real", **change)
    with pytest.raises(ConfigError, match="world 'moon': choose one of real, digits"):
        real.get_world("moon")
    out = str(tmp_path / "x")
    assert main(["data", "demo", "--out", out, "--background", "dark"]) == 2
    assert "--background: only for --kind real" in capsys.readouterr().err
    assert main(["data", "demo", "--kind", "real", "--out", out, "--object-size", "4-6"]) == 2
    assert "object size 4-6 px" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
