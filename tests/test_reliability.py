"""Bad input and output safety on the command line (issue 14, cases 5, 6 and 7): one-line
errors with exit 2 instead of tracebacks, refusal to clobber, skips counted, and values that
used to come out silently wrong."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

import hyvl


def run_cli(*args):
    """``hyvl ARGS`` in this process; a traceback would escape as an exception here."""
    from hyvl.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def assert_one_line_error(res, *words):
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert lines and "Traceback" not in res.stderr, res.stderr
    assert lines[-1].startswith(("hyvl ", "usage:")) and "error:" in lines[-1], res.stderr
    for word in words:
        assert word in res.stderr, (word, res.stderr)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A small MERU export (one block per tower) and a texts file."""
    root = tmp_path_factory.mktemp("rel")
    torch.manual_seed(0)
    small = {"text": {"layers": 1}, "vision": {"depth": 1}}
    hyvl.save(hyvl.create_model("meru_tiny", **small), root / "meru")
    hyvl.save(hyvl.create_model("meru_tiny", curv_init=2.0, **small), root / "meru2")
    hyvl.save(hyvl.create_model("clip_tiny", **small), root / "clip")
    (root / "texts.txt").write_text("red\ngreen\nblue\nshape\n")
    (root / "img").mkdir()
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (32, 32), colour).save(root / "img" / f"{i}.png")
    return root


# ------------------------------------------------------------------------------ case 5


def test_index_build_refuses_to_replace_an_index_without_overwrite(ckpt, tmp_path):
    build = ("index", "build", "--checkpoint", ckpt / "meru", "--texts", ckpt / "texts.txt")
    assert run_cli(*build, "--out", tmp_path / "idx").returncode == 0
    before = (tmp_path / "idx" / "items.jsonl").read_text()
    assert_one_line_error(run_cli(*build, "--out", tmp_path / "idx"), "--overwrite")
    assert (tmp_path / "idx" / "items.jsonl").read_text() == before
    assert run_cli(*build, "--out", tmp_path / "idx", "--append").returncode == 0
    assert len((tmp_path / "idx" / "items.jsonl").read_text().splitlines()) == 8
    assert run_cli(*build, "--out", tmp_path / "idx", "--overwrite").returncode == 0
    assert (tmp_path / "idx" / "items.jsonl").read_text() == before
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("x")
    assert_one_line_error(run_cli(*build, "--out", tmp_path / "notes"), "not empty", "mine.txt")
    (tmp_path / "file").write_text("x")
    assert_one_line_error(run_cli(*build, "--out", tmp_path / "file"), "not a directory")


def test_index_append_with_another_checkpoint_is_refused(ckpt, tmp_path):
    """Same geometry and curvature, other weights: the rows would not be comparable. The
    index records its model's fingerprint and --append refuses before embedding anything."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    other = tmp_path / "meru_b"
    shutil.copytree(ckpt / "meru", other)
    weights = load_file(other / "model.safetensors")
    name = next(k for k in weights if k.endswith("weight"))
    weights[name] = weights[name] + 0.01  # a fine-tuned copy
    save_file(weights, other / "model.safetensors")
    texts = ("--texts", ckpt / "texts.txt", "--out", tmp_path / "idx")
    assert run_cli("index", "build", "--checkpoint", ckpt / "meru", *texts).returncode == 0
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    before = (tmp_path / "idx" / "items.jsonl").read_text()
    res = run_cli("index", "build", "--checkpoint", other, *texts, "--append")
    assert_one_line_error(res, "cannot append", str(ckpt / "meru"), str(other), meta["fingerprint"])
    assert (tmp_path / "idx" / "items.jsonl").read_text() == before


def test_data_demo_refuses_a_foreign_directory_and_keeps_its_files(tmp_path):
    from hyvl.data.demo import make_demo
    from hyvl.data.writer import write_demo

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"precious")
    res = run_cli("data", "demo", "--out", tmp_path / "photos", "--train-samples", "4")
    assert_one_line_error(res, "holiday.jpg", "--overwrite")
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["holiday.jpg"]
    (tmp_path / "f").write_text("x")
    assert_one_line_error(run_cli("data", "demo", "--out", tmp_path / "f"), "not a directory")
    sizes = dict(train_samples=4, val_samples=2, zeroshot_per_class=1, retrieval_images=2)
    write_demo(make_demo, tmp_path / "photos", overwrite=True, **sizes)
    assert (tmp_path / "photos" / "holiday.jpg").read_bytes() == b"precious"
    assert (tmp_path / "photos" / "zeroshot" / "classnames.txt").is_file()
    write_demo(make_demo, tmp_path / "demo", **sizes)
    write_demo(make_demo, tmp_path / "demo", seed=1, **sizes)  # demo data: replaced freely


def photos(root: Path, n: int) -> Path:
    (root / "img").mkdir(parents=True)
    lines = []
    for i in range(n):
        Image.new("RGB", (24, 24), (i * 20, 0, 0)).save(root / "img" / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "caption": f"photo {i}"}))
    (root / "caps.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_make_shards_removes_the_stale_shards_of_its_previous_run(tmp_path):
    photos(tmp_path, 8)
    make = ("data", "make-shards", "--images", tmp_path / "img", "--captions",
            tmp_path / "caps.jsonl", "--out", tmp_path / "s")  # fmt: skip
    assert run_cli(*make, "--samples-per-shard", "1").returncode == 0
    (tmp_path / "s" / "README.txt").write_text("not ours")
    assert run_cli(*make, "--samples-per-shard", "2").returncode == 0
    manifest = json.loads((tmp_path / "s" / "shard-manifest.json").read_text())
    assert sorted(p.name for p in (tmp_path / "s").glob("*.tar")) == sorted(
        s["shard"] for s in manifest["shards"]
    )
    assert len(manifest["shards"]) == 4 and (tmp_path / "s" / "README.txt").is_file()
    stats = run_cli("data", "stats", f"{tmp_path / 's'}/*.tar", "--json", tmp_path / "st.json")
    assert json.loads((tmp_path / "st.json").read_text())["shards"] == 4, stats.stderr


def test_make_shards_with_the_wrong_image_root_is_an_error(tmp_path):
    photos(tmp_path, 3)
    (tmp_path / "elsewhere").mkdir()
    res = run_cli("data", "make-shards", "--images", tmp_path / "elsewhere", "--captions",
                  tmp_path / "caps.jsonl", "--out", tmp_path / "s")  # fmt: skip
    assert_one_line_error(res, "none of the 3 images exists", str(tmp_path / "elsewhere" / "0.png"))
    assert not (tmp_path / "s").exists()
    (tmp_path / "s").write_text("a file")
    res = run_cli("data", "make-shards", "--images", tmp_path / "img", "--captions",
                  tmp_path / "caps.jsonl", "--out", tmp_path / "s")  # fmt: skip
    assert_one_line_error(res, "not a directory")
    assert (tmp_path / "s").read_text() == "a file"


# ------------------------------------------------------------------------------ case 6


def bomb_png(path: Path, side: int = 14000) -> Path:
    """A valid PNG header announcing side x side pixels (PIL refuses it on open as a
    decompression bomb; the file itself is a few bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )  # fmt: skip
    return path


def test_bomb_png_is_what_pil_refuses():
    from hyvl.images import BadImage, open_rgb

    with pytest.raises(BadImage) as err:
        open_rgb(bomb_png(Path("/tmp") / "hyvl-bomb-check.png"))
    assert err.value.reason == "image_too_large"
    Path("/tmp/hyvl-bomb-check.png").unlink()


@pytest.fixture(scope="module")
def index(ckpt):
    run = run_cli("index", "build", "--checkpoint", ckpt / "meru", "--images", ckpt / "img",
                  "--texts", ckpt / "texts.txt", "--out", ckpt / "idx")  # fmt: skip
    assert run.returncode == 0, run.stderr
    return ckpt / "idx"


@pytest.mark.parametrize("backend", ["torch", "faiss", "hnsw", "ivf"])
def test_k_below_one_is_refused_by_every_backend(index, backend):
    from hyvl.errors import HyvlError
    from hyvl.search.index import EmbeddingIndex

    idx = EmbeddingIndex.load(index)
    query = idx.embeddings[:1]
    for k in (0, -1):
        with pytest.raises(HyvlError, match="k must be a positive integer"):
            idx.search(query, k, kind="image", backend=backend)
    assert len(idx.search(query, 2, kind="image", backend=backend)[0]) == 2


def test_retrieve_bad_arguments_are_one_line_errors(index, ckpt, tmp_path):
    for k in ("0", "-1"):
        res = run_cli("retrieve", "--index", index, "--text", "red", "-k", k)
        assert_one_line_error(res, "positive integer")
    assert_one_line_error(run_cli("retrieve", "--index", index, "--text", " "), "--text is empty")
    res = run_cli("retrieve", "--index", index, "--image", bomb_png(tmp_path / "big.png"))
    assert_one_line_error(res, "big.png", "image_too_large")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    res = run_cli("retrieve", "--index", index, "--image", tmp_path / "bad.jpg")
    assert_one_line_error(res, "bad.jpg", "corrupt_image")
    with pytest.raises(Exception, match="image_too_large"):
        # --debug lets the traceback through (here: the exception itself)
        from hyvl.cli.main import main

        main(["--debug", "retrieve", "--index", str(index), "--image", str(tmp_path / "big.png")])


def test_index_build_bad_input_is_one_line_errors(ckpt, tmp_path):
    (tmp_path / "texts.txt").write_bytes(b"red\ncaf\xe9 au lait\nblue\n")  # latin-1 line 2
    res = run_cli("index", "build", "--checkpoint", ckpt / "meru", "--texts",
                  tmp_path / "texts.txt", "--out", tmp_path / "idx")  # fmt: skip
    assert_one_line_error(res, "texts.txt line 2", "not UTF-8")
    res = run_cli("index", "build", "--checkpoint", ckpt / "meru", "--texts", ckpt / "texts.txt",
                  "--out", tmp_path / "idx", "--device", "cuda")  # fmt: skip
    if not torch.cuda.is_available():
        assert_one_line_error(res, "--device cuda", "no CUDA GPU")
    res = run_cli("index", "build", "--checkpoint", ckpt / "meru", "--texts", ckpt / "texts.txt",
                  "--out", tmp_path / "idx", "--device", "tpu9")  # fmt: skip
    assert_one_line_error(res, "--device tpu9")


def test_bad_images_in_folders_are_skipped_and_counted(ckpt, tmp_path):
    """A corrupt JPEG and a 14000 x 14000 PNG in an ImageFolder (eval zeroshot) and in an image
    folder (index build): skipped, counted by reason in the JSON and the printed table."""
    root = tmp_path / "zs"
    for c, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32), colour).save(root / f"c{c}" / f"{i}.jpg")
    (root / "c0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")
    bomb_png(root / "c1" / "huge.png")
    res = run_cli("eval", "zeroshot", "--checkpoint", ckpt / "meru", "--data", root,
                  "--json", tmp_path / "zs.json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = json.loads((tmp_path / "zs.json").read_text())
    assert out["skipped"] == {"corrupt_image": 1, "image_too_large": 1}
    assert out["num_samples"] == 6
    assert "skipped: 2 (corrupt_image 1, image_too_large 1)" in res.stdout
    res = run_cli("index", "build", "--checkpoint", ckpt / "meru", "--images", root,
                  "--out", tmp_path / "idx")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "skipped: 2 (corrupt_image 1, image_too_large 1)" in res.stdout
    items = (tmp_path / "idx" / "items.jsonl").read_text()
    assert len(items.splitlines()) == 6 and "huge.png" not in items and "broken" not in items


def test_coco_retrieval_skips_a_bad_image_with_its_captions(ckpt, tmp_path):
    from hyvl.evaluation.retrieval import evaluate_retrieval

    (tmp_path / "images").mkdir()
    images, anns = [], []
    for i in range(4):
        name = f"{i}.jpg"
        if i == 2:
            (tmp_path / "images" / name).write_bytes(b"not an image")
        else:
            Image.new("RGB", (32, 32), (60 * i, 0, 0)).save(tmp_path / "images" / name)
        images.append({"id": i, "file_name": name})
        anns += [{"id": 2 * i + j, "image_id": i, "caption": f"image {i} {j}"} for j in (0, 1)]
    (tmp_path / "c.json").write_text(json.dumps({"images": images, "annotations": anns}))
    model, preprocess, tokenizer = hyvl.load(ckpt / "meru")
    res = evaluate_retrieval(model, preprocess, tokenizer, tmp_path / "c.json", batch_size=2)
    assert res["skipped"] == {"corrupt_image": 1}
    assert (res["num_images"], res["num_texts"]) == (3, 6)


# ------------------------------------------------------------------------------ case 7


def test_sixteen_bit_and_other_modes_are_scaled_not_clipped(tmp_path):
    import numpy as np

    from hyvl.data.layouts import decode_image
    from hyvl.images import open_rgb, to_rgb
    from hyvl.models.transforms import image_transform

    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")  # really 16-bit on disk
    assert open_rgb(tmp_path / "g16.png").getpixel((0, 0)) == (155, 155, 155)
    assert decode_image((tmp_path / "g16.png").read_bytes(), "g16").getpixel((0, 0))[0] == 155
    x = image_transform(8)(Image.open(tmp_path / "g16.png"))  # preprocess itself
    assert torch.allclose(x, torch.full_like(x, 155 / 255))
    assert to_rgb(Image.fromarray(np.full((4, 4), 40000, np.int32), "I")).getpixel((0, 0))[0] == 155
    assert to_rgb(Image.fromarray(np.full((4, 4), 0.5, np.float32), "F")).getpixel((0, 0))[0] == 127
    la = Image.new("LA", (4, 4), (0, 0))  # fully transparent black: shows white
    assert to_rgb(la).getpixel((0, 0)) == (255, 255, 255)
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    assert to_rgb(pal).getpixel((0, 0)) == (10, 20, 30)
    assert to_rgb(Image.new("CMYK", (4, 4), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)


def test_make_shards_converts_sixteen_bit_images(tmp_path):
    import numpy as np

    from hyvl.data.layouts import parse_sample
    from hyvl.data.shards import raw_samples

    (tmp_path / "img").mkdir()
    Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(tmp_path / "img" / "a.png")
    (tmp_path / "caps.jsonl").write_text('{"image": "a.png", "caption": "grey"}\n')
    res = run_cli("data", "make-shards", "--images", tmp_path / "img", "--captions",
                  tmp_path / "caps.jsonl", "--out", tmp_path / "s")  # fmt: skip
    assert res.returncode == 0, res.stderr
    from collections import Counter

    (raw,) = list(raw_samples([str(tmp_path / "s" / "shard-000000.tar")], Counter()))
    sample, _ = parse_sample(raw)
    assert abs(sample.image.getpixel((8, 8))[0] - 155) <= 2  # (JPEG in the shard)


def test_non_finite_boxes_are_dropped_and_counted(tmp_path):
    import math

    from hyvl.data import writer
    from hyvl.data.layouts import parse_sample

    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, format="JPEG")
    boxes = [{"bbox": [math.nan, 0, 30, 30], "text": "a"}, {"bbox": [0, 0, math.inf, 30],
             "text": "b"}, {"bbox": [1, 1, 40, 40], "text": "c"}]  # fmt: skip
    meta = json.dumps({"caption": "x", "boxes": boxes}).encode()  # NaN / Infinity literals
    sample, dropped = parse_sample({"__key__": "k", "jpg": buf.getvalue(), "json": meta})
    assert [t for _, t in sample.boxes] == ["c"] and dropped == ["box_not_finite"] * 2
    record = {"key": "k", "image": Image.new("RGB", (64, 64)), "caption": "x", "boxes": boxes}
    manifest = writer.write_shards([record], tmp_path / "s", progress=False)
    assert manifest["dropped_boxes"] == {"box_not_finite": 2}


def test_retrieve_refuses_a_checkpoint_of_another_space(index, ckpt):
    for other, words in (("clip", ("euclidean", "lorentz")), ("meru2", ("curvature 2",))):
        res = run_cli("retrieve", "--index", index, "--text", "red", "--checkpoint", ckpt / other)
        assert_one_line_error(res, str(ckpt / other), str(ckpt / "meru"), *words)
    run = run_cli("index", "build", "--checkpoint", ckpt / "clip", "--texts", ckpt / "texts.txt",
                  "--out", ckpt / "clip-idx")  # fmt: skip
    assert run.returncode == 0, run.stderr
    res = run_cli("retrieve", "--index", ckpt / "clip-idx", "--text", "red", "--kind", "text",
                  "--checkpoint", ckpt / "meru")  # fmt: skip
    assert_one_line_error(res, "lorentz", "euclidean")


def test_retrieve_prints_distances_with_four_significant_digits(index):
    res = run_cli("retrieve", "--index", index, "--text", "red", "-k", "3", "--kind", "image")
    assert res.returncode == 0, res.stderr
    rows = [line.split() for line in res.stdout.splitlines()[3:]]
    digits = [len(r[-1].replace(".", "").lstrip("0")) for r in rows]
    assert len(rows) == 3 and all(d >= 4 for d in digits), res.stdout


def test_shard_evaluation_reports_its_skips(ckpt, tmp_path):
    import tarfile

    def add(tar, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for i in range(4):
            buf = io.BytesIO()
            Image.new("RGB", (32, 32), (50 * i, 0, 0)).save(buf, format="JPEG")
            add(tar, f"k{i}.jpg", buf.getvalue() if i != 1 else b"broken")
            add(tar, f"k{i}.txt", f"caption {i}".encode())
    res = run_cli("eval", "retrieval", "--checkpoint", ckpt / "meru", "--data",
                  tmp_path / "s.tar", "--json", tmp_path / "r.json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "r.json").read_text())["skipped"] == {"corrupt_image": 1}
    assert "skipped: 1 (corrupt_image 1)" in res.stdout
    res = run_cli("index", "build", "--checkpoint", ckpt / "meru", "--images", tmp_path / "s.tar",
                  "--out", tmp_path / "idx")  # fmt: skip
    assert res.returncode == 0 and "skipped: 1 (corrupt_image 1)" in res.stdout, res.stderr


def test_an_unexpected_error_is_one_line_too_and_debug_shows_it(tmp_path, monkeypatch):
    import hyvl.cli.data as data_cli

    def bug(args):
        raise KeyError("oops")

    monkeypatch.setattr(data_cli, "run_stats", bug)  # a hyvl bug behind a verb
    res = run_cli("data", "stats", "x.tar")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "internal error: KeyError" in res.stderr and "--debug" in res.stderr
    with pytest.raises(KeyError, match="oops"):
        run_cli("data", "stats", "x.tar", "--debug")


def test_viz_class_folders_skip_bad_images_and_scale_sixteen_bit(ckpt, tmp_path):
    import numpy as np

    from hyvl.viz import embed_image_folder

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(tmp_path / c / "0.png")
    bomb_png(tmp_path / "b" / "1.png")
    model, preprocess, tokenizer = hyvl.load(ckpt / "meru")
    images, labels, texts, names = embed_image_folder(model, preprocess, tokenizer, tmp_path)
    assert labels.tolist() == [0, 1] and images.shape[0] == 2 and names == ["a", "b"]
