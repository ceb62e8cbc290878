"""Data: layouts, robustness (skip and count), exact resume, shard writing and the demo world."""

import json
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from hyvl.config import DataConfig, TextConfig
from hyvl.data.demo import CLASSES, make_demo
from hyvl.data.layouts import Skip, parse_sample
from hyvl.data.pipeline import build_eval_loader, build_train_loader
from hyvl.data.stats import shard_stats
from hyvl.data.writer import records_from_coco, records_from_grounded, write_shards
from hyvl.errors import DataError
from hyvl.models.tokenizer import get_tokenizer

from conftest import jpeg, write_tar

TOKENIZER = get_tokenizer(TextConfig(context_length=16))


def grounded(caption, boxes):
    return json.dumps({"caption": caption, "boxes": boxes}).encode()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo(
        tmp_path_factory.mktemp("demo"),
        train_samples=600,
        val_samples=64,
        zeroshot_per_class=2,
        retrieval_images=10,
        samples_per_shard=200,
    )


def test_demo_world_has_the_contract_layout(demo):
    assert len(list((demo / "train").glob("*.tar"))) == 3
    assert list((demo / "val").glob("*.tar"))
    classes = (demo / "zeroshot" / "classnames.txt").read_text().split("\n")[:-1]
    assert classes == CLASSES
    folders = sorted(p for p in (demo / "zeroshot").iterdir() if p.is_dir())
    assert len(folders) == len(CLASSES) and all(len(list(f.glob("*.jpg"))) == 2 for f in folders)
    coco = json.loads((demo / "retrieval" / "captions.json").read_text())
    assert len(coco["images"]) == 10 and len(coco["annotations"]) == 20
    assert all((demo / "retrieval" / "images" / i["file_name"]).is_file() for i in coco["images"])
    edges = [line.split("\t") for line in (demo / "hierarchy.tsv").read_text().splitlines()]
    assert ["shape", "round shape"] in edges and ["circle", "red circle"] in edges
    stats = shard_stats(str(demo / "train" / "*.tar"), progress=False)
    assert stats["samples"] == 600 and stats["with_boxes"] == 600 and stats["skipped"] == {}


def test_demo_is_deterministic(tmp_path):
    a = make_demo(
        tmp_path / "a", train_samples=20, val_samples=4, zeroshot_per_class=1, retrieval_images=2
    )
    b = make_demo(
        tmp_path / "b", train_samples=20, val_samples=4, zeroshot_per_class=1, retrieval_images=2
    )
    assert (a / "train" / "train-000000.tar").read_bytes() == (
        b / "train" / "train-000000.tar"
    ).read_bytes()


def test_resumed_loader_yields_exactly_the_remaining_batches(demo):
    cfg = DataConfig(train_shards=str(demo / "train" / "*.tar"), workers=2, shuffle_buffer=50)

    def batches(start, n):
        it = iter(
            build_train_loader(
                cfg,
                batch_size=8,
                image_size=32,
                tokenizer=TOKENIZER,
                seed=3,
                start_step=start,
                boxes_per_sample=1,
            )
        )
        return [next(it) for _ in range(n)]

    full, resumed = batches(0, 7), batches(5, 2)
    for a, b in zip(full[5:], resumed, strict=True):
        assert a.keys == b.keys
        assert torch.equal(a.images, b.images) and torch.equal(a.box_images, b.box_images)
        assert torch.equal(a.box_tokens, b.box_tokens)
    assert full[0].keys != full[1].keys
    # a different seed gives a different stream
    other = iter(
        build_train_loader(
            cfg, batch_size=8, image_size=32, tokenizer=TOKENIZER, seed=4, boxes_per_sample=1
        )
    )
    assert next(other).keys != full[0].keys


def test_ranks_read_disjoint_shards_in_finite_mode(demo):
    cfg = DataConfig(
        train_shards=str(demo / "train" / "*.tar"), workers=1, resampled=False, shuffle_buffer=0
    )
    keys = []
    for rank in range(2):
        it = iter(
            build_train_loader(
                cfg,
                batch_size=50,
                image_size=32,
                tokenizer=TOKENIZER,
                rank=rank,
                world_size=2,
                boxes_per_sample=0,
            )
        )
        keys.append({k for _ in range(4) for k in next(it).keys})
    assert keys[0].isdisjoint(keys[1])
    cfg.workers = 2
    with pytest.raises(DataError, match="every worker needs a shard"):
        build_train_loader(cfg, batch_size=8, image_size=32, tokenizer=TOKENIZER, world_size=2)


def test_bad_samples_are_skipped_and_counted(tmp_path):
    good_box = [{"bbox": [0, 0, 40, 40], "text": "red square"}]
    samples = [
        ("ok1", {"jpg": jpeg(), "json": grounded("a red square", good_box)}),
        ("corrupt", {"jpg": b"not a jpeg at all", "json": grounded("x", good_box)}),
        ("nocap", {"jpg": jpeg()}),
        ("empty", {"jpg": jpeg(), "txt": b"   "}),
        (
            "badbox",
            {
                "jpg": jpeg(),
                "json": grounded(
                    "a thing",
                    [
                        {"bbox": [100, 100, 120, 120], "text": "outside"},
                        {"bbox": [10, 10, 10, 30], "text": "flat"},
                        {"bbox": [0, 0, 30, 30], "text": ""},
                    ],
                ),
            },
        ),
        ("ok2", {"jpg": jpeg(), "json": grounded("a red square again", good_box)}),
    ]
    write_tar(tmp_path / "a.tar", samples)
    loader = build_eval_loader(
        str(tmp_path / "a.tar"), image_size=32, tokenizer=TOKENIZER, boxes_per_sample=1
    )
    keys = [k for b in loader for k in b.keys]
    assert keys == ["ok1", "ok2"]
    assert loader.skipped() == {
        "corrupt_image": 1,
        "missing_caption": 1,
        "empty_caption": 1,
        "no_usable_box": 1,
    }
    assert loader.dropped_boxes() == {
        "box_outside_image": 1,
        "box_zero_area": 1,
        "box_empty_text": 1,
    }
    # without boxes the sample with only bad boxes is still a fine image-text pair
    loader = build_eval_loader(str(tmp_path / "a.tar"), image_size=32, tokenizer=TOKENIZER)
    assert [k for b in loader for k in b.keys] == ["ok1", "badbox", "ok2"]


def test_truncated_tar_keeps_the_samples_before_the_cut(tmp_path):
    samples = [(f"s{i}", {"jpg": jpeg(), "txt": f"caption {i}".encode()}) for i in range(6)]
    write_tar(tmp_path / "full.tar", samples)
    data = (tmp_path / "full.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: int(len(data) * 0.6)])
    stats = shard_stats(str(tmp_path / "cut.tar"), progress=False)
    assert 2 <= stats["samples"] < 6
    assert stats["skipped"].get("truncated_tar") == 1


def test_grit_and_hycoclip_layouts(tmp_path):
    caption = "a red ball next to a red ball and a blue cup"
    second = caption.index("a red ball", 1)
    cup = caption.index("blue cup")
    meta = {
        "caption": caption,
        "noun_chunks": [
            [0, 10, 0.0, 0.0, 0.5, 0.5, 0.9],
            [second, second + 10, 0.5, 0.5, 1.0, 1.0, 0.9],
        ],
        "ref_exps": [
            [cup, cup + 8, 0.0, 0.5, 0.9, 1.0, 0.8],
            [cup, cup + 8, 0.9, 0.9, 0.91, 0.91, 0.8],
        ],
    }
    raw = {"__key__": "g", "jpg": jpeg((100, 100)), "json": json.dumps(meta).encode()}
    sample, dropped = parse_sample(raw, min_box_size=5)
    assert [t for _, t in sample.boxes] == ["a red ball", "blue cup"]
    assert sample.boxes[0][0] == (0.0, 0.0, 50.0, 50.0)
    assert sorted(dropped) == ["box_duplicate_text", "box_duplicate_text"]

    raw = {
        "__key__": "h",
        "child.jpg": jpeg(),
        "child.txt": b"a dog on grass",
        "numparents.txt": b"2",
        "parent000.jpg": jpeg((20, 20)),
        "parent000.txt": b"dog",
        "parent001.jpg": jpeg((20, 20)),
        "parent001.txt": b"grass",
    }
    sample, dropped = parse_sample(raw)
    assert sample.caption == "a dog on grass" and [t for _, t in sample.box_crops] == [
        "dog",
        "grass",
    ]

    raw = {"__key__": "p", "png": jpeg(), "json": b'{"caption": "plain"}', "cls": b"3"}
    sample, _ = parse_sample(raw)
    assert (sample.caption, sample.label, sample.num_boxes) == ("plain", 3, 0)
    with pytest.raises(Skip, match="bad_json"):
        parse_sample({"__key__": "j", "jpg": jpeg(), "json": b"{oops"})


def test_normalized_boxes_and_k_boxes(tmp_path):
    meta = {
        "caption": "two things",
        "bbox_format": "normalized",
        "boxes": [
            {"bbox": [0, 0, 0.5, 0.5], "text": "one"},
            {"bbox": [0.5, 0.5, 1, 1], "text": "two"},
        ],
    }
    write_tar(
        tmp_path / "n.tar", [("n", {"jpg": jpeg((100, 80)), "json": json.dumps(meta).encode()})]
    )
    batch = next(
        iter(
            build_eval_loader(
                str(tmp_path / "n.tar"), image_size=32, tokenizer=TOKENIZER, boxes_per_sample=3
            )
        )
    )
    assert batch.box_images.shape == (3, 3, 32, 32) and batch.box_texts == ["one", "two", "one"]


def test_make_shards_cli_from_coco_and_grounded(tmp_path):
    (tmp_path / "img").mkdir()
    for i in range(5):
        Image.new("RGB", (120, 90), (i * 40, 0, 0)).save(tmp_path / "img" / f"{i}.jpg")
    (tmp_path / "img" / "bad.jpg").write_bytes(b"broken")
    coco = {
        "images": [{"id": i, "file_name": f"{i}.jpg"} for i in range(5)]
        + [{"id": 9, "file_name": "bad.jpg"}],
        "annotations": [{"id": i, "image_id": i, "caption": f"image {i}"} for i in range(5)]
        + [{"id": 9, "image_id": 9, "caption": "broken"}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "hyvl",
            "data",
            "make-shards",
            "--coco",
            str(tmp_path / "coco.json"),
            "--images",
            str(tmp_path / "img"),
            "--out",
            str(tmp_path / "shards"),
            "--samples-per-shard",
            "2",
            "--resize",
            "60",
            "--json",
            str(tmp_path / "m.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["samples"] == 5 and manifest["skipped"] == {"corrupt_image": 1}
    assert len(manifest["shards"]) == 3
    stats = shard_stats(str(tmp_path / "shards" / "shard-{000000..000002}.tar"), progress=False)
    assert stats["samples"] == 5

    lines = [
        json.dumps(
            {
                "image": f"{i}.jpg",
                "caption": f"thing {i}",
                "boxes": [{"bbox": [0, 0, 60, 45], "text": "corner"}],
            }
        )
        for i in range(3)
    ]
    (tmp_path / "img" / "g.jsonl").write_text("\n".join(lines))
    manifest = write_shards(
        records_from_grounded(tmp_path / "img" / "g.jsonl"),
        tmp_path / "g",
        resize=60,
        progress=False,
    )
    batch = next(
        iter(
            build_eval_loader(
                str(tmp_path / "g" / "*.tar"),
                image_size=32,
                tokenizer=TOKENIZER,
                boxes_per_sample=1,
            )
        )
    )
    assert batch.box_texts == ["corner"] * 3
    # the box was scaled with the image (120x90 -> 80x60): bbox now [0, 0, 40, 30]
    assert manifest["samples"] == 3
    with tarfile.open(tmp_path / "g" / "shard-000000.tar") as tar:
        meta = json.loads(tar.extractfile("0.json").read())
    assert meta["boxes"][0]["bbox"] == [0.0, 0.0, 40.0, 30.0]


def test_coco_errors_name_the_file(tmp_path):
    (tmp_path / "c.json").write_text('{"images": []}')
    with pytest.raises(DataError, match="c.json: not a COCO captions file"):
        records_from_coco(tmp_path / "c.json", tmp_path)


def test_data_stats_cli_json(demo, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "hyvl",
            "data",
            "stats",
            str(demo / "val" / "*.tar"),
            "--json",
            str(tmp_path / "s.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["samples"] == 64 and stats["with_boxes"] == 64 and stats["skipped"] == {}
    assert "samples" in out.stdout


def test_batches_are_converted_at_once_with_totensor_values():
    """The loader converts each batch with one uint8 -> fp32 pass (stack_images); the pixels are
    exactly torchvision's ToTensor of every image (x / 255), in (N, 3, H, W) order."""
    from PIL import Image
    from torchvision.transforms import ToTensor

    from hyvl.models.transforms import stack_images

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)) for _ in range(3)]
    got = stack_images(images)
    want = torch.stack([ToTensor()(im) for im in images])
    assert got.shape == (3, 3, 5, 7) and got.dtype == torch.float32 and got.is_contiguous()
    assert torch.equal(got, want)


@pytest.mark.parametrize(
    "bad,expected",
    [
        (b'{"image": "0.jpg", "caption": "caf\xe9"}', "not valid UTF-8 (byte 35 of the line"),
        (b'{"image": "0.jpg", "caption": "smile \\ud83d"}', "holds a lone surrogate"),
    ],
)
def test_item10_bad_text_in_a_grounded_jsonl_names_the_file_and_line(
    tmp_path, capsys, bad, expected
):
    from hyvl.cli.main import main

    (tmp_path / "img").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "img" / "0.jpg")
    good = json.dumps({"image": "0.jpg", "caption": "a thing", "boxes": []}).encode()
    jsonl = tmp_path / "img" / "g.jsonl"
    jsonl.write_bytes(good + b"\n" + good + b"\n" + bad + b"\n")
    args = ["data", "make-shards", "--grounded", str(jsonl), "--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert f"{jsonl}:3: {expected}" in err and "internal error" not in err and "\n" not in err
