"""Evaluation: metrics on hand-computed cases, ensembling order per geometry, data readers, CLI."""

import json
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

import hyvl
from hyvl import lorentz
from hyvl.cli.main import main
from hyvl.errors import DataError
from hyvl.evaluation.hierarchy import Hierarchy, hierarchy_metrics
from hyvl.evaluation.retrieval import duplicate_captions, recall_at_k
from hyvl.evaluation.zeroshot import _accuracies, zeroshot_classifier
from hyvl.geometry import get_geometry


def test_recall_counts_any_ground_truth_and_breaks_ties_by_index():
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.8, 0.0],  # positives {1, 3}: best is rank 3
            [0.5, 0.5, 0.5, 0.5],  # all tied: order 0,1,2,3 -> positive {2} is rank 3
            [0.1, 0.2, 0.3, 0.4],  # positive {3} rank 1
        ]
    )
    res = recall_at_k(scores, [{1, 3}, {2}, {3}], ks=(1, 2, 3))
    assert res == {"R@1": pytest.approx(100 / 3), "R@2": pytest.approx(100 / 3), "R@3": 100.0}
    # several captions per image: the best-ranked one counts
    assert recall_at_k(torch.tensor([[0.1, 0.9, 0.2]]), [{0, 1}], ks=(1,)) == {"R@1": 100.0}


def test_accuracies_top5_and_mean_per_class():
    scores = torch.tensor(
        [[5.0, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5], [1, 0.5, 0, 0.1, 0.2, 0.3], [0, 0, 0, 0, 0, 1]]
    )
    labels = torch.tensor([0, 0, 1, 5])
    acc = _accuracies(scores, labels)
    # correct: sample 0 (class 0) and sample 3 (class 5) -> top1 50%
    assert acc["top1"] == pytest.approx(50.0)
    # top5: sample 1's class 0 has the lowest score -> miss; sample 2's class 1 is second
    assert acc["top5"] == pytest.approx(75.0)
    # per class present: class 0 -> 1/2, class 1 -> 0, class 5 -> 1: mean 50%
    assert acc["mean_per_class"] == pytest.approx(50.0)


def test_hierarchy_metrics_by_hand():
    tree = Hierarchy(
        [
            *[("root", "animal"), ("root", "thing")],
            ("animal", "dog"),
            ("animal", "cat"),
            ("dog", "puppy"),
            ("thing", "rock"),
        ]
    )
    res = hierarchy_metrics(["dog", "cat"], ["dog", "dog"], tree)
    # dog->dog: TIE 0, LCA 0, J 1, P 1, R 1; cat vs dog: TIE 2, sets {cat,animal,root} vs
    # {dog,animal,root}: inter 2, union 4 -> J .5, P 2/3, R 2/3, LCA 1
    assert res["TIE"] == pytest.approx(1.0) and res["LCA"] == pytest.approx(0.5)
    assert res["jaccard"] == pytest.approx(0.75)
    assert res["hier_precision"] == pytest.approx((1 + 2 / 3) / 2)
    # HyCoCLIP's variant: leaves excluded: dog vs cat have identical ancestors -> perfect Jaccard
    old = hierarchy_metrics(["cat"], ["dog"], tree, leaf_included=False)
    assert old["jaccard"] == 1.0 and old["LCA"] == 1.0
    new = hierarchy_metrics(["cat"], ["dog"], tree)
    assert new["jaccard"] == pytest.approx(0.5)
    assert hierarchy_metrics(["puppy"], ["rock"], tree)["TIE"] == 5
    with pytest.raises(DataError, match="not in the hierarchy"):
        hierarchy_metrics(["wolf"], ["dog"], tree)


class FakeModel(torch.nn.Module):
    """Text features are fixed per prompt, so the ensembling order is visible."""

    def __init__(self, geometry, table):
        super().__init__()
        self.geometry, self.space = geometry, get_geometry(geometry)
        self.table = table
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.curv = torch.tensor(1.0) if self.space.hyperbolic else None

    def text_features(self, tokens):
        return torch.stack([self.table[int(t)] for t in tokens])

    def lift_text(self, feats):  # alpha = 1
        return self.space.lift(feats, torch.tensor(0.0), self.curv)


def fake_tokenizer(texts):
    return torch.tensor([0 if t.startswith("a") else 1 for t in texts])


def test_a_class_family_is_its_ancestor_directly_below_the_root():
    from hyvl.data import demo, real

    shapes = Hierarchy(demo.hierarchy_edges())  # shape > round shape > circle > red circle
    assert shapes.family("red circle") == "round shape"
    assert shapes.family("blue triangle") == shapes.family("square") == "polygon"
    digits = Hierarchy(real.hierarchy_edges())  # object > handwritten digit > handwritten three
    assert digits.family("handwritten three") == "handwritten digit"
    assert digits.family("gravel texture") == "texture"
    flat = Hierarchy([("thing", "cat"), ("thing", "dog")])
    assert flat.family("cat") == "cat" and flat.family("thing") == "thing"  # below / the root


def test_per_class_and_per_family_top1_and_the_families_at_chance():
    from hyvl.evaluation.zeroshot import chance_warnings, family_breakdown

    names = ["one", "two", "three", "four", "brick", "grass"]
    families = {n: "digit" for n in names[:4]} | {"brick": "texture", "grass": "texture"}
    # digits: 40 images, 10 right (25% = the chance of naming a random digit of four);
    # textures: 40 images, 36 right; "grass" never appears
    labels = torch.tensor([0, 1, 2, 3] * 10 + [4] * 40)
    predicted = torch.tensor([0, 0, 0, 0] * 10 + [4] * 36 + [0] * 4)
    res = family_breakdown(predicted, labels, names, families)
    assert res["per_class"] == {"one": 100.0, "two": 0.0, "three": 0.0, "four": 0.0, "brick": 90.0}
    assert res["per_family"] == {"digit": 25.0, "texture": 90.0}
    assert res["families_at_chance"] == ["digit"]  # 10 of 40 at 1/4: p = P(X >= 10) ~ 0.56
    assert res["family_stats"]["digit"]["chance"] == 25.0
    assert res["family_stats"]["digit"]["p_value"] == pytest.approx(0.5605, abs=1e-3)
    # 16 of 40 (40%) is above a chance of 25% at the 5% level: P(X >= 16) ~ 0.026
    predicted[:24] = labels[:24]  # six more digits right: 4 x 4 -> 16
    assert family_breakdown(predicted, labels, names, families)["families_at_chance"] == []
    (line,) = chance_warnings(res)
    assert "at chance on the family 'digit'" in line and "25.0%" in line and "40 images" in line
    assert set(family_breakdown(predicted, labels, names)) == {"per_class"}  # no hierarchy


def test_ensembling_order_per_geometry():
    table = {0: torch.tensor([3.0, 0.0]), 1: torch.tensor([0.0, 1.0])}
    templates = ["a {}", "the {}"]
    lor = zeroshot_classifier(FakeModel("lorentz", table), fake_tokenizer, ["x"], templates)
    # MERU: mean of tangent features (1.5, 0.5), then ONE exp_map0
    assert torch.allclose(lor[0], lorentz.exp_map0(torch.tensor([1.5, 0.5]), 1.0), atol=1e-6)
    euc = zeroshot_classifier(FakeModel("euclidean", table), fake_tokenizer, ["x"], templates)
    # CLIP: normalise each (1,0),(0,1), average (.5,.5), normalise
    assert torch.allclose(euc[0], torch.tensor([2**-0.5, 2**-0.5]), atol=1e-6)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("export")
    hyvl.save(hyvl.create_model("meru_tiny"), path)
    return path


def _imagefolder(root):
    for c, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 30), colour).save(root / f"c{c}" / f"{i}.png")
    (root / "classnames.txt").write_text("red thing\nblue thing\n")
    (root / "templates.txt").write_text("a {}.\n")


def _coco(root):
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(4):
        Image.new("RGB", (32, 32), (60 * i, 0, 0)).save(root / "images" / f"{i}.jpg")
        images.append({"id": 10 + i, "file_name": f"{i}.jpg"})
        for j in range(2):
            anns.append({"id": len(anns), "image_id": 10 + i, "caption": f"image {i} caption {j}"})
    (root / "captions.json").write_text(json.dumps({"images": images, "annotations": anns}))


@pytest.fixture
def run_cli(capsys):
    """``hyvl ARGS`` in this process (what is tested is the verb, not the interpreter):
    returns its exit code and what it printed, as a subprocess run would."""

    def run(*args):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return run


def test_cli_zeroshot_retrieval_hierarchy(tmp_path, export, run_cli):
    _imagefolder(tmp_path / "zs")
    _coco(tmp_path / "rt")
    (tmp_path / "h.tsv").write_text("thing\tred thing\nthing\tblue thing\n")
    out = run_cli(
        "eval",
        "zeroshot",
        "--checkpoint",
        export,
        "--data",
        tmp_path / "zs",
        "--json",
        tmp_path / "z.json",
    )
    assert out.returncode == 0, out.stderr
    z = json.loads((tmp_path / "z.json").read_text())
    assert set(z) == {
        "top1",
        "top5",
        "mean_per_class",
        "num_samples",
        "num_classes",
        "num_predicted_classes",
        "skipped",
        "per_class",  # no hierarchy in or beside the folder: no per_family
    }
    assert set(z["per_class"]) == {"red thing", "blue thing"}
    assert z["skipped"] == {}  # every image readable
    assert 1 <= z["num_predicted_classes"] <= 2
    assert z["num_samples"] == 6 and z["num_classes"] == 2 and z["top5"] == 100.0
    assert "top1" in out.stdout

    out = run_cli(
        "eval",
        "retrieval",
        "--checkpoint",
        export,
        "--data",
        tmp_path / "rt" / "captions.json",
        "--workers",
        "1",
        "--precision",
        "bf16",
        "--json",
        tmp_path / "r.json",
    )
    assert out.returncode == 0, out.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert (r["num_images"], r["num_texts"]) == (4, 8)
    assert set(r["image_to_text"]) == {"R@1", "R@5", "R@10"}
    assert r["image_to_text"]["R@10"] == 100.0  # only 8 texts: the top 10 holds them all
    # every caption is unique: nothing caps text -> image retrieval
    assert r["duplicate_captions"] == {"queries": 0, "text_to_image_R@1_ceiling": 100.0}

    out = run_cli(
        "eval",
        "hierarchy",
        "--checkpoint",
        export,
        "--data",
        tmp_path / "zs",
        "--hierarchy",
        tmp_path / "h.tsv",
        "--json",
        tmp_path / "h.json",
    )
    assert out.returncode == 0, out.stderr
    h = json.loads((tmp_path / "h.json").read_text())
    assert {"TIE", "LCA", "jaccard", "hier_precision", "hier_recall"} <= set(h)
    assert 0 <= h["TIE"] <= 2


def test_cli_errors_are_clear(tmp_path, export, run_cli):
    (tmp_path / "bad.json").write_text(
        '{"images": [{"id": 1, "file_name": "nope.jpg"}], "annotations": []}'
    )
    out = run_cli("eval", "retrieval", "--checkpoint", export, "--data", tmp_path / "bad.json")
    assert out.returncode == 2 and "missing" in out.stderr and "Traceback" not in out.stderr


def test_workers_and_precision(tmp_path, export):
    """Loader workers change nothing; bf16 autocast changes the towers' rounding only."""
    from hyvl.evaluation import evaluate_zeroshot
    from hyvl.evaluation.embed import embed_texts

    _imagefolder(tmp_path / "zs")
    model, preprocess, tokenizer = hyvl.load(export)
    base = evaluate_zeroshot(model, preprocess, tokenizer, tmp_path / "zs", batch_size=4)
    assert (
        evaluate_zeroshot(model, preprocess, tokenizer, tmp_path / "zs", batch_size=4, workers=2)
        == base
    )
    texts = [f"a photo of thing number {i}" for i in range(8)]
    fp32 = embed_texts(model, tokenizer, texts)
    bf16 = embed_texts(model, tokenizer, texts, precision="bf16")
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)  # autocast took effect
    d = lorentz.dist(bf16, fp32, model.curv.detach())
    assert (d < 0.05 * lorentz.dist0(fp32, model.curv.detach())).all()
    with pytest.raises(ValueError, match="precision"):
        embed_texts(model, tokenizer, texts, precision="int8")


def test_duplicate_captions_cap_text_to_image_recall():
    # captions 0 and 2 are the same text on images 0 and 1; caption 3 is on three images
    keys = ["a two", "a three", "a two", "a five", "a five", "a five"]
    owner = [0, 0, 1, 1, 2, 3]
    dup = duplicate_captions(keys, owner)
    assert dup["queries"] == 5  # all but "a three"
    assert dup["text_to_image_R@1_ceiling"] == pytest.approx(100 * (0.5 + 1 + 0.5 + 1) / 6)


def test_zeroshot_reports_and_warns_about_a_one_class_model(tmp_path, capsys):
    torch.manual_seed(0)
    model = hyvl.create_model("meru_tiny")
    with torch.no_grad():
        model.visual_proj.weight.zero_()  # every image lands on the origin: one answer
    hyvl.save(model, tmp_path / "flat")
    _imagefolder(tmp_path / "zs")
    # a hierarchy beside the folder, as the demo worlds ship it: per-family figures
    (tmp_path / "hierarchy.tsv").write_text("object\tthing\nthing\tred thing\nthing\tblue thing\n")
    argv = ["eval", "zeroshot", "--checkpoint", str(tmp_path / "flat"), "--data"]
    assert main([*argv, str(tmp_path / "zs"), "--json", str(tmp_path / "z.json")]) == 0
    z = json.loads((tmp_path / "z.json").read_text())
    assert z["num_predicted_classes"] == 1 and z["top1"] == 50.0
    assert sorted(z["per_class"].values()) == [0.0, 100.0]
    assert z["per_family"] == {"thing": 50.0} and z["families_at_chance"] == ["thing"]
    assert z["hierarchy"] == str(tmp_path / "hierarchy.tsv")
    printed = capsys.readouterr()
    assert "predicts one class for all 6 images" in printed.err
    assert "zero-shot at chance on the family 'thing'" in printed.err
    assert "zero-shot per family" in printed.out and "zero-shot per class" in printed.out


def test_zeroshot_hierarchy_without_the_classes_is_named(tmp_path, export, run_cli):
    _imagefolder(tmp_path / "zs")
    (tmp_path / "h.tsv").write_text("animal\tcat\n")
    argv = ["eval", "zeroshot", "--checkpoint", export, "--data", tmp_path / "zs"]
    out = run_cli(*argv, "--hierarchy", tmp_path / "h.tsv")
    assert out.returncode == 2 and "2 of 2 class names are not in the hierarchy" in out.stderr
    assert str(tmp_path / "h.tsv") in out.stderr
    out = run_cli(*argv, "--hierarchy", tmp_path / "nope.tsv")
    assert out.returncode == 2 and "nope.tsv" in out.stderr


def test_eval_hierarchy_over_wordnet_ids_keeps_working_with_the_shipped_names(
    tmp_path, export, run_cli
):
    """WordNet-id folders are prompted with ImageNet's names; a hierarchy over the ids (as
    the suite's imagenet_wordnet.tsv) still scores them."""
    for wnid, colour in (("n01440764", (255, 0, 0)), ("n01443537", (0, 0, 255))):
        (tmp_path / "val" / wnid).mkdir(parents=True)
        Image.new("RGB", (40, 30), colour).save(tmp_path / "val" / wnid / "0.png")
    (tmp_path / "h.tsv").write_text("n01440000\tn01440764\nn01440000\tn01443537\n")
    out = run_cli(
        "eval", "hierarchy", "--checkpoint", export, "--data", tmp_path / "val",
        "--hierarchy", tmp_path / "h.tsv", "--json", tmp_path / "h.json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "h.json").read_text())["skipped"] == {}
