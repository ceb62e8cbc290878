"""Search: exact backends equal brute force, the inner-product reduction, index files, traversal."""

import contextlib
import io
import json
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

import hyvl
from hyvl import lorentz
from hyvl.errors import DataError, HyvlError
from hyvl.geometry import Lorentz
from hyvl.search.backends import FaissBackend, TorchBackend, recall_vs_exact
from hyvl.search.index import EmbeddingIndex
from hyvl.search.traverse import tangent_path, traverse


def points(n, d=16, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return lorentz.exp_map0(torch.randn(n, d, generator=g) * scale, 0.7)


def brute(q, y, k, c=0.7):
    d = lorentz.pairwise_dist(q, y, c)
    order = torch.sort(d, dim=1, stable=True).indices[:, :k]
    return order


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_exact_backends_equal_brute_force(backend):
    y, q = points(3000, scale=1.5), points(50, scale=1.5, seed=1)
    engine = (
        TorchBackend(y, "lorentz", 0.7) if backend == "torch" else FaissBackend(y, "lorentz", 0.7)
    )
    dist, idx = engine.search(q, 10)
    assert torch.equal(idx, brute(q, y, 10))
    assert torch.allclose(dist, lorentz.dist(q.unsqueeze(1), y[idx], 0.7), atol=1e-5)
    assert (dist[:, 1:] >= dist[:, :-1]).all()


def test_reduction_to_inner_product_is_exact():
    # ranking by (q0, qs).(-y0, ys) = <q, y>_L is ranking by distance, in float64
    y, q = points(500).double(), points(20, seed=2).double()
    ip = Lorentz().augment_queries(q, 0.7).double() @ Lorentz().augment_items(y, 0.7).double().T
    d = torch.acosh((-0.7 * ip).clamp_min(1)) / 0.7**0.5
    assert torch.allclose(d, lorentz.pairwise_dist(q, y, 0.7), atol=1e-9)
    assert torch.equal(torch.argsort(-ip, dim=1), torch.argsort(d, dim=1))


def test_ties_break_by_index_and_chunks_agree():
    y = torch.cat([points(5), points(5)])  # rows 5..9 duplicate rows 0..4
    q = y[:3]
    _, idx = TorchBackend(y, "lorentz", 0.7).search(q, 2)
    assert idx.tolist() == [[0, 5], [1, 6], [2, 7]]
    _, idx = FaissBackend(y, "lorentz", 0.7).search(q, 2)
    assert idx.tolist() == [[0, 5], [1, 6], [2, 7]]
    # more exact ties than re-rank candidates: the exact backends' certificate fails and they
    # fall back to the brute force, still lower index first (FAISS alone returns any 20 of
    # the 31 tied rows)
    y = torch.cat([points(40, seed=4), points(1, seed=5).expand(30, -1), points(1, seed=5)])
    q = points(1, seed=5)
    for engine in (TorchBackend(y, "lorentz", 0.7), FaissBackend(y, "lorentz", 0.7)):
        _, idx = engine.search(q, 12)
        assert idx.tolist() == [list(range(40, 52))], engine.name
        assert torch.equal(idx, brute(q, y, 12))


def test_exact_backends_equal_brute_force_on_near_ties():
    """30 near-duplicates of the query, 1e-3 |x| apart and nearest last: fp32 inner products
    cannot order them (FAISS alone returned rows 51-57 here), distances can."""
    p = points(1, seed=5)
    g = torch.Generator().manual_seed(3)
    dirs = torch.nn.functional.normalize(torch.randn(30, p.shape[1], generator=g), dim=-1)
    mags = 1e-3 * 1.05 ** torch.arange(30, 0, -1).float()
    y = torch.cat([points(40, seed=4), p + mags[:, None] * dirs])
    want = brute(p, y, 12)
    assert set(want[0].tolist()) == set(range(58, 70))  # the 12 nearest perturbations
    for engine in (TorchBackend(y, "lorentz", 0.7), FaissBackend(y, "lorentz", 0.7)):
        assert torch.equal(engine.search(p, 12)[1], want), engine.name


def test_approximate_backends_report_recall():
    # radii of trained embeddings (distance to the origin ~1-2)
    y, q = points(2000, scale=0.3), points(30, seed=3, scale=0.3)
    exact = brute(q, y, 10)
    for kind in ("hnsw", "ivf"):
        r = recall_vs_exact(FaissBackend(y, "lorentz", 0.7, kind), exact, q, 10)
        assert 0.5 < r <= 1.0


def test_index_reports_recall_of_approximate_backends():
    y = points(1500, scale=0.3)
    meta = {"geometry": "lorentz", "curv": 0.7, "embed_dim": 16}
    index = EmbeddingIndex(y, [{"kind": "image", "item": str(i)} for i in range(len(y))], meta)
    recall, n = index.approximate_recall(5, backend="hnsw", sample=40)
    assert n == 40 and 0.5 < recall <= 1.0
    # the exact FAISS backend has recall 1 by construction
    assert index.approximate_recall(5, backend="faiss", sample=40)[0] == 1.0
    # IVF probing every list is exhaustive, hence exact after the re-rank
    assert index.approximate_recall(5, backend="ivf", sample=40, nlist=16, nprobe=16)[0] == 1.0
    with pytest.raises(HyvlError, match="takes no options"):
        index.search(y[:1], 5, backend="torch", nprobe=4)


def test_index_round_trip_append_and_mismatch(tmp_path):
    meta = {"geometry": "lorentz", "curv": 0.7, "embed_dim": 16, "checkpoint": "x"}
    a = EmbeddingIndex(points(4), [{"kind": "image", "item": f"i{i}"} for i in range(4)], meta)
    a.save(tmp_path / "a")
    b = EmbeddingIndex.load(tmp_path / "a")
    assert torch.equal(a.embeddings, b.embeddings) and b.items == a.items
    c = b.append(EmbeddingIndex(points(2, seed=5), [{"kind": "text", "item": "t"}] * 2, meta))
    assert len(c) == 6 and c.rows("text").tolist() == [4, 5]
    hits = c.search(points(1, seed=5)[:1], 1, kind="text")[0]
    assert hits[0]["item"] == "t" and hits[0]["distance"] < 1e-3
    with pytest.raises(HyvlError, match="curvature"):
        b.append(EmbeddingIndex(points(1), [{"kind": "text", "item": "t"}], {**meta, "curv": 1.0}))
    with pytest.raises(DataError, match="not a hyvl index"):
        EmbeddingIndex.load(tmp_path)
    # a damaged index names the file and the problem
    (tmp_path / "a" / "items.jsonl").write_text('{"kind": "image", "item": "i0"}\n{oops\n')
    with pytest.raises(DataError, match=r"items.jsonl line 2: not JSON"):
        EmbeddingIndex.load(tmp_path / "a")
    (tmp_path / "a" / "items.jsonl").write_text('{"kind": "image", "item": "i0"}\n')
    with pytest.raises(DataError, match="4 embeddings but 1 lines"):
        EmbeddingIndex.load(tmp_path / "a")
    (tmp_path / "a" / "embeddings.safetensors").write_bytes(b"garbage")
    with pytest.raises(DataError, match="embeddings.safetensors: unreadable"):
        EmbeddingIndex.load(tmp_path / "a")


def test_traversal_moves_to_the_origin_and_reads_generic_texts():
    c = 1.0
    direction = torch.nn.functional.normalize(
        torch.randn(8, generator=torch.Generator().manual_seed(0)), dim=0
    )
    # texts along the image's ray: generic near the origin, specific far out
    radii = torch.tensor([0.3, 1.0, 2.0])  # "shape", "circle", "red circle"
    texts = lorentz.exp_map0(radii.unsqueeze(1) * direction, c)
    image = lorentz.exp_map0(2.6 * direction, c)
    path = tangent_path(image, None, 12, c)
    steps = traverse(path, texts, c)
    d0 = [s["dist0"] for s in steps]
    assert all(a > b for a, b in zip(d0, d0[1:], strict=False))
    assert d0[-1] < 1e-4
    chosen = [s["text"] for s in steps if s["text"] is not None]
    # from specific to generic: the text index never increases along the walk
    assert chosen[0] == 2 and chosen[-1] == 0
    assert all(a >= b for a, b in zip(chosen, chosen[1:], strict=False))


def test_interpolation_log_maps_both_ends():
    a, b = points(1, seed=1)[0], points(1, seed=2)[0]
    path = tangent_path(a, b, 5, 0.7)
    assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], b, atol=1e-5)
    mid = lorentz.exp_map0((lorentz.log_map0(a, 0.7) + lorentz.log_map0(b, 0.7)) / 2, 0.7)
    assert torch.allclose(path[2], mid, atol=1e-5)


def run_cli(*args):
    """Run ``hyvl ARGS`` in this process (a subprocess would re-import torch: seconds each)."""
    from hyvl.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def res_blue(tmp_path):
    out = run_cli("retrieve", "--index", tmp_path / "idx", "--text", "blue", "-k", "2",
                  "--json", tmp_path / "b.json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads((tmp_path / "b.json").read_text())["results"]


def test_cli_index_retrieve_traverse_viz(tmp_path):
    torch.manual_seed(0)
    hyvl.save(hyvl.create_model("meru_tiny"), tmp_path / "ckpt")
    (tmp_path / "img").mkdir()
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (50, 50), colour).save(tmp_path / "img" / f"{i}.png")
    (tmp_path / "texts.txt").write_text("red\ngreen\nblue\nshape\n")
    out = run_cli(
        "index",
        "build",
        "--checkpoint",
        tmp_path / "ckpt",
        "--images",
        tmp_path / "img",
        "--texts",
        tmp_path / "texts.txt",
        "--out",
        tmp_path / "idx",
    )
    assert out.returncode == 0, out.stderr
    out = run_cli(
        "retrieve",
        "--index",
        tmp_path / "idx",
        "--text",
        "red",
        "-k",
        "2",
        "--json",
        tmp_path / "r.json",
    )
    assert out.returncode == 0, out.stderr
    res = json.loads((tmp_path / "r.json").read_text())["results"]
    assert [r["rank"] for r in res] == [1, 2] and set(res[0]) == {"rank", "item", "distance"}
    assert res[0]["item"].endswith(".png")
    out = run_cli(
        "retrieve",
        "--index",
        tmp_path / "idx",
        "--image",
        tmp_path / "img" / "0.png",
        "--kind",
        "image",
        "-k",
        "1",
        "--backend",
        "faiss",
        "--json",
        tmp_path / "i.json",
    )
    assert out.returncode == 0, out.stderr
    top = json.loads((tmp_path / "i.json").read_text())["results"][0]
    assert top["item"].endswith("0.png") and top["distance"] < 1e-3
    out = run_cli(
        "retrieve", "--index", tmp_path / "idx", "--text", "blue", "--backend", "hnsw",
        "-k", "2", "--json", tmp_path / "h.json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    hnsw = json.loads((tmp_path / "h.json").read_text())
    assert hnsw["recall_vs_exact"]["queries"] == 100 and "recall@2" in out.stdout
    assert [r["item"] for r in hnsw["results"]] == [r["item"] for r in res_blue(tmp_path)]
    out = run_cli(
        "traverse",
        "--index",
        tmp_path / "idx",
        "--image",
        tmp_path / "img" / "0.png",
        "--steps",
        "5",
        "--no-entailment",
        "--json",
        tmp_path / "t.json",
    )
    assert out.returncode == 0, out.stderr
    steps = json.loads((tmp_path / "t.json").read_text())["steps"]
    assert len(steps) == 5 and all(s["text"] in {"red", "green", "blue", "shape"} for s in steps)
    # MERU's traversal (entailment cones on) walks strictly toward the origin and ends there
    out = run_cli(
        "traverse",
        "--checkpoint",
        tmp_path / "ckpt",
        "--texts",
        tmp_path / "texts.txt",
        "--image",
        tmp_path / "img" / "1.png",
        "--steps",
        "6",
        "--json",
        tmp_path / "t2.json",
    )
    assert out.returncode == 0, out.stderr
    d0 = [s["dist0"] for s in json.loads((tmp_path / "t2.json").read_text())["steps"]]
    assert len(d0) == 6 and all(a > b for a, b in zip(d0, d0[1:], strict=False))
    assert d0[-1] < 1e-4
