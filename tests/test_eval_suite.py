"""hyvl eval suite / linprobe: dataset discovery in the users' layouts, and the table checked
against an independent recomputation (plain loops over the images the test wrote). The suite in
two processes runs on the same world in test_torchrun.py's one launch."""

import io
import json
import struct
import sys
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

import hyvl
from hyvl import lorentz
from hyvl.cli.main import main
from hyvl.evaluation import catalog
from hyvl.evaluation.discover import find_classification, labels_of
from hyvl.evaluation.suite import run_suite

COUNTS = {"imagenet": 1000, "food101": 101, "cifar10": 10, "cifar100": 100, "cub2011": 200,
          "sun397": 397, "cars": 196, "aircraft": 100, "dtd": 47, "pets": 37, "caltech101": 102,
          "flowers102": 102, "stl10": 10, "eurosat": 10, "resisc45": 45, "country211": 211,
          "mnist": 10, "clevr": 8, "pcam": 2, "sst2": 2}  # fmt: skip


def _image(c: int, i: int, size=12) -> Image.Image:
    rng = np.random.default_rng(1000 * c + i)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def _truncated(path, fmt: str) -> None:
    """The first half of an image file: PIL raises when it decodes it."""
    buf = io.BytesIO()
    _image(999, 0).save(buf, format=fmt)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def _sixteen_bit(path, seed: int) -> Image.Image:
    """Write a 16-bit grey PNG; return its 8-bit version, floor(v * 255 / 65535), computed here
    (PIL's own convert("RGB") would clip every value above 255 to white)."""
    v = np.random.default_rng(seed).integers(300, 65536, (12, 12)).astype(np.uint16)
    Image.fromarray(v).save(path)
    return Image.fromarray((v.astype(np.int64) * 255 // 65535).astype(np.uint8))


def _mnist(root, n_test=(3, 2), n_train=3):
    """MNIST's raw idx files, as torchvision's MNIST(root) reads them (no download)."""
    raw = root / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    truth = {}
    for split, per in (("t10k", n_test), ("train", (n_train,))):
        labels = [c for c in range(10) for _ in range(per[c % len(per)])]
        pixels = np.stack([np.asarray(_image(c, i, 28).convert("L")) for i, c in enumerate(labels)])
        (raw / f"{split}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, len(labels), 28, 28) + pixels.tobytes()
        )
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 2049, len(labels)) + bytes(labels)
        )
        truth[split] = ([Image.fromarray(p) for p in pixels], labels)
    return truth["t10k"], truth["train"]


def _clevr(root):
    """CLEVR's val split in torchvision's layout: the label is the number of objects."""
    data = root / "clevr" / "CLEVR_v1.0"
    (data / "images" / "val").mkdir(parents=True)
    (data / "scenes").mkdir()
    counts = [3, 10, 4, 7, 10, 5]
    scenes, images = [], []
    for i, n in enumerate(counts):
        _image(100 + n, i).save(data / "images" / "val" / f"CLEVR_val_{i:06d}.png")
        images.append(_image(100 + n, i))
        scenes.append({"image_filename": f"CLEVR_val_{i:06d}.png", "objects": [{}] * n})
    # a damaged image among torchvision's files: skipped and counted, not a crash
    _truncated(data / "images" / "val" / f"CLEVR_val_{len(counts):06d}.png", "png")
    scenes.append({"image_filename": f"CLEVR_val_{len(counts):06d}.png", "objects": [{}] * 3})
    (data / "scenes" / "CLEVR_val_scenes.json").write_text(json.dumps({"scenes": scenes}))
    names = catalog.info("clevr").classnames  # the papers' order: "10", "3", "4", ...
    return images, [names.index(str(n)) for n in counts]


def _pcam(root):
    """PCAM's test split as torchvision reads it: two HDF5 files, images x (N, H, W, 3) uint8
    and labels y (N, 1, 1, 1), in ROOT/pcam/ (where download=True would have put them)."""
    import h5py

    labels = [0, 1, 1, 0, 1]
    pixels = np.stack([np.asarray(_image(600 + y, i, 16)) for i, y in enumerate(labels)])
    (root / "pcam").mkdir()
    with h5py.File(root / "pcam" / "camelyonpatch_level_2_split_test_x.h5", "w") as f:
        f["x"] = pixels
    with h5py.File(root / "pcam" / "camelyonpatch_level_2_split_test_y.h5", "w") as f:
        f["y"] = np.array(labels, dtype=np.uint8).reshape(-1, 1, 1, 1)
    return [Image.fromarray(p) for p in pixels], labels


def _imagefolder(folder, num_classes, per_class=2, seed=200):
    images, labels = [], []
    for c in range(num_classes):
        (folder / f"{c:02d}_class").mkdir(parents=True)
        for i in range(per_class):
            _image(seed + c, i).save(folder / f"{c:02d}_class" / f"{i}.png")
            images.append(_image(seed + c, i))
            labels.append(c)
    return images, labels


def _shards(folder, num_classes, per_class=2):
    folder.mkdir(parents=True)
    images, labels = [], []
    with tarfile.open(folder / "000000.tar", "w") as tar:
        for c in range(num_classes):
            for i in range(per_class):
                buf = io.BytesIO()
                _image(300 + c, i).save(buf, format="png")
                key = f"s{c}_{i}"
                for ext, data in (("png", buf.getvalue()), ("json", b'{"caption": "x"}'),
                                  ("cls", str(c).encode())):  # fmt: skip
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                images.append(_image(300 + c, i))
                labels.append(c)
    return images, labels


def _karpathy(folder):
    (folder / "val2014").mkdir(parents=True)
    entries = []
    for i in range(4):
        _image(400 + i, 0).save(folder / "val2014" / f"{i}.jpg")
        entries.append({"filepath": "val2014", "filename": f"{i}.jpg",
                        "split": "test" if i < 3 else "train",
                        "sentences": [{"raw": f"picture {i} text {j}"} for j in range(2)]})  # fmt: skip
    (folder / "dataset_coco.json").write_text(json.dumps({"images": entries}))


def suite_world(tmp_path_factory):
    """A tiny export and a root of every layout the suite reads, with damaged images: (export,
    model, preprocess, tokenizer, root, truth, mnist_train). Also the world of the two-process
    run of the suite in test_torchrun.py."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("export")
    # one block per tower: the suite's work is the same, in a fraction of the time
    tiny = hyvl.create_model("meru_tiny", vision={"depth": 1}, text={"layers": 1})
    hyvl.save(tiny, path)
    model, preprocess, tokenizer = hyvl.load(path)
    root = tmp_path_factory.mktemp("root")
    truth = {}
    truth["mnist"], mnist_train = _mnist(root)
    truth["clevr"] = _clevr(root)
    truth["eurosat"] = _imagefolder(root / "eurosat" / "test", 10)
    # one truncated JPEG (skipped) and one 16-bit PNG (scaled to 8 bits, not clipped)
    _truncated(root / "eurosat" / "test" / "00_class" / "bad.jpg", "jpeg")
    deep = _sixteen_bit(root / "eurosat" / "test" / "01_class" / "deep.png", 7)
    truth["eurosat"][0].insert(4, deep)  # after 01_class/0.png, 1.png
    truth["eurosat"][1].insert(4, 1)
    _imagefolder(root / "eurosat" / "train", 10, per_class=1, seed=700)  # for the linear probe
    _truncated(root / "eurosat" / "train" / "03_class" / "bad.jpg", "jpeg")
    truth["stl10"] = _shards(root / "stl10" / "test", 10)
    truth["pcam"] = _pcam(root)
    demo = root / "demo"
    truth["demo"] = _imagefolder(demo, 3, seed=500)
    (demo / "classnames.txt").write_text("red thing\nblue thing\ngreen thing\n")
    (demo / "templates.txt").write_text("a {}.\na photo of a {}.\n")
    _karpathy(root / "coco")
    (root / "pets").mkdir()  # there but empty: skipped with its reason
    return path, model, preprocess, tokenizer, root, truth, mnist_train


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return suite_world(tmp_path_factory)


@torch.no_grad()
def _recompute(model, preprocess, tokenizer, images, labels, classnames, templates):
    """Mean per-class accuracy by hand: MERU's tangent-space prompt ensemble, -distance."""
    x = model.encode_image(torch.stack([preprocess(im.convert("RGB")) for im in images]))
    protos = []
    for name in classnames:
        feats = model.text_features(tokenizer([t.format(name) for t in templates]))
        protos.append(model.lift_text(feats.mean(0, keepdim=True))[0])
    pred = lorentz.pairwise_dist(x, torch.stack(protos), model.curv).argmin(1).tolist()
    per_class = {}
    for p, y in zip(pred, labels, strict=True):
        per_class.setdefault(y, []).append(p == y)
    return 100.0 * float(np.mean([np.mean(v) for v in per_class.values()]))


def test_list_json_holds_the_twenty_datasets(tmp_path):
    assert main(["eval", "suite", "--list", "--json", str(tmp_path / "l.json")]) == 0
    rows = json.loads((tmp_path / "l.json").read_text())["datasets"]
    assert {r["name"]: r["num_classes"] for r in rows} == COUNTS
    for r in rows:
        assert r["num_prompts"] >= 1 and r["metric"] == "mean_per_class"
        assert "imagefolder" in r["layouts"] and r["folder"] == f"ROOT/{r['name']}/"
    # ImageNet's WordNet tree covers exactly its 1000 class ids, in label order
    tree = catalog.imagenet_hierarchy_path().read_text().split()
    children, parents = set(tree[1::2]), set(tree[0::2])
    assert sorted(children - parents) == list(catalog.info("imagenet").wnids)


def test_suite_table_matches_an_independent_recomputation(setup, tmp_path):
    path, model, preprocess, tokenizer, root, truth, _ = setup
    res = run_suite(model, preprocess, tokenizer, root, cache_dir=tmp_path / "cache", log=id)
    assert set(res["datasets"]) == {"mnist", "clevr", "eurosat", "stl10", "pcam", "demo"}
    layouts = {n: r["layout"] for n, r in res["datasets"].items()}
    assert layouts == {"mnist": "torchvision", "clevr": "torchvision", "eurosat": "imagefolder",
                       "stl10": "webdataset", "pcam": "torchvision",
                       "demo": "imagefolder"}  # fmt: skip
    for name, (images, labels) in truth.items():
        row = res["datasets"][name]
        if name == "demo":
            names, templates = (
                ["red thing", "blue thing", "green thing"],
                ["a {}.", "a photo of a {}."],
            )
        else:
            names, templates = catalog.info(name).classnames, catalog.info(name).templates
        expected = _recompute(model, preprocess, tokenizer, images, labels, names, templates)
        assert row["value"] == pytest.approx(expected, abs=1e-6), name
        assert row["num_samples"] == len(labels)
    assert res["mean"] == pytest.approx(np.mean([r["value"] for r in res["datasets"].values()]))
    # the damaged CLEVR and EuroSAT images are skipped and counted, per dataset and in total
    assert res["datasets"]["clevr"]["skipped"] == {"corrupt_image": 1}
    assert res["datasets"]["eurosat"]["skipped"] == {"corrupt_image": 1}
    assert res["datasets"]["mnist"]["skipped"] == {} and res["retrieval"]["coco"]["skipped"] == {}
    assert res["skipped"] == {"corrupt_image": 2}
    assert "pets" in res["missing"] and "imagenet" in res["missing"]
    assert "flickr30k" in res["missing"]
    coco = res["retrieval"]["coco"]
    assert coco["num_images"] == 3 and coco["num_texts"] == 6 and coco["split"] == "karpathy test"
    # discovery puts the labels where the test wrote them (the damaged files have theirs too)
    three = catalog.info("clevr").classnames.index("3")
    damaged = {"mnist": None, "clevr": (6, three), "eurosat": (2, 0)}  # (position, label)
    for name, bad in damaged.items():
        found = find_classification(root, catalog.info(name), preprocess)
        want = list(truth[name][1])
        if bad:
            want.insert(*bad)
        assert labels_of(found.dataset) == want, name
    # the prototypes are cached per checkpoint and prompt set, and reused
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(cached) == 6 and any("-mnist-" in n for n in cached)


def test_pcam_without_h5py_says_how_to_install_it(setup, monkeypatch):
    path, model, preprocess, tokenizer, root, truth, _ = setup
    monkeypatch.setitem(sys.modules, "h5py", None)  # as if it were not installed
    why = find_classification(root, catalog.info("pcam"), preprocess)
    assert why.startswith(
        "PCAM needs h5py, which is not installed: pip install 'hyvl[eval]' (or pip install h5py);"
    )


def test_sixteen_bit_images_reach_the_model_scaled_not_clipped(setup, monkeypatch):
    path, model, preprocess, tokenizer, root, truth, _ = setup
    seen = []
    encode = model.encode_image
    monkeypatch.setattr(model, "encode_image", lambda x: seen.append(x) or encode(x))
    res = run_suite(model, preprocess, tokenizer, root, datasets=["eurosat"], log=id)
    assert res["datasets"]["eurosat"]["num_samples"] == 21  # 20 + the 16-bit one, not the bad
    deep = root / "eurosat" / "test" / "01_class" / "deep.png"
    files = [
        f for f, _ in find_classification(root, catalog.info("eurosat"), preprocess).dataset.samples
    ]
    given = torch.cat(seen)[files.index(str(deep))]  # the model's input row of that image
    assert torch.equal(given, preprocess(truth["eurosat"][0][4]))  # the scaled 8-bit image
    with Image.open(deep) as im:  # what torchvision's default loader would have given
        assert not torch.equal(given, preprocess(im.convert("RGB")))


def test_cli_suite_max_per_class_overrides_and_markdown(setup, tmp_path):
    path, model, preprocess, tokenizer, root, truth, _ = setup
    (tmp_path / "p.txt").write_text("digit {}\n")
    out, md = tmp_path / "s.json", tmp_path / "table.markdown"
    rc = main(["eval", "suite", "--checkpoint", str(path), "--root", str(root), "--datasets",
               "mnist,stl10,sun397", "--max-per-class", "1", "--prompts",
               f"mnist={tmp_path / 'p.txt'}", "--json", str(out), "--markdown", str(md),
               "--cache-dir", str(tmp_path / "c"), "--device", "cpu"])  # fmt: skip
    assert rc == 0
    res = json.loads(out.read_text())
    assert {n: r["num_samples"] for n, r in res["datasets"].items()} == {"mnist": 10, "stl10": 10}
    images, labels = truth["mnist"]
    first = [labels.index(c) for c in range(10)]
    expected = _recompute(model, preprocess, tokenizer, [images[i] for i in first], list(range(10)),
                          catalog.info("mnist").classnames, ["digit {}"])  # fmt: skip
    assert res["datasets"]["mnist"]["value"] == pytest.approx(expected, abs=1e-6)
    assert res["missing"]["sun397"].endswith(f"no folder {root / 'sun397'}")
    text = md.read_text()
    assert "| mnist | mean_per_class |" in text and "sun397" in text


def test_linprobe_on_found_splits(setup, tmp_path):
    path, model, preprocess, tokenizer, root, truth, mnist_train = setup
    from hyvl.evaluation.linprobe import run_linprobe

    # a 3-value grid and one bisection step: the same search, fewer fits
    res = run_linprobe(
        model,
        preprocess,
        tokenizer,
        root,
        datasets=["mnist", "eurosat", "stl10"],
        costs=(0.01, 1, 100),
        steps=1,
    )
    assert "stl10" in res["missing"] and "train" in res["missing"]["stl10"]
    row = res["datasets"]["mnist"]
    assert row["num_train"] + row["num_val"] == 30 and row["num_test"] == len(truth["mnist"][1])
    assert 0.0 <= row["value"] <= 100.0 and row["C"] in (0.001, 0.01, 0.1, 1, 10, 100, 1000)
    # EuroSAT's damaged train and test images are skipped and counted, per split and in total
    row = res["datasets"]["eurosat"]
    assert row["num_train"] + row["num_val"] == 10 and row["num_test"] == 21
    assert row["skipped_by_split"] == {"train": {"corrupt_image": 1}, "test": {"corrupt_image": 1}}
    assert row["skipped"] == res["skipped"] == {"corrupt_image": 2}
    assert res["datasets"]["mnist"]["skipped"] == {}


def test_dataset_without_a_usable_image_is_listed_not_fatal(setup, tmp_path):
    path, model, preprocess, tokenizer, *_ = setup
    for c in range(10):
        (tmp_path / "eurosat" / "test" / f"{c:02d}_class").mkdir(parents=True)
        _truncated(tmp_path / "eurosat" / "test" / f"{c:02d}_class" / "0.jpg", "jpeg")
    res = run_suite(model, preprocess, tokenizer, tmp_path, datasets=["eurosat"], log=id)
    assert res["datasets"] == {} and res["mean"] is None
    why = res["missing"]["eurosat"]
    assert why.endswith("no usable samples (skipped: {'corrupt_image': 10})"), why


def test_bad_input_is_a_clear_error(setup, tmp_path, capsys):
    path, *_, root, _, _ = setup
    base = ["eval", "suite", "--checkpoint", str(path), "--root", str(root), "--device", "cpu"]
    assert main([*base, "--datasets", "nosuch"]) == 2
    assert "nosuch" in capsys.readouterr().err
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    args = ["--datasets", "mnist", "--classnames", f"mnist={tmp_path / 'three.txt'}"]
    assert main([*base, *args, "--no-cache"]) == 2
    assert "mnist: 3 class names given, the dataset has 10 classes" in capsys.readouterr().err


def test_imagenet_hierarchy_rows_cover_every_class():
    from hyvl.evaluation.discover import Found
    from hyvl.evaluation.suite import _hierarchy

    info = catalog.info("imagenet")
    found = Found("imagenet", "imagefolder", None, list(info.classnames), [], ids=list(info.wnids))
    labels = torch.arange(1000)
    right = _hierarchy(found, labels, labels)
    assert right["TIE"] == 0 and right["jaccard"] == 1 and right["num_samples"] == 1000
    assert right["leaf_included"] is False  # HyCoCLIP's published variant
    wrong = _hierarchy(found, labels.roll(1), labels)
    assert wrong["TIE"] >= 2 and wrong["hier_precision"] < 1


def test_published_columns_read_the_data(setup, monkeypatch):
    from hyvl.evaluation.discover import Found
    from hyvl.evaluation.suite import _hierarchy, footnotes, markdown, table_rows

    path, model, preprocess, tokenizer, root, *_ = setup
    # the shipped table: HyCoCLIP's model zoo, COCO R@10 measured on val2017; the fixture's
    # COCO is a Karpathy test split, so those rows are starred and explained
    res = run_suite(model, preprocess, tokenizer, root, datasets=["coco"], compare_size="vit_b",
                    log=id)  # fmt: skip
    rows = {(r["dataset"], r["metric"]): r for r in table_rows(res)}
    zoo = catalog.published()["retrieval"]["coco"]["text_to_image R@10"]["vit_b"]
    assert {m: rows[("coco", "T->I R@10 *")][m] for m in zoo if m != "source"} == {
        m: v for m, v in zoo.items() if m != "source"
    }
    assert rows[("coco", "T->I R@1")]["hycoclip"] == "-"  # no source gives R@1
    assert footnotes(res) == [
        "* coco: the published numbers are on val2017, this run on karpathy test (different images)"
    ]
    assert "model-zoo table of github.com/PalAvik/hycoclip" in markdown(res)

    # every kind of row reads its numbers from the data, at the size compared
    table = {
        "sources": {"t": "a test source"},
        "zeroshot": {"mnist": {"vit_l": {"clip": 1.5, "meru": 2.5, "source": "t"}}},
        "retrieval": {"coco": {"split": "karpathy test",
                               "text_to_image R@5": {"vit_l": {"hycoclip": 3.5, "source": "t"}}}},
        "hierarchy": {"imagenet": {"LCA": {"vit_l": {"hycoclip": 4.5, "source": "t"}}}},
    }  # fmt: skip
    monkeypatch.setattr(catalog, "published", lambda: table)
    res = run_suite(model, preprocess, tokenizer, root, datasets=["mnist", "coco"],
                    compare_size="vit_l", log=id)  # fmt: skip
    info = catalog.info("imagenet")
    found = Found("imagenet", "imagefolder", None, list(info.classnames), [], ids=list(info.wnids))
    res["hierarchy"]["imagenet"] = _hierarchy(
        found, torch.arange(1000), torch.arange(1000), "vit_l"
    )
    rows = {(r["dataset"], r["metric"]): r for r in table_rows(res)}
    pick = lambda key: tuple(rows[key][m] for m in ("clip", "meru", "hycoclip"))  # noqa: E731
    assert pick(("mnist", "mean_per_class")) == (1.5, 2.5, "-")
    assert pick(("coco", "T->I R@5")) == ("-", "-", 3.5) and footnotes(res) == []
    assert pick(("imagenet (WordNet)", "LCA")) == ("-", "-", 4.5)
    assert pick(("imagenet (WordNet)", "TIE")) == ("-", "-", "-")
    assert "Source: a test source" in markdown(res)


def test_damaged_prototype_cache_entry_is_recomputed_and_replaced(setup, tmp_path, caplog):
    from hyvl.evaluation.embed import Shard
    from hyvl.evaluation.protocache import entry_path, prototypes, read_entry

    _, model, _, tokenizer, *_ = setup
    names, templates = ["red thing", "blue thing", "green thing"], ["a {}."]
    args = dict(key="k", cache_dir=tmp_path, shard=Shard())
    fresh = prototypes(model, tokenizer, "demo", names, templates, **args)
    path = entry_path(tmp_path, "k", "demo", names, templates, "fp32")
    assert torch.equal(read_entry(path, 3), fresh)
    # a valid entry is what the next run uses (no recomputation)
    from safetensors.torch import save_file

    save_file({"prototypes": torch.zeros(3, fresh.shape[1])}, str(path))
    assert prototypes(model, tokenizer, "demo", names, templates, **args).abs().sum() == 0
    # cut short (a copy interrupted, a full disk): recomputed, with one warning line, replaced
    path.write_bytes(path.read_bytes()[:100])
    with caplog.at_level("WARNING"):
        again = prototypes(model, tokenizer, "demo", names, templates, **args)
    assert torch.equal(again, fresh)
    assert len(caplog.records) == 1 and "recomputing" in caplog.text and str(path) in caplog.text
    assert "\n" not in caplog.records[0].getMessage()
    assert torch.equal(read_entry(path, 3), fresh)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary files left


def _writer(path, value: float, written=None, resume=None) -> None:
    """A writer process; with ``written`` / ``resume`` it stops between writing its file and
    putting it in place. Fails (exit code 1) if its write did not go through."""
    import logging

    import safetensors.torch

    from hyvl.evaluation import protocache

    save = safetensors.torch.save_file

    def save_then_wait(*args, **kwargs):
        save(*args, **kwargs)
        if written is not None:
            written.set()
            resume.wait(30)

    safetensors.torch.save_file = save_then_wait  # in this (forked) process only
    failed = []
    handler = logging.Handler()
    handler.emit = failed.append
    protocache.log.addHandler(handler)
    protocache.write_entry(path, torch.full((4, 8), value), "demo")
    assert not failed, failed[0].getMessage()


def test_concurrent_cache_writers_leave_one_valid_entry(tmp_path):
    """Writer A has written its data but not yet put it in place when writer B writes the
    whole entry: a reader meanwhile sees nothing, then B's file, and both writes succeed."""
    import multiprocessing

    from hyvl.evaluation.protocache import read_entry

    path = tmp_path / "k-demo-p.safetensors"
    ctx = multiprocessing.get_context("fork")  # cheap: torch is already imported
    written, resume = ctx.Event(), ctx.Event()
    a = ctx.Process(target=_writer, args=(path, 1.0, written, resume))
    a.start()
    assert written.wait(30)
    assert read_entry(path, 4) is None and not path.exists()  # A's data is not visible yet
    b = ctx.Process(target=_writer, args=(path, 2.0))
    b.start()
    b.join(30)
    assert b.exitcode == 0 and torch.equal(read_entry(path, 4), torch.full((4, 8), 2.0))
    resume.set()
    a.join(30)
    assert a.exitcode == 0  # (with one shared temporary name, B would have taken A's file)
    assert torch.equal(read_entry(path, 4), torch.full((4, 8), 1.0))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
