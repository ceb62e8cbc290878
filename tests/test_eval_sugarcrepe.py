"""hyvl eval sugarcrepe: SugarCrepe's released layout (seven id -> {"filename", "caption",
"negative_caption"} JSON files over a folder of COCO val2017 images), written here from scenes of
the demo world with their true captions and hand-made negatives, and checked against an
independent recomputation (each image and caption embedded on its own, pairs counted by hand)."""

import json
import random
import shutil

import pytest
import torch
from PIL import Image

import hyvl
from hyvl import lorentz
from hyvl.cli.main import main
from hyvl.data.demo import COLOURS, SHAPES, make_scene
from hyvl.errors import DataError
from hyvl.evaluation import evaluate_sugarcrepe
from hyvl.evaluation.suite import run_suite, table_rows

SUBSETS = (
    "replace_obj",
    "replace_att",
    "replace_rel",
    "swap_obj",
    "swap_att",
    "add_obj",
    "add_att",
)


def _other(options, current):
    return next(o for o in options if o != current)


def _negatives(boxes):
    """Hand-made hard negatives of a demo scene's caption, one per SugarCrepe edit (swaps and
    the relation need two objects)."""
    objs = [b["text"].split() for b in boxes]  # [size, colour, shape]
    say = lambda objs, joint=" and ": joint.join(f"a {z} {c} {s}" for z, c, s in objs)  # noqa: E731
    (z0, c0, s0), rest = objs[0], objs[1:]
    neg = {
        "replace_obj": say([[z0, c0, _other(SHAPES, s0)], *rest]),
        "replace_att": say([[z0, _other(COLOURS, c0), s0], *rest]),
        "add_obj": say([*objs, ["large", _other(COLOURS, c0), _other(SHAPES, s0)]]),
        "add_att": say([[z0, f"striped {c0}", s0], *rest]),
    }
    if rest:
        (z1, c1, s1), *more = rest
        neg["replace_rel"] = say(objs, " inside ")
        neg["swap_obj"] = say([[z0, c0, s1], [z1, c1, s0], *more])
        neg["swap_att"] = say([[z0, c1, s0], [z1, c0, s1], *more])
    return neg


def write_sugarcrepe(folder, n_images=10, seed=3):
    """The released layout under ``folder``: SUBSET.json + val2017/; returns the pairs written
    ({subset: [(PIL image or None, caption, negative)]}, None: the image is missing/damaged)."""
    rng = random.Random(seed)
    (folder / "val2017").mkdir(parents=True)
    truth = {s: [] for s in SUBSETS}
    files = {s: {} for s in SUBSETS}
    for i in range(n_images):
        while True:  # every other scene: two objects of different shapes and colours
            image, caption, boxes, objects = make_scene(rng, n_objects=1 + i % 2)
            (c0, s0), *rest = objects  # (colour, shape)
            if not i % 2 or (len(rest) == 1 and rest[0][0] != c0 and rest[0][1] != s0):
                break
        name = f"{i + 1:012d}.jpg"
        image.save(folder / "val2017" / name, quality=90)
        with Image.open(folder / "val2017" / name) as im:  # what the evaluation reads
            image = im.convert("RGB")
        assert caption == " and ".join(f"a {b['text']}" for b in boxes)  # as _negatives says
        for subset, negative in _negatives(boxes).items():
            files[subset][str(len(files[subset]))] = {
                "filename": name, "caption": caption, "negative_caption": negative
            }  # fmt: skip
            truth[subset].append((image, caption, negative))
    # a damaged image and one that is not there: their pairs are skipped and counted
    (folder / "val2017" / "000000999998.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    for bad in ("000000999998.jpg", "000000999999.jpg"):
        files["add_obj"][str(len(files["add_obj"]))] = {
            "filename": bad, "caption": "a red circle", "negative_caption": "a blue square"
        }  # fmt: skip
    for subset, entries in files.items():
        (folder / f"{subset}.json").write_text(json.dumps(entries, indent=4))
    return truth


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("export")
    hyvl.save(hyvl.create_model("meru_tiny", vision={"depth": 1}, text={"layers": 1}), path)
    model, preprocess, tokenizer = hyvl.load(path)
    root = tmp_path_factory.mktemp("root")
    truth = write_sugarcrepe(root / "sugarcrepe")
    return path, model, preprocess, tokenizer, root, truth


@torch.no_grad()
def _recompute(model, preprocess, tokenizer, truth, score="similarity"):
    """{subset: (correct, pairs)}: each image and caption embedded on its own, scored by hand."""
    curv = None if model.curv is None else model.curv.detach()
    image_emb, text_emb = {}, {}
    out = {}
    for subset, pairs in truth.items():
        correct = 0
        for image, caption, negative in pairs:
            if id(image) not in image_emb:
                image_emb[id(image)] = model.encode_image(preprocess(image)[None])
            for text in (caption, negative):
                if text not in text_emb:
                    text_emb[text] = model.encode_text(tokenizer([text]))
            x, t = image_emb[id(image)], torch.cat([text_emb[caption], text_emb[negative]])
            if score == "cone":
                s = lorentz.half_aperture(t, curv) - lorentz.oxy_angle(t, x.expand_as(t), curv)
            elif model.space.hyperbolic:
                s = -lorentz.pairwise_dist(x, t, curv)[0]
            else:
                s = (x @ t.T)[0]
            correct += bool(s[0] > s[1])
        out[subset] = (correct, len(pairs))
    return out


def _check(res, expected):
    assert list(res["subsets"]) == list(SUBSETS)
    for subset, (correct, n) in expected.items():
        assert res["subsets"][subset] == {"accuracy": pytest.approx(100.0 * correct / n),
                                          "num_pairs": n}, subset  # fmt: skip
    total = sum(n for _, n in expected.values())
    assert res["mean"] == pytest.approx(100.0 * sum(c for c, _ in expected.values()) / total)


def test_accuracy_matches_an_independent_recomputation(setup):
    path, model, preprocess, tokenizer, root, truth = setup
    res = evaluate_sugarcrepe(model, preprocess, tokenizer, root / "sugarcrepe", batch_size=4)
    _check(res, _recompute(model, preprocess, tokenizer, truth))
    assert all(truth[s] for s in SUBSETS)  # every subset has pairs to count
    assert res["skipped"] == {"corrupt_image": 1, "missing_image": 1} and res["missing"] == {}
    assert res["score"] == "similarity"
    # the entailment score is its own result
    cone = evaluate_sugarcrepe(model, preprocess, tokenizer, root / "sugarcrepe", score="cone")
    _check(cone, _recompute(model, preprocess, tokenizer, truth, "cone"))
    assert cone["score"] == "cone"


def test_cli_table_json_and_missing_subset(setup, tmp_path, capsys):
    path, model, preprocess, tokenizer, root, truth = setup
    data = tmp_path / "sc"
    (data / "data").mkdir(parents=True)  # a clone of the authors' repository: JSONs under data/
    for s in SUBSETS[:-1]:
        shutil.copy(root / "sugarcrepe" / f"{s}.json", data / "data")
    out = tmp_path / "r.json"
    rc = main(["eval", "sugarcrepe", "--checkpoint", str(path), "--root", str(data), "--images",
               str(root / "sugarcrepe" / "val2017"), "--json", str(out), "--device", "cpu"])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert set(res) == {"subsets", "mean", "score", "skipped", "missing"}
    expected = _recompute(model, preprocess, tokenizer, {s: truth[s] for s in SUBSETS[:-1]})
    for s, (c, n) in expected.items():
        assert res["subsets"][s]["accuracy"] == pytest.approx(100.0 * c / n)
    assert res["missing"] == {"add_att": f"no file {data / 'data' / 'add_att.json'}"}
    assert "mean (pooled)" in printed and "add_att" in printed and "skipped: 2" in printed


def test_clip_scores_by_cosine_and_refuses_cones(setup):
    _, _, preprocess, tokenizer, root, truth = setup
    torch.manual_seed(1)  # (the same image size and tokenizer as the MERU model's)
    model = hyvl.create_model("clip_tiny", vision={"depth": 1}, text={"layers": 1}).eval()
    sub = ["replace_obj", "swap_att"]
    res = evaluate_sugarcrepe(model, preprocess, tokenizer, root / "sugarcrepe", subsets=sub)
    expected = _recompute(model, preprocess, tokenizer, {s: truth[s] for s in sub})
    assert {s: r["num_pairs"] for s, r in res["subsets"].items()} == {s: len(truth[s]) for s in sub}
    for s, (c, n) in expected.items():
        assert res["subsets"][s]["accuracy"] == pytest.approx(100.0 * c / n)
    with pytest.raises(DataError, match="needs a hyperbolic model"):
        evaluate_sugarcrepe(model, preprocess, tokenizer, root / "sugarcrepe", score="cone")


def test_bad_input_is_named(setup, tmp_path, capsys):
    path, model, preprocess, tokenizer, root, _ = setup
    base = ["eval", "sugarcrepe", "--checkpoint", str(path), "--device", "cpu", "--root"]
    assert main([*base, str(tmp_path)]) == 2
    assert "none of replace_obj.json" in capsys.readouterr().err
    (tmp_path / "swap_obj.json").write_text('{"0": {"filename": "x.jpg"}}')
    (tmp_path / "val2017").mkdir()
    assert main([*base, str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'swap_obj.json'}: entry '0' lacks one of" in err and "Traceback" not in err


def test_suite_lists_sugarcrepe_when_its_folder_exists(setup, tmp_path):
    path, model, preprocess, tokenizer, root, truth = setup
    res = run_suite(model, preprocess, tokenizer, root, datasets=["sugarcrepe"], log=id)
    direct = evaluate_sugarcrepe(model, preprocess, tokenizer, root / "sugarcrepe")
    row = res["compositional"]["sugarcrepe"]
    assert row["subsets"] == direct["subsets"] and row["mean"] == direct["mean"]
    rows = {r["metric"]: r for r in table_rows(res) if r["dataset"] == "sugarcrepe"}
    assert rows["swap_att acc"]["value"] == direct["subsets"]["swap_att"]["accuracy"]
    assert rows["mean (pooled)"]["value"] == direct["mean"]
    assert res["skipped"] == {"corrupt_image": 1, "missing_image": 1}
    # absent, it is listed among the datasets not evaluated
    res = run_suite(model, preprocess, tokenizer, tmp_path, log=id)
    assert res["missing"]["sugarcrepe"] == f"no folder {tmp_path / 'sugarcrepe'}"
    assert res["compositional"] == {}
