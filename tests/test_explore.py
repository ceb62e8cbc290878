"""hyvl explore: the answers behind the page (against the search, traverse and cone code), and
the page itself in a real browser (Debian's chromium driven by playwright): served, a typed
query shows its nearest items and its walk, a click on the disk opens an item; the export opens
with the network cut off."""

import contextlib
import io
import json
import os
import shutil

import pytest
import torch

import hyvl
from hyvl import lorentz
from hyvl.errors import HyvlError
from hyvl.explore import CHROMIUM, CHROMIUM_ARGS
from hyvl.search.index import EmbeddingIndex, build_index


@pytest.fixture(scope="module")
def demo_index(tmp_path_factory):
    """A demo-like index: the demo world's class folders (2 images of each of the 12 classes)
    and the 18 names of its hierarchy, embedded by an untrained hycoclip_tiny."""
    from hyvl.data.demo import make_demo

    root = tmp_path_factory.mktemp("explore")
    data = make_demo(
        root / "data", train_samples=4, val_samples=4, zeroshot_per_class=2, retrieval_images=2
    )
    edges = [line.split("\t") for line in (data / "hierarchy.tsv").read_text().splitlines()]
    (root / "texts.txt").write_text("\n".join(sorted({n for e in edges for n in e})) + "\n")
    torch.manual_seed(0)
    hyvl.save(hyvl.create_model("hycoclip_tiny"), root / "ckpt")
    build_index(root / "ckpt", data / "zeroshot", root / "texts.txt").save(root / "index")
    return root


@pytest.fixture(scope="module")
def explorer(demo_index):
    from hyvl.explore import open_explorer

    return open_explorer(demo_index / "index")


def test_answers_agree_with_search_traverse_and_cones(explorer):
    from hyvl.search.traverse import tangent_path, traverse

    index, c = explorer.index, explorer.curv
    assert (
        explorer.classnames[:2] == ["blue circle", "blue square"] and len(explorer.classnames) == 12
    )
    red = explorer.classnames.index("red circle")
    rows = [i for i, it in enumerate(index.items) if it["item"] == "red circle"]
    assert explorer.cls[rows[0]] == red  # the class-name text shares its class's colour
    q = explorer.query(text="red circle", kind="image", k=5)
    with torch.no_grad():
        x = explorer.model.encode_text(explorer.tokenizer(["red circle"]))
    want = index.search(x, 5, kind="image")[0]
    assert [r["row"] for r in q["results"]] == [h["row"] for h in want]
    assert all(
        abs(r["distance"] - h["distance"]) < 1e-6 for r, h in zip(q["results"], want, strict=True)
    )
    # the walk is hyvl traverse's, its points on the disk at the radius of their distance
    texts = index.embeddings[index.rows("text")]
    steps = traverse(tangent_path(x[0], None, 12, c), texts, c)
    assert [s["text"] for s in q["path"]] == [
        None if s["text"] is None else int(index.rows("text")[s["text"]]) for s in steps
    ]
    for s in q["path"]:
        assert (
            abs(
                (s["x"] ** 2 + s["y"] ** 2) ** 0.5
                - torch.tanh(torch.tensor(c**0.5 * s["dist0"] / 2))
            )
            < 1e-5
        )
    # cones: the one pass over the index equals MERU's element-wise test on every pair, both
    # ways and for a batch of points
    emb = index.embeddings
    exact = lorentz.oxy_angle(emb[:, None], emb[None], c) <= lorentz.half_aperture(emb, c)[:, None]
    assert torch.equal(explorer.cones.inside(emb), exact.T)
    assert torch.equal(explorer.cones.holding(emb), exact)
    row = q["results"][0]["row"]
    item = explorer.item(row)
    assert row not in [n["row"] for n in item["neighbours"]] and len(item["neighbours"]) == 8
    assert item["ancestors_count"] == int(exact[:, row].sum()) - 1
    assert item["descendants_count"] == int(exact[row].sum()) - 1
    # level of detail: at most `limit` points, all inside the box, texts first
    p = explorer.points((-1, -1, 1, 1), limit=20)
    assert len(p["rows"]) == 20 and p["in_view"] == len(index)
    assert p["kind"][:18] == [1] * 18
    p = explorer.points((0, 0, 1, 1), limit=1000)
    assert all(x >= 0 and y >= 0 for x, y in zip(p["x"], p["y"], strict=True))
    # without a model a typed text is the indexed item of that label
    from hyvl.explore import Explorer

    bare = Explorer(index)
    hit = bare.query(text="Red Circle", kind="text", k=1)["results"][0]
    assert hit["label"] == "red circle" and hit["distance"] < 1e-3
    with pytest.raises(HyvlError, match="no indexed item is labelled"):
        bare.query(text="a zebra")
    with pytest.raises(HyvlError, match="query is empty"):
        explorer.query(text="  ")
    with pytest.raises(HyvlError, match="the uploaded image"):
        explorer.query(image=b"not an image")


def test_cli_export_and_refusals(demo_index, tmp_path):
    from hyvl.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(
            ["explore", "--index", str(demo_index / "index"), "--export", str(tmp_path / "page")]
        )
    assert code == 0, err.getvalue()
    html = (tmp_path / "page" / "index.html").read_text()
    assert "42 of 42 items" in out.getvalue()
    # self-contained: no script, style or image fetched from anywhere
    assert (
        "<script src" not in html
        and "<link" not in html
        and "http" not in html.split("HYVL_DATA")[0]
    )
    assert "https://" not in html and "http://" not in html
    data = json.loads(
        html.split("window.HYVL_DATA = ")[1].split(";</script>")[0].replace("<\\/", "</")
    )
    assert len(data["points"]["rows"]) == 42 and len(data["items"]) == 42 and data["thumbs"]
    # a CLIP index has no disk to draw: a one-line error naming the index
    meta = {"geometry": "euclidean", "curv": None, "embed_dim": 4}
    EmbeddingIndex(torch.eye(4)[:2], [{"kind": "text", "item": "a"}] * 2, meta).save(
        tmp_path / "clip"
    )
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["explore", "--index", str(tmp_path / "clip")])
    assert code == 2 and "Poincare disk of a Lorentz model" in err.getvalue()


@pytest.fixture(scope="module")
def browser():
    """Headless chromium from Debian (never a browser download). In CI a missing browser or
    driver fails the test; elsewhere it is skipped with the reason."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install 'hyvl[test]')"
    if missing is None and not shutil.which(CHROMIUM):
        missing = f"{CHROMIUM} is missing (apt-get install -y chromium chromium-driver)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the browser tests need a browser in CI: {missing}")
        pytest.skip(f"{missing}; CI fails here instead of skipping")
    with sync_playwright() as pw:
        # playwright gives each launch a fresh temporary profile (--user-data-dir) itself
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_served_page_searches_walks_and_opens_an_item(explorer, demo_index, browser, tmp_path):
    from hyvl.explore.server import Serving, make_app

    with Serving(make_app(explorer)) as url:
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready='1']", timeout=10000)
        assert "42 of 42 items" in page.inner_text("#status")
        assert "red circle" in page.inner_text("#legend") or "image" in page.inner_text("#legend")
        page.fill("#q", "red circle")
        page.press("#q", "Enter")
        page.wait_for_selector("#results li", timeout=10000)
        results = page.query_selector_all("#results li")
        assert len(results) == 10 and all(".jpg" in r.inner_text() for r in results)
        query = page.evaluate("window.hyvl.state.query")
        assert len(query["path"]) == 12 and query["path"][-1]["dist0"] < 1e-4
        assert page.query_selector("#path") is not None and "items" in page.inner_text("#cone")
        # hover, then click the first result where it is drawn on the canvas
        first = query["results"][0]
        x, y = page.evaluate(f"window.hyvl.pagePoint({first['x']}, {first['y']})")
        page.mouse.move(x, y)
        page.wait_for_selector("#tip:not([hidden])")
        assert "from the origin" in page.inner_text("#tip")
        page.mouse.click(x, y)
        page.wait_for_selector("#item-title", timeout=10000)
        selected = int(page.evaluate("document.body.dataset.selected"))
        assert explorer.labels[selected] == page.inner_text("#item-title")
        assert len(page.query_selector_all("#neighbours li")) == 8
        want = explorer.item(selected)
        panel = page.inner_text("#panel").lower()
        assert f"ancestors: cones holding it ({want['ancestors_count']})" in panel
        assert f"inside its cone ({want['descendants_count']})" in panel
        page.click("#neighbours li")  # a neighbour in the list opens that item
        page.wait_for_function(f"document.body.dataset.selected != '{selected}'")
        # zoom about the cursor: the view's points are fetched again, the scale grows
        page.mouse.move(500, 350)
        page.mouse.wheel(0, -600)
        page.wait_for_function("window.hyvl.state.view.scale > 2")
        page.wait_for_function("document.querySelector('#status').textContent.includes(' of ')")
        # an uploaded image: its nearest texts
        image = sorted((demo_index / "data" / "zeroshot").rglob("*.jpg"))[0]
        page.fill("#q", "")
        page.set_input_files("#upload", str(image))
        page.click("button[type=submit]")
        page.wait_for_function("document.body.dataset.queried == '2'")
        assert page.inner_text("#query-title") == "uploaded image"
        texts = {explorer.labels[r] for r in explorer.text_rows.tolist()}
        assert all(li.inner_text().split(" text,")[0] in texts
                   for li in page.query_selector_all("#results li"))  # fmt: skip
        page.select_option("#colour", "class")
        assert "red circle" in page.inner_text("#legend")
        # bad requests get a 400 and one line saying what is wrong
        r = page.request.get(url + "/api/points?box=1,2")
        assert r.status == 400 and "four numbers" in r.json()["error"]
        r = page.request.post(url + "/api/query", data=b"not an image")
        assert r.status == 400 and "the uploaded image" in r.json()["error"]
        r = page.request.get(url + "/api/item?row=999")
        assert r.status == 400 and "the index holds 42" in r.json()["error"]
        shot = page.screenshot(path=str(tmp_path / "explore.png"))
        assert shot[:4] == b"\x89PNG" and len(shot) > 10000
        assert errors == []


def test_export_opens_with_the_network_cut_off(explorer, browser, tmp_path):
    path = explorer.export(tmp_path / "page")
    context = browser.new_context(offline=True)
    asked = []
    context.route("**/*", lambda route: (asked.append(route.request.url), route.continue_()))
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=10000)
    page.fill("#q", "circle")
    page.press("#q", "Enter")
    page.wait_for_selector("#results li", timeout=10000)
    assert page.inner_text("#query-title") == "circle"
    # every request the page made was for itself or its inlined pictures: nothing from a network
    assert [u for u in asked if not u.startswith(("file:", "data:"))] == []
    assert errors == []
    context.close()


def test_one_pass_cones_equal_merus_test_on_spread_points():
    from hyvl.explore import Cones

    c = 0.7
    g = torch.Generator().manual_seed(4)
    radii = torch.rand(200, 1, generator=g) * 4  # near the origin (half-space cones) to far out
    emb = lorentz.exp_map0(
        torch.nn.functional.normalize(torch.randn(200, 8, generator=g), dim=-1) * radii, c
    )
    emb = torch.cat([emb, emb[:5] * (1 + 1e-6), torch.zeros(1, 8)])  # near-duplicates, the origin
    exact = lorentz.oxy_angle(emb[:, None], emb[None], c) <= lorentz.half_aperture(emb, c)[:, None]
    cones = Cones(emb, c)
    assert 0 < int(exact.sum()) < exact.numel()
    assert torch.equal(cones.inside(emb), exact.T) and torch.equal(cones.holding(emb), exact)
    for i in (0, 7, 199, 200, 205):  # one point at a time, the near-duplicates, the origin
        assert torch.equal(cones.inside(emb[i]), exact[i]), i
        assert torch.equal(cones.holding(emb[i]), exact[:, i]), i


def test_walks_read_the_texts_hyvl_traverse_reads():
    from hyvl.explore import walk_to_origin
    from hyvl.search.traverse import tangent_path, traverse

    c = 1.0
    g = torch.Generator().manual_seed(5)
    direction = torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=-1)
    # texts along three rays and scattered, generic near the origin, specific far out
    radii = torch.tensor([0.3, 1.0, 2.0])
    texts = lorentz.exp_map0((radii[:, None, None] * direction[None]).reshape(-1, 8), c)
    texts = torch.cat([texts, lorentz.exp_map0(torch.randn(20, 8, generator=g), c)])
    starts = lorentz.exp_map0(2.6 * direction + 0.05 * torch.randn(3, 8, generator=g), c)
    walks = walk_to_origin(starts, texts, c, steps=10)
    met = 0
    for x, walk in zip(starts, walks, strict=True):
        want = traverse(tangent_path(x, None, 10, c), texts, c)
        assert [s["text"] for s in walk] == [s["text"] for s in want]
        assert all(abs(a["dist0"] - b["dist0"]) < 1e-5 for a, b in zip(walk, want, strict=True))
        met += sum(s["text"] is not None for s in walk)
    assert met >= 10  # the walks meet texts: the comparison is not of empty walks
