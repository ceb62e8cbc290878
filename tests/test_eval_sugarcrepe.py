"""hyvl eval sugarcrepe: SugarCrepe's released layout (seven id -> {"filename", "caption",
"negative_caption"} JSON files over a folder of COCO val2017 images), written here from scenes of
the demo world with their true captions and hand-made negatives, and checked against an
independent recomputation (each image and caption embedded on its own, pairs counted by hand)."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

import hyvl
from hyvl import lorentz
from hyvl.cli.main import main
from hyvl.errors import DataError
from hyvl.evaluation import evaluate_sugarcrepe
from hyvl.evaluation.suite import run_suite, table_rows

# the paper's table order: replace, swap, add
SUBSETS = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att", "add_obj",
           "add_att")  # fmt: skip
TOOLS = Path(__file__).resolve().parents[1] / "tools"


def write_sugarcrepe(folder):
    """The tool's demo-world folder, plus a damaged image and a missing one among add_obj's
    pairs (skipped and counted)."""
    sys.path.insert(0, str(TOOLS))
    try:
        import sugarcrepe_demo
    finally:
        sys.path.remove(str(TOOLS))
    truth = sugarcrepe_demo.write_sugarcrepe(folder, n_images=10, seed=3)
    files = json.loads((folder / "add_obj.json").read_text())
    # a damaged image and one that is not there: their pairs are skipped and counted
    (folder / "val2017" / "000000999998.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    for bad in ("000000999998.jpg", "000000999999.jpg"):
        files[str(len(files))] = {
            "filename": bad, "caption": "a red circle", "negative_caption": "a blue square"
        }  # fmt: skip
    (folder / "add_obj.json").write_text(json.dumps(files))
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
    assert main(["eval", "suite", "--list", "--json", str(tmp_path / "l.json")]) == 0
    listed = json.loads((tmp_path / "l.json").read_text())["compositional"]
    assert [r["folder"] for r in listed] == ["ROOT/sugarcrepe/"]
