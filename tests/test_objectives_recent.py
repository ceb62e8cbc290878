"""UNCHA, ATMG (and PHyCLIP) objectives: float64 against an independent pure-Python
transcription of the papers' formulas, parity with the authors' code (``tools/*_reference.py``),
fp32 accuracy and float64 gradient checks, on tiny tensors."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from hyvl import lorentz as L
from hyvl.config import ObjectiveConfig
from hyvl.errors import ConfigError
from hyvl.models.embeddings import Embeddings
from hyvl.objectives import build_objective, compute_objective

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _tool(name):
    sys.path.insert(0, str(TOOLS))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(TOOLS))


# ----------------------------------------------------------------------------------------------
# pure-Python float64 formulas (MERU's closed forms; no hyvl code)
# ----------------------------------------------------------------------------------------------


def _norm(x):
    return math.sqrt(sum(v * v for v in x))


def _t(x, c):
    return math.sqrt(1.0 / c + sum(v * v for v in x))


def _inner(x, y, c):
    return sum(a * b for a, b in zip(x, y, strict=True)) - _t(x, c) * _t(y, c)


def dist(x, y, c):
    return math.acosh(max(1.0, -c * _inner(x, y, c))) / math.sqrt(c)


def aperture(x, c, K=0.1):
    return math.asin(min(1.0, 2 * K / (math.sqrt(c) * _norm(x))))


def angle(x, y, c):
    cxy = c * _inner(x, y, c)
    ratio = (_t(y, c) + cxy * _t(x, c)) / (_norm(x) * math.sqrt(cxy * cxy - 1))
    return math.acos(max(-1.0, min(1.0, ratio)))


def ce(row, target):
    m = max(row)
    return m - row[target] + math.log(sum(math.exp(v - m) for v in row))


def mean_ce(rows, cols, targets, sim, scale, weights=None):
    total = 0.0
    for i, r in enumerate(rows):
        w = 1.0 if weights is None else weights[i]
        total += ce([scale * w * sim(r, q) for q in cols], targets[i])
    return total / len(rows)


def softplus(v):
    return math.log1p(math.exp(v))


def ref_uncha(emb, k, local_scale=20.0, gl_scale=1 / 0.06, beta=0.1, alpha=10.0):
    """UNCHA (Kim et al. 2026): Eq. 9 uncertainty, Eq. 10-11 contrastive, Eq. 14-17 entailment."""
    c, s = emb.curv.item(), emb.logit_scale.item()
    img, txt = emb.image.tolist(), emb.text.tolist()
    bimg, btxt = emb.box_image.tolist(), emb.box_text.tolist()
    B = len(img)
    whole_t = list(range(B))
    box_t = list(range(B * k))
    owner = [i // k for i in range(B * k)]
    neg = lambda x, y: -dist(x, y, c)  # noqa: E731
    u_img = [softplus(-_norm(x)) for x in bimg]
    u_txt = [softplus(-_norm(x)) for x in btxt]
    w_img = [min(10.0, max(0.1, math.exp(-0.5 * u))) for u in u_img]
    w_txt = [min(10.0, max(0.1, math.exp(-0.5 * u))) for u in u_txt]
    contrastive = (
        0.5 * (mean_ce(img, txt, whole_t, neg, s) + mean_ce(txt, img, whole_t, neg, s))
        + 0.5
        * (
            mean_ce(bimg, btxt, box_t, neg, local_scale)
            + mean_ce(btxt, bimg, box_t, neg, local_scale)
        )
        + 0.5
        * (
            mean_ce(bimg, txt, owner, neg, gl_scale, w_img)
            + mean_ce(btxt, img, owner, neg, gl_scale, w_txt)
        )
    )

    def r(apex, child, kk):
        a = angle(apex, child, c)
        return max(0.0, a - kk * aperture(apex, c)) + beta * a

    def mean(v):
        return sum(v) / len(v)

    r_ti = [r(txt[i], img[i], 0.7) for i in range(B)]
    r_bb = [r(btxt[j], bimg[j], 0.7) for j in range(B * k)]
    r_bi = [r(bimg[j], img[owner[j]], 1.2) for j in range(B * k)]
    r_bt = [r(btxt[j], txt[owner[j]], 1.2) for j in range(B * k)]

    def calibration(res, us):
        z = sum(math.exp(u) for u in us)
        entropy = -sum((math.exp(u) / z) * math.log(math.exp(u) / z + 1e-8) for u in us)
        terms = [0.5 * rr / (math.exp(u) + 1e-6) + 0.5 * u for rr, u in zip(res, us, strict=True)]
        return alpha * (mean(terms) + entropy)

    entail = (
        0.5 * (mean(r_ti) + mean(r_bb))
        + 0.25 * (mean(r_bi) + mean(r_bt))
        + calibration(r_bi, u_img)
        + calibration(r_bt, u_txt)
    )
    return {"contrastive": contrastive, "entail": entail, "loss": contrastive + 0.2 * entail}


def ref_atmg(emb):
    """ATMG (Ramasinghe et al. 2024): image -> text by +angle(image, text), text -> image by
    -angle(text, image)."""
    c, s = emb.curv.item(), emb.logit_scale.item()
    img, txt = emb.image.tolist(), emb.text.tolist()
    t = list(range(len(img)))
    it = mean_ce(img, txt, t, lambda x, y: angle(x, y, c), s)
    ti = mean_ce(txt, img, t, lambda x, y: -angle(x, y, c), s)
    return {"contrastive_image_text": it, "contrastive_text_image": ti, "loss": 0.5 * (it + ti)}


def make_embeddings(B=4, k=1, D=6, seed=0, curv=0.7, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)

    def lift(n, s):
        return L.exp_map0(torch.randn(n, D, generator=g, dtype=torch.float64) * s, curv)

    emb = Embeddings(
        image=lift(B, 0.9),
        text=lift(B, 0.5),
        box_image=lift(B * k, 0.7),
        box_text=lift(B * k, 0.4),
        curv=torch.tensor(curv, dtype=torch.float64),
        logit_scale=torch.tensor(9.0, dtype=torch.float64),
    )
    return _cast(emb, dtype)


def _cast(emb, dtype):
    return Embeddings(
        *(t.to(dtype) for t in (emb.image, emb.text, emb.box_image, emb.box_text)),
        curv=emb.curv.to(dtype),
        logit_scale=emb.logit_scale.to(dtype),
    )


# ----------------------------------------------------------------------------------------------
# UNCHA
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2])
def test_uncha_equals_float64_transcription(k):
    emb = make_embeddings(k=k)
    out = compute_objective(emb, ObjectiveConfig(kind="uncha"), "lorentz")
    # 1e-7: float64 pairwise distances are a compensated split (~3e-8 off on the box pairs)
    for name, value in ref_uncha(emb, k).items():
        torch.testing.assert_close(out[name].item(), value, rtol=1e-7, atol=1e-10, msg=name)
    # the logged parts add up to the loss
    assert out["loss"].item() == pytest.approx(
        out["contrastive"].item() + 0.2 * out["entail"].item(), rel=1e-12
    )


def test_uncha_matches_the_authors_code_and_fp32():
    ref = _tool("uncha_reference")
    emb = make_embeddings(B=5, k=1, seed=2)
    loss, parts = ref.uncha_reference_loss(
        emb.image, emb.text, emb.box_image, emb.box_text, emb.curv, (9.0, 20.0, 1 / 0.06)
    )
    out = compute_objective(emb, ObjectiveConfig(kind="uncha"), "lorentz")
    # their eps clamps (1e-8 in acos / asin / acosh) are the only difference
    for name in ("contrastive", "entail"):
        assert out[name].item() == pytest.approx(parts[name].item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(loss.item(), rel=1e-6)
    out32 = compute_objective(_cast(emb, torch.float32), ObjectiveConfig(kind="uncha"), "lorentz")
    for name in ("contrastive", "entail", "loss"):
        assert abs(out32[name].item() - out[name].item()) <= 2e-5 * abs(out[name].item()), name
    # k = 2: their box -> whole columns repeat each caption per box (k - 1 copies of the
    # positive count as negatives); ours are the B whole embeddings, so the two differ
    emb2 = make_embeddings(B=3, k=2, seed=4)
    _, parts2 = ref.uncha_reference_loss(
        emb2.image, emb2.text, emb2.box_image, emb2.box_text, emb2.curv, (9.0, 20.0, 1 / 0.06)
    )
    out2 = compute_objective(emb2, ObjectiveConfig(kind="uncha"), "lorentz")
    assert out2["contrastive"].item() < parts2["contrastive"].item() - 0.1
    assert out2["entail"].item() == pytest.approx(parts2["entail"].item(), rel=1e-6)


def test_uncha_gradcheck_and_learnable_scales():
    from hyvl.objectives.objective import uncha_calibration, uncha_uncertainty

    emb = make_embeddings(B=3, k=1, D=3, seed=5)
    # The weights exp(-u/2) and the calibration's residual are detached by design, so the loss
    # is checked against finite differences where nothing detached moves: the whole
    # embeddings, curvature and scales without the calibration ...
    cfg = ObjectiveConfig(kind="uncha", uncha_calibration_weight=0.0)
    leaves = [emb.image, emb.text, emb.logit_scale]
    leaves = [t.clone().requires_grad_(True) for t in leaves]
    scales = (
        torch.tensor(math.log(20.0), dtype=torch.float64, requires_grad=True),
        torch.tensor(math.log(15.0), dtype=torch.float64, requires_grad=True),
    )

    def f(image, text, logit_scale, *log_scales):
        e = Embeddings(image, text, emb.box_image, emb.box_text, emb.curv, logit_scale)
        return compute_objective(e, cfg, "lorentz", uncha_log_scales=log_scales)["loss"]

    assert torch.autograd.gradcheck(f, (*leaves, *scales), eps=1e-6, atol=1e-5, fast_mode=True)
    # ... and the calibration through the uncertainty of the boxes (residual held fixed)
    residual = torch.rand(3, dtype=torch.float64)
    box = emb.box_image.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: uncha_calibration(residual, uncha_uncertainty(x), 10.0, 1 / 3), (box,)
    )
    cfg = ObjectiveConfig(kind="uncha")
    # the objective owns the two scales as parameters (trained with the model, clamped at 100)
    objective = build_objective(cfg, "lorentz")
    with torch.no_grad():
        objective.local_logit_scale.fill_(10.0)
    objective(_cast(emb, torch.float32))["loss"].backward()
    assert objective.local_logit_scale.item() == pytest.approx(math.log(100.0))
    assert objective.global_local_logit_scale.grad.abs() > 0


# ----------------------------------------------------------------------------------------------
# ATMG
# ----------------------------------------------------------------------------------------------


def test_atmg_equals_transcription_authors_code_and_fp32():
    emb = make_embeddings(B=5, seed=6)
    cfg = ObjectiveConfig(kind="atmg")
    out = compute_objective(emb, cfg, "lorentz")
    for name, value in ref_atmg(emb).items():
        torch.testing.assert_close(out[name].item(), value, rtol=1e-9, atol=1e-10, msg=name)
    theirs = _tool("atmg_reference").atmg_reference_loss(
        emb.image, emb.text, emb.curv, emb.logit_scale
    )
    assert out["loss"].item() == pytest.approx(theirs.item(), rel=1e-6)
    assert set(out) == {"loss", "contrastive", "contrastive_image_text",
                        "contrastive_text_image", "logit_scale", "curv"}  # fmt: skip
    # logits: angle is another objective (the text is the apex both ways)
    angle_loss = compute_objective(emb, ObjectiveConfig(kind="clip", logits="angle"), "lorentz")
    assert (
        abs(angle_loss["contrastive_image_text"].item() - out["contrastive_image_text"].item())
        > 0.1
    )
    out32 = compute_objective(_cast(emb, torch.float32), cfg, "lorentz")
    assert abs(out32["loss"].item() - out["loss"].item()) <= 2e-5 * out["loss"].item()
    small = make_embeddings(B=3, D=3, seed=7)
    leaves = [t.clone().requires_grad_(True) for t in (small.image, small.text, small.curv)]

    def f(image, text, curv):
        e = Embeddings(image, text, curv=curv, logit_scale=small.logit_scale)
        return compute_objective(e, cfg, "lorentz")["loss"]

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("cfg,geometry,match", [
    (dict(kind="atmg"), "euclidean", "kind='atmg' uses exterior angles"),
    (dict(kind="atmg", logits="angle"), "lorentz", "forms ATMG's own angle logits"),
    (dict(kind="uncha", logits="angle"), "lorentz", "logits='angle' is not defined for it"),
])  # fmt: skip
def test_recent_objectives_refuse_meaningless_combinations(cfg, geometry, match):
    with pytest.raises(ConfigError, match=match):
        build_objective(ObjectiveConfig(**cfg), geometry)


# ----------------------------------------------------------------------------------------------
# PHyCLIP: a product of Lorentz factors
# ----------------------------------------------------------------------------------------------


def product_embeddings(B=4, F=3, d=2, seed=0, dtype=torch.float64):
    """Points whose every factor lies 0.4-1.4 from the origin's tangent centre (outside the
    cones' 2K ball, where the authors' eps clamps would move the apertures)."""
    g = torch.Generator().manual_seed(seed)
    curv = torch.tensor([0.6, 1.0, 1.7][:F], dtype=torch.float64)

    def lift(n):
        v = torch.randn(n, F, d, generator=g, dtype=torch.float64)
        v = v / v.norm(dim=-1, keepdim=True) * (0.4 + torch.rand(n, F, 1, generator=g).double())
        return L.exp_map0(v, curv).flatten(-2)

    emb = Embeddings(lift(B), lift(B), lift(B), lift(B), curv, torch.tensor(7.0).double())
    return _cast(emb, dtype) if dtype != torch.float64 else emb


def ref_phyclip(emb, F):
    """PHyCLIP (Yoshikawa & Matsubara 2026): the mean of the factors' distances in HyCoCLIP's
    four CEs, and HyCoCLIP's four cone terms per factor, averaged over factors."""
    cs, s = emb.curv.tolist(), emb.logit_scale.item()

    def split(t):
        return [[row[f * (len(row) // F) : (f + 1) * (len(row) // F)] for f in range(F)]
                for row in t.tolist()]  # fmt: skip

    img, txt, bimg, btxt = (split(t) for t in (emb.image, emb.text, emb.box_image, emb.box_text))

    def neg(x, y):
        return -sum(dist(x[f], y[f], cs[f]) for f in range(F)) / F

    t = list(range(len(img)))
    contrastive = 0.25 * (
        mean_ce(img, txt, t, neg, s) + mean_ce(txt, img, t, neg, s)
        + mean_ce(bimg, txt, t, neg, s) + mean_ce(btxt, img, t, neg, s)
    )  # fmt: skip

    def cone(apex, child, k):
        per_row = [
            sum(max(0.0, angle(a[f], b[f], cs[f]) - k * aperture(a[f], cs[f])) for f in range(F))
            / F
            for a, b in zip(apex, child, strict=True)
        ]
        return sum(per_row) / len(per_row)

    entail = 0.5 * (
        cone(txt, img, 0.7) + cone(btxt, bimg, 0.7) + cone(bimg, img, 1.2) + cone(btxt, txt, 1.2)
    )
    return {"contrastive": contrastive, "entail": entail, "loss": contrastive + 0.2 * entail}


def test_phyclip_equals_transcription_authors_code_fp32_and_gradcheck():
    emb = product_embeddings()
    cfg = ObjectiveConfig(kind="phyclip")
    out = compute_objective(emb, cfg, "lorentz_product")
    for name, value in ref_phyclip(emb, 3).items():
        torch.testing.assert_close(out[name].item(), value, rtol=1e-7, atol=1e-10, msg=name)
    assert out["curv"].item() == pytest.approx(emb.curv.mean().item())  # logged: the mean
    loss, parts = _tool("phyclip_reference").phyclip_reference_loss(
        emb.image, emb.text, emb.box_image, emb.box_text, emb.curv, emb.logit_scale
    )
    for name in ("contrastive", "entail"):  # their 1e-6 clamps are the only difference
        assert out[name].item() == pytest.approx(parts[name].item(), rel=1e-5)
    out32 = compute_objective(_cast(emb, torch.float32), cfg, "lorentz_product")
    for name in ("contrastive", "entail", "loss"):
        assert abs(out32[name].item() - out[name].item()) <= 2e-5 * abs(out[name].item()), name
    small = product_embeddings(B=3, F=2, d=2, seed=1)
    names = ("image", "text", "box_image", "box_text", "curv", "logit_scale")
    leaves = [getattr(small, n).clone().requires_grad_(True) for n in names]

    def f(*args):
        e = Embeddings(*args[:4], curv=args[4], logit_scale=args[5])
        return compute_objective(e, cfg, "lorentz_product")["loss"]

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.fixture(scope="module")
def phyclip_model():
    import hyvl

    return hyvl.create_model("phyclip_tiny").eval()


def test_product_space_lift_search_and_cones(phyclip_model):
    from hyvl.geometry import get_geometry
    from hyvl.train.health import embedding_stats

    space = get_geometry("lorentz_product")
    model = phyclip_model
    assert model.log_curv.shape == model.visual_alpha.shape == (16,)  # 128-d = 16 factors of 8
    feats = torch.randn(5, 128, dtype=torch.float64)
    x = model.space.lift(feats.float(), model.visual_alpha, model.curv)
    # each factor is its own hyperboloid's exp_map0 of alpha_f * v_f
    f3 = L.exp_map0(feats[:, 24:32].float() * model.visual_alpha[3].exp(), model.curv[3])
    torch.testing.assert_close(x[:, 24:32], f3)
    emb = product_embeddings(B=4, F=3, d=2)
    d = space.pairwise_distance(emb.image, emb.text, emb.curv)
    ref = [[-v for v in row] for row in
           [[0.0] * 4 for _ in range(4)]]  # fmt: skip
    for i in range(4):
        for j in range(4):
            xs, ys = emb.image[i].view(3, 2), emb.text[j].view(3, 2)
            ref[i][j] = sum(dist(xs[f].tolist(), ys[f].tolist(), emb.curv[f].item())
                            for f in range(3)) / 3  # fmt: skip
    torch.testing.assert_close(d, torch.tensor(ref, dtype=torch.float64), rtol=1e-7, atol=0)
    # the mean of points is per factor; distance to the origin the factors' mean
    pts = torch.stack([emb.image, emb.text], dim=1)
    m = space.mean(pts, emb.curv)
    for f in range(3):
        sl = slice(2 * f, 2 * f + 2)
        torch.testing.assert_close(
            m[:, sl], L.exp_map0(L.log_map0(pts[:, :, sl], emb.curv[f]).mean(1), emb.curv[f])
        )
    d0 = space.dist0(emb.image, emb.curv)
    torch.testing.assert_close(
        d0,
        torch.stack([L.dist0(emb.image[:, 2 * f : 2 * f + 2], emb.curv[f]) for f in range(3)]).mean(
            0
        ),
    )
    # in the cone = in every factor's cone
    apex = emb.text
    child = torch.cat([apex[:, :4], emb.image[:, 4:]], dim=1)  # factor 3 moved off
    inside = space.in_cone(apex, child, emb.curv, 1.0, 0.1)
    last = L.oxy_angle(apex[:, 4:], child[:, 4:], emb.curv[2]) <= L.half_aperture(
        apex[:, 4:], emb.curv[2]
    )
    assert torch.equal(inside, last)
    stats = embedding_stats(emb, contrastive_loss=1.0, global_batch=4)
    assert stats["d0_image"] == pytest.approx(float(d0.mean()))
    assert 0.0 <= stats["in_cone"] <= 1.0


def test_product_space_refuses_search_and_onnx(phyclip_model, monkeypatch, tmp_path):
    import hyvl
    from hyvl.errors import HyvlError
    from hyvl.models.checkpoint import load_model, save
    from hyvl.models.onnx_export import export_onnx
    from hyvl.search import index as index_mod

    model = phyclip_model
    # an export loads back with its 16 curvatures and alphas
    save(model, tmp_path / "export")
    back = load_model(tmp_path / "export").eval()
    assert torch.equal(back.curv, model.curv) and back.space.product
    monkeypatch.setattr(hyvl, "load", lambda *a, **k: (model, None, None))
    (tmp_path / "t.txt").write_text("a dog\n")
    one_line = r"^hyvl index \(search by inner products\) is not supported on a product of Lorentz factors[^\n]*$"
    with pytest.raises(HyvlError, match=one_line):
        index_mod.build_index("ckpt", texts=tmp_path / "t.txt")
    from argparse import Namespace

    from hyvl.cli import traverse as traverse_cli
    from hyvl.cli import viz as viz_cli

    with pytest.raises(HyvlError, match=r"^hyvl viz \(pictures of one hyperbolic plane\) is not"):
        viz_cli.run(Namespace(checkpoint="ckpt"))
    args = Namespace(index=None, checkpoint="ckpt", texts=str(tmp_path / "t.txt"))
    with pytest.raises(HyvlError, match=r"^hyvl traverse \(geodesics of one hyperboloid\) is"):
        traverse_cli.run(args)
    with pytest.raises(HyvlError, match="ONNX export .* not supported on a product"):
        export_onnx(model, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()
    for cfg, match in [
        (dict(kind="phyclip"), "needs a product of Lorentz factors"),
        (dict(kind="phyclip", logits="angle"), "not defined on a product"),
    ]:
        geometry = "lorentz" if cfg.get("logits") != "angle" else "lorentz_product"
        with pytest.raises(ConfigError, match=match):
            build_objective(ObjectiveConfig(**cfg), geometry)


def test_suite_prints_uncha_published_numbers_beside_the_papers_three():
    from hyvl.evaluation import catalog
    from hyvl.evaluation.suite import markdown, table_rows

    def res(size):
        row = {"metric": "mean_per_class", "value": 1.0, "num_samples": 10,
               "published": catalog.published_for("zeroshot", "imagenet", None, size)}  # fmt: skip
        return {"datasets": {"imagenet": row}, "retrieval": {}, "compositional": {},
                "hierarchy": {}, "missing": {}, "compare_size": size, "mean": 1.0,
                "mean_over": ["imagenet"]}  # fmt: skip

    row = table_rows(res("vit_b"))[0]
    assert (row["hycoclip"], row["uncha"]) == (45.8, 48.8)
    text = markdown(res("vit_b"))
    assert "| clip | meru | hycoclip | uncha |" in text
    assert "Source: Kim et al., UNCHA" in text and "Source: Pal et al." in text
    # no source, no column: ViT-L has no UNCHA number
    assert "uncha" not in table_rows(res("vit_l"))[0]
