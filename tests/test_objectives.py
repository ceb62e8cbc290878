"""Objectives against an independent float64 transcription of the papers' definitions.

The reference below loops over rows and pairs with Python ``math`` (MERU's closed forms:
``acosh(-c <x, y>_L)``, the law-of-cosines exterior angle, ``asin(2K / r)``), sharing no code
with ``hyvl.lorentz`` or ``hyvl.objectives``.
"""

from __future__ import annotations

import math

import pytest
import torch

from hyvl import lorentz as L
from hyvl.config import ObjectiveConfig, from_dict
from hyvl.errors import ConfigError
from hyvl.models.embeddings import Embeddings
from hyvl.objectives import build_objective, compute_objective
from hyvl.objectives import distributed as dist_mod

# ----------------------------------------------------------------------------------------------
# float64 reference (pure Python)
# ----------------------------------------------------------------------------------------------


def _t(x: list[float], c: float) -> float:
    return math.sqrt(1.0 / c + sum(v * v for v in x))


def _lorentz_inner(x, y, c):
    return sum(a * b for a, b in zip(x, y, strict=True)) - _t(x, c) * _t(y, c)


def ref_dist(x, y, c):
    return math.acosh(max(1.0, -c * _lorentz_inner(x, y, c))) / math.sqrt(c)


def ref_aperture(x, c, K=0.1):
    return math.asin(min(1.0, 2 * K / (math.sqrt(c) * math.sqrt(sum(v * v for v in x)))))


def ref_angle(x, y, c):
    """MERU's exterior angle at x of the triangle (origin, x, y), law of cosines."""
    cxy = c * _lorentz_inner(x, y, c)
    numer = _t(y, c) + cxy * _t(x, c)
    denom = math.sqrt(sum(v * v for v in x)) * math.sqrt(cxy * cxy - 1)
    return math.acos(max(-1.0, min(1.0, numer / denom)))


def ref_sim(geometry, logits, rows, cols, rows_are_apex, c):
    out = []
    for r in rows:
        line = []
        for q in cols:
            if geometry == "euclidean":
                line.append(sum(a * b for a, b in zip(r, q, strict=True)))
            elif logits == "distance":
                line.append(-ref_dist(r, q, c))
            else:
                line.append(-(ref_angle(r, q, c) if rows_are_apex else ref_angle(q, r, c)))
        out.append(line)
    return out


def ref_row_loss(logit_row, target, loss, bias):
    if loss == "softmax":
        m = max(logit_row)
        return -(logit_row[target] - m) + math.log(sum(math.exp(v - m) for v in logit_row))
    total = 0.0
    for j, z in enumerate(logit_row):
        s = 1.0 if j == target else -1.0
        total += math.log1p(math.exp(-s * (z + bias)))  # -log sigmoid(s * (z + b))
    return total


def ref_contrastive(geometry, logits, loss, rows, cols, rows_are_apex, targets, c, scale, bias):
    sims = ref_sim(geometry, logits, rows, cols, rows_are_apex, c)
    losses = [
        ref_row_loss([scale * v for v in line], t, loss, bias)
        for line, t in zip(sims, targets, strict=True)
    ]
    return sum(losses) / len(losses)


def ref_violation(apexes, children, c, k, K=0.1):
    vals = [
        max(0.0, ref_angle(a, b, c) - k * ref_aperture(a, c, K))
        for a, b in zip(apexes, children, strict=True)
    ]
    return sum(vals) / len(vals)


def ref_objective(emb: Embeddings, cfg: ObjectiveConfig, geometry: str, bias: float) -> dict:
    """All terms from the papers' definitions, one process, targets = arange."""
    img, txt = emb.image.tolist(), emb.text.tolist()
    c = float(emb.curv) if emb.curv is not None else 0.0
    s = float(emb.logit_scale)
    B = len(img)
    tg = list(range(B))
    args = (geometry, cfg.logits, cfg.loss)
    out = {
        "contrastive_image_text": ref_contrastive(*args, img, txt, False, tg, c, s, bias),
        "contrastive_text_image": ref_contrastive(*args, txt, img, True, tg, c, s, bias),
    }
    if cfg.kind == "hycoclip":
        bimg, btxt = emb.box_image.tolist(), emb.box_text.tolist()
        k = len(bimg) // B
        btg = [i // k for i in range(len(bimg))]
        out["contrastive_boximage_text"] = ref_contrastive(*args, bimg, txt, False, btg, c, s, bias)
        out["contrastive_boxtext_image"] = ref_contrastive(*args, btxt, img, True, btg, c, s, bias)
        out["contrastive"] = 0.25 * sum(v for n, v in out.items() if n.startswith("contrastive_"))
        if geometry == "lorentz":
            img_per_box = [img[i // k] for i in range(len(bimg))]
            txt_per_box = [txt[i // k] for i in range(len(bimg))]
            out["entail_text_image"] = ref_violation(txt, img, c, 0.7)
            out["entail_boxtext_boximage"] = ref_violation(btxt, bimg, c, 0.7)
            out["entail_boximage_image"] = ref_violation(bimg, img_per_box, c, 1.2)
            out["entail_boxtext_text"] = ref_violation(btxt, txt_per_box, c, 1.2)
            out["entail"] = 0.5 * sum(v for n, v in out.items() if n.startswith("entail_"))
    else:
        out["contrastive"] = 0.5 * (out["contrastive_image_text"] + out["contrastive_text_image"])
        if cfg.kind == "meru":
            out["entail_text_image"] = ref_violation(txt, img, c, 1.0)
            out["entail"] = out["entail_text_image"]
    out["loss"] = out["contrastive"] + 0.2 * out.get("entail", 0.0)
    return out


# ----------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------


def make_embeddings(
    geometry="lorentz", B=4, k=2, D=6, dtype=torch.float64, seed=0, curv=1.3, scale=7.0
) -> Embeddings:
    g = torch.Generator().manual_seed(seed)

    def pts(n, spread):
        v = torch.randn(n, D, generator=g, dtype=torch.float64) * spread
        if geometry == "euclidean":
            return torch.nn.functional.normalize(v, dim=-1).to(dtype)
        return L.exp_map0(v, curv).to(dtype)

    # Texts nearer the origin than images, as after training; spreads keep angles away from 0/pi.
    return Embeddings(
        image=pts(B, 0.9),
        text=pts(B, 0.5),
        box_image=pts(B * k, 0.7),
        box_text=pts(B * k, 0.35),
        curv=torch.tensor(curv, dtype=dtype) if geometry == "lorentz" else None,
        logit_scale=torch.tensor(scale, dtype=dtype),
    )


CASES = [
    (kind, geometry, logits, loss)
    for kind in ("clip", "meru", "hycoclip")
    for geometry in ("lorentz", "euclidean")
    for logits in ("distance", "angle")
    for loss in ("softmax", "sigmoid")
    if not (geometry == "euclidean" and (logits == "angle" or kind == "meru"))
]


def _cfg(kind, geometry, logits, loss, **kw) -> ObjectiveConfig:
    if geometry == "euclidean" and kind == "hycoclip":
        kw.setdefault("entail_weight", 0.0)
    return ObjectiveConfig(kind=kind, logits=logits, loss=loss, **kw)


# ----------------------------------------------------------------------------------------------
# every term against the reference
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,geometry,logits,loss", CASES)
def test_terms_equal_float64_reference(kind, geometry, logits, loss):
    cfg = _cfg(kind, geometry, logits, loss)
    emb = make_embeddings(geometry)
    bias = -2.5  # not the init, so a bias that is ignored would show
    out = compute_objective(
        emb, cfg, geometry, sigmoid_bias=torch.tensor(bias, dtype=torch.float64)
    )
    ref = ref_objective(emb, cfg, geometry, bias)
    if cfg.entail_weight == 0:
        ref["loss"] = ref["contrastive"]
    for name, value in ref.items():
        assert name in out, f"term {name} missing from {sorted(out)}"
        assert out[name].dtype == torch.float64
        torch.testing.assert_close(out[name].item(), value, rtol=1e-9, atol=1e-10, msg=name)
    # No term the papers don't define sneaks into the loss.
    extra = set(out) - set(ref) - {"logit_scale", "curv", "sigmoid_bias"}
    assert not extra, extra


@pytest.mark.parametrize("kind", ["clip", "meru", "hycoclip"])
def test_fp32_matches_float64_reference(kind):
    cfg = ObjectiveConfig(kind=kind)
    emb64 = make_embeddings(seed=3)
    emb32 = Embeddings(
        *(t.float() for t in (emb64.image, emb64.text, emb64.box_image, emb64.box_text)),
        curv=emb64.curv.float(),
        logit_scale=emb64.logit_scale.float(),
    )
    out = compute_objective(emb32, cfg, "lorentz")
    ref = ref_objective(emb64, cfg, "lorentz", cfg.sigmoid_bias_init)
    for name, value in ref.items():
        assert out[name].dtype == torch.float32
        assert abs(out[name].item() - value) <= 2e-5 * max(1.0, abs(value)), name


def test_term_names_per_kind():
    names = {
        kind: set(compute_objective(make_embeddings(), ObjectiveConfig(kind=kind), "lorentz"))
        for kind in ("clip", "meru", "hycoclip")
    }
    common = {"loss", "contrastive", "contrastive_image_text", "contrastive_text_image"}
    assert names["clip"] == common | {"logit_scale", "curv"}
    assert names["meru"] == common | {"entail", "entail_text_image", "logit_scale", "curv"}
    assert names["hycoclip"] == common | {
        "contrastive_boximage_text",
        "contrastive_boxtext_image",
        "entail",
        "entail_text_image",
        "entail_boxtext_boximage",
        "entail_boximage_image",
        "entail_boxtext_text",
        "logit_scale",
        "curv",
    }


# ----------------------------------------------------------------------------------------------
# hand-computed cases
# ----------------------------------------------------------------------------------------------


def test_clip_hand_computed():
    # Two orthogonal unit pairs, scale 1: logits [[1, 0], [0, 1]], each CE = log(1 + e^-1).
    e = torch.eye(2, dtype=torch.float64)
    emb = Embeddings(image=e, text=e.clone(), logit_scale=torch.tensor(1.0, dtype=torch.float64))
    out = compute_objective(emb, ObjectiveConfig(kind="clip"), "euclidean")
    expected = math.log(1 + math.exp(-1))
    assert out["loss"].item() == pytest.approx(expected, rel=1e-12)
    # SigLIP on the same: per row -log s(1 + b) - log s(-(0 + b)), b = -10.
    out = compute_objective(emb, ObjectiveConfig(kind="clip", loss="sigmoid"), "euclidean")
    b = -10.0
    expected = math.log1p(math.exp(-(1 + b))) + math.log1p(math.exp(b))
    assert out["loss"].item() == pytest.approx(expected, rel=1e-12)


def test_meru_entailment_hand_computed():
    # Apex at distance r from the origin on the first axis (unit curvature, K = 0.1).
    # An image further out on the same ray sits on the cone's axis (angle 0): no loss.
    # An image on the opposite side is behind the apex: exterior angle pi, loss pi - asin(0.2/r).
    r = 0.8
    text = torch.tensor([[r, 0.0], [r, 0.0]], dtype=torch.float64)
    image = torch.tensor([[2.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    emb = Embeddings(
        image=image,
        text=text,
        curv=torch.tensor(1.0, dtype=torch.float64),
        logit_scale=torch.tensor(1.0, dtype=torch.float64),
    )
    out = compute_objective(emb, ObjectiveConfig(kind="meru"), "lorentz")
    expected = 0.5 * (0.0 + (math.pi - math.asin(0.2 / r)))
    assert out["entail_text_image"].item() == pytest.approx(expected, rel=1e-9)
    assert out["loss"].item() == pytest.approx(
        out["contrastive"].item() + 0.2 * expected, rel=1e-12
    )


def test_hycoclip_box_targets_are_sample_major():
    # k = 2 boxes per sample: if the boxes of sample i equal its whole image/text, the box CEs
    # equal the whole-image CEs; any other assignment of box rows to samples would not.
    emb = make_embeddings(B=3, k=1)
    k = 2
    emb.box_image = emb.image.repeat_interleave(k, dim=0)
    emb.box_text = emb.text.repeat_interleave(k, dim=0)
    out = compute_objective(emb, ObjectiveConfig(kind="hycoclip"), "lorentz")
    torch.testing.assert_close(out["contrastive_boximage_text"], out["contrastive_image_text"])
    torch.testing.assert_close(out["contrastive_boxtext_image"], out["contrastive_text_image"])
    # A box that IS its sample's image lies at its own apex: zero box->image violation.
    assert out["entail_boximage_image"].item() == 0.0
    shuffled = Embeddings(**{**emb.__dict__, "box_image": emb.box_image.flip(0)})
    out2 = compute_objective(shuffled, ObjectiveConfig(kind="hycoclip"), "lorentz")
    assert out2["contrastive_boximage_text"] > out["contrastive_boximage_text"] + 1e-3


def test_weights_and_factors_come_from_config():
    emb = make_embeddings()
    base = compute_objective(emb, ObjectiveConfig(kind="hycoclip"), "lorentz")
    cfg = ObjectiveConfig(
        kind="hycoclip", entail_weight=0.5, hycoclip_entail_factor=1.0, inter_aperture_scale=0.3
    )
    out = compute_objective(emb, cfg, "lorentz")
    ref = ref_violation(emb.text.tolist(), emb.image.tolist(), 1.3, 0.3)
    assert out["entail_text_image"].item() == pytest.approx(ref, rel=1e-9)
    assert out["entail_text_image"] != base["entail_text_image"]
    total = sum(v for n, v in out.items() if n.startswith("entail_"))
    torch.testing.assert_close(out["entail"], total)
    torch.testing.assert_close(out["loss"], out["contrastive"] + 0.5 * total)
    zero = compute_objective(emb, ObjectiveConfig(kind="meru", entail_weight=0.0), "lorentz")
    torch.testing.assert_close(zero["loss"], zero["contrastive"])
    assert zero["entail"] > 0  # still logged


# ----------------------------------------------------------------------------------------------
# targets carry the process's offset into the gathered batch
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["clip", "meru", "hycoclip"])
def test_targets_offset_by_gathered_rows_before_this_rank(kind, monkeypatch):
    """Pretend to be rank 1 of 2, with 3 rows of rank 0 gathered in front of our 2."""
    full = make_embeddings(B=5, k=2, seed=7)
    before = 3
    local = Embeddings(
        image=full.image[before:],
        text=full.text[before:],
        box_image=full.box_image[before * 2 :],
        box_text=full.box_text[before * 2 :],
        curv=full.curv,
        logit_scale=full.logit_scale,
    )
    by_id = {id(local.image): full.image, id(local.text): full.text}

    def fake_gather(x):
        return by_id[id(x)], before

    monkeypatch.setattr(dist_mod, "world_size", lambda: 2)
    monkeypatch.setattr(dist_mod, "gather_with_grad", fake_gather)
    cfg = ObjectiveConfig(kind=kind)
    out = compute_objective(local, cfg, "lorentz")
    c, s = float(full.curv), float(full.logit_scale)
    img, txt = full.image.tolist(), full.text.tolist()
    targets = [3, 4]
    # Rank-local share of the global mean: (world / global rows) * sum over local rows.
    share = 2 / 5 * 2
    want_it = share * ref_contrastive(
        "lorentz", "distance", "softmax", img[3:], txt, False, targets, c, s, 0.0
    )
    want_ti = share * ref_contrastive(
        "lorentz", "distance", "softmax", txt[3:], img, True, targets, c, s, 0.0
    )
    assert out["contrastive_image_text"].item() == pytest.approx(want_it, rel=1e-9)
    assert out["contrastive_text_image"].item() == pytest.approx(want_ti, rel=1e-9)
    if kind == "hycoclip":
        box_targets = [3, 3, 4, 4]
        want = share * ref_contrastive(
            "lorentz", "distance", "softmax", full.box_image.tolist()[6:], txt, False,
            box_targets, c, s, 0.0,
        )  # fmt: skip
        assert out["contrastive_boximage_text"].item() == pytest.approx(want, rel=1e-9)


def test_local_negatives_only_when_gather_disabled(monkeypatch):
    """gather_with_grad=False: local columns, local targets, still weighted as a global mean."""
    full = make_embeddings(B=5, k=2, seed=11)
    local = Embeddings(
        image=full.image[3:],
        text=full.text[3:],
        curv=full.curv,
        logit_scale=full.logit_scale,
    )

    def no_gather(x):
        raise AssertionError("gathered although objective.gather_with_grad is False")

    monkeypatch.setattr(dist_mod, "world_size", lambda: 2)
    monkeypatch.setattr(dist_mod, "gather_with_grad", no_gather)
    monkeypatch.setattr(dist_mod, "gather_sizes", lambda n, device="cpu": [3, n])
    out = compute_objective(local, ObjectiveConfig(kind="clip", gather_with_grad=False), "lorentz")
    c, s = float(full.curv), float(full.logit_scale)
    img, txt = local.image.tolist(), local.text.tolist()
    want = (
        (2 / 5)
        * 2
        * ref_contrastive("lorentz", "distance", "softmax", img, txt, False, [0, 1], c, s, 0.0)
    )
    assert out["contrastive_image_text"].item() == pytest.approx(want, rel=1e-9)
    # Without a process group (or with distributed_gather=False) nothing is weighted.
    plain = compute_objective(
        local, ObjectiveConfig(kind="clip"), "lorentz", distributed_gather=False
    )
    assert plain["contrastive_image_text"].item() == pytest.approx(want * 5 / 4, rel=1e-9)


# ----------------------------------------------------------------------------------------------
# precision, gradients, parameters, errors
# ----------------------------------------------------------------------------------------------


def _leaf_embeddings(dtype, kind_seed=0):
    emb = make_embeddings(
        dtype=torch.float32, seed=kind_seed, D=16, B=6, k=2, curv=1.0, scale=1 / 0.07
    )
    leaves = {}
    for name in ("image", "text", "box_image", "box_text", "curv", "logit_scale"):
        t = getattr(emb, name).to(dtype).detach().requires_grad_(True)
        leaves[name] = t
    return Embeddings(**leaves), leaves


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind,logits,loss", [
    ("clip", "distance", "softmax"), ("meru", "distance", "softmax"),
    ("meru", "angle", "sigmoid"), ("hycoclip", "distance", "softmax"),
    ("hycoclip", "angle", "softmax"), ("hycoclip", "distance", "sigmoid"),
])  # fmt: skip
def test_gradients_finite_at_init(dtype, kind, logits, loss):
    emb, leaves = _leaf_embeddings(dtype)
    objective = build_objective(ObjectiveConfig(kind=kind, logits=logits, loss=loss), "lorentz")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = objective(emb)
    assert out["loss"].dtype == torch.float32  # fp32 even from bf16 inputs under autocast
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    used = ["image", "text", "curv", "logit_scale"]
    if kind == "hycoclip":
        used += ["box_image", "box_text"]
    for name in used:
        grad = leaves[name].grad
        assert grad is not None and torch.isfinite(grad.float()).all(), name
        assert grad.abs().sum() > 0, name
    if loss == "sigmoid":
        assert torch.isfinite(objective.sigmoid_bias.grad) and objective.sigmoid_bias.grad != 0


def test_bf16_loss_close_to_fp32():
    emb32, _ = _leaf_embeddings(torch.float32)
    emb16, _ = _leaf_embeddings(torch.bfloat16)
    cfg = ObjectiveConfig(kind="hycoclip")
    a = compute_objective(emb32, cfg, "lorentz")["loss"].item()
    b = compute_objective(emb16, cfg, "lorentz")["loss"].item()
    # Only the inputs' bf16 rounding (~3 significant digits) separates them.
    assert abs(a - b) < 2e-2 * abs(a)


def test_sigmoid_bias_is_a_learnable_parameter():
    objective = build_objective(ObjectiveConfig(loss="sigmoid"), "lorentz")
    params = dict(objective.named_parameters())
    assert list(params) == ["sigmoid_bias"] and params["sigmoid_bias"].item() == -10.0
    assert not list(build_objective(ObjectiveConfig(), "lorentz").parameters())
    out = objective(make_embeddings(dtype=torch.float32))
    assert out["sigmoid_bias"].item() == -10.0
    # The module's own parameter is what the loss uses (reference with the same bias).
    with torch.no_grad():
        objective.sigmoid_bias.fill_(2.0)
    emb = make_embeddings()
    ref = ref_objective(emb, objective.cfg, "lorentz", 2.0)["loss"]
    assert objective(emb)["loss"].item() == pytest.approx(ref, rel=1e-9)


def test_config_from_yaml_mapping_builds_objective():
    cfg = from_dict(ObjectiveConfig, {"kind": "hycoclip", "logits": "angle", "loss": "sigmoid"})
    out = build_objective(cfg, "lorentz")(make_embeddings(dtype=torch.float32))
    assert torch.isfinite(out["loss"])


@pytest.mark.parametrize("cfg,geometry,match", [
    (ObjectiveConfig(kind="clip", logits="angle"), "euclidean", "logits='angle'"),
    (ObjectiveConfig(kind="meru"), "euclidean", "entail_weight=0"),
    (ObjectiveConfig(kind="hycoclip"), "euclidean", "entailment"),
    (ObjectiveConfig(kind="clip"), "spherical", "geometry"),
])  # fmt: skip
def test_meaningless_combinations_raise_config_error(cfg, geometry, match):
    with pytest.raises(ConfigError, match=match):
        build_objective(cfg, geometry)


def test_negative_entailment_weight_is_refused_at_construction():
    with pytest.raises(ConfigError, match="objective.entail_weight must be >= 0"):
        ObjectiveConfig(entail_weight=-1.0)


def test_hycoclip_without_boxes_names_the_fix():
    emb = make_embeddings(dtype=torch.float32)
    emb.box_image = emb.box_text = None
    with pytest.raises(ConfigError, match="boxes_per_sample"):
        build_objective(ObjectiveConfig(kind="hycoclip"), "lorentz")(emb)


def test_bad_box_shape_is_reported():
    emb = make_embeddings(B=4, k=2, dtype=torch.float32)
    emb.box_text = emb.box_text[:-1]
    with pytest.raises(ValueError, match="box embeddings must be"):
        build_objective(ObjectiveConfig(kind="hycoclip"), "lorentz")(emb)


def test_no_gather_without_process_group():
    x = torch.randn(3, 4, requires_grad=True)
    gathered, offset = dist_mod.gather_with_grad(x)
    assert gathered is x and offset == 0
    assert dist_mod.world_size() == 1 and dist_mod.rank() == 0
    assert dist_mod.gather_sizes(3) == [3]


def test_entailment_warmup_ramps_the_weight_from_zero():
    emb = make_embeddings("lorentz", seed=3)
    cfg = _cfg("hycoclip", "lorentz", "distance", "softmax", entail_warmup_steps=100)
    objective = build_objective(cfg, "lorentz")
    out = {}
    for step in (0, 50, 100, 500):
        objective.step = step
        out[step] = objective(emb)
    assert float(out[0]["entail"]) > 0  # still measured and logged...
    assert float(out[0]["loss"]) == pytest.approx(float(out[0]["contrastive"]))  # ...not trained
    full = float(out[500]["contrastive"] + 0.2 * out[500]["entail"])
    assert float(out[100]["loss"]) == pytest.approx(full) == float(out[500]["loss"])
    half = float(out[50]["contrastive"] + 0.1 * out[50]["entail"])
    assert float(out[50]["loss"]) == pytest.approx(half)
    with pytest.raises(ConfigError, match="entail_warmup_steps"):
        build_objective(
            _cfg("meru", "lorentz", "distance", "softmax", entail_warmup_steps=-1), "lorentz"
        )


@pytest.mark.parametrize("kind", ["meru", "hycoclip"])
def test_entailment_gate_follows_the_contrastive_loss_against_chance(kind):
    """entail_gate: weight x clamp((1 - L / ln N) / gate, 0, 1) from the float64 reference L."""
    emb = make_embeddings("lorentz", B=6, k=2, seed=5, scale=2.0)
    # Pairs that point roughly the same way (loss below chance), not exactly (entailment > 0).
    g = torch.Generator().manual_seed(1)
    whole = L.log_map0(emb.image, 1.3)
    per_box = whole.repeat_interleave(2, dim=0)
    for name, base, r in (
        ("text", whole, 0.6),
        ("box_image", per_box, 0.8),
        ("box_text", per_box, 0.4),
    ):
        noise = 0.3 * torch.randn(base.shape, generator=g, dtype=torch.float64)
        setattr(emb, name, L.exp_map0(r * base + noise, 1.3))
    ref = ref_objective(emb, _cfg(kind, "lorentz", "distance", "softmax"), "lorentz", 0.0)
    below = 1.0 - ref["contrastive"] / math.log(6)  # how far these logits are below chance
    assert 0.2 < below < 0.9
    for gate, share in ((0.9, below / 0.9), (below / 2, 1.0)):
        cfg = _cfg(kind, "lorentz", "distance", "softmax", entail_gate=gate)
        out = compute_objective(emb, cfg, "lorentz")
        torch.testing.assert_close(out["entail_gate"].item(), share, rtol=1e-9, atol=1e-12)
        want = ref["contrastive"] + 0.2 * share * ref["entail"]
        torch.testing.assert_close(out["loss"].item(), want, rtol=1e-9, atol=1e-10)
    # At chance (every logit equal: scale 0) the entailment is off however large it is.
    emb.logit_scale = torch.tensor(0.0, dtype=torch.float64)
    out = compute_objective(
        emb, _cfg(kind, "lorentz", "distance", "softmax", entail_gate=0.1), "lorentz"
    )
    assert float(out["entail"]) > 0 and float(out["entail_gate"]) < 1e-12  # 0 up to rounding
    assert float(out["loss"]) == pytest.approx(float(out["contrastive"]), abs=1e-12)
    # Off by default (the papers' recipe), and refused where ln N is not chance.
    off = compute_objective(emb, _cfg(kind, "lorentz", "distance", "softmax"), "lorentz")
    assert "entail_gate" not in off
    with pytest.raises(ConfigError, match="entail_gate"):
        build_objective(_cfg(kind, "lorentz", "distance", "sigmoid", entail_gate=0.1), "lorentz")


@pytest.mark.parametrize("kind,geometry,logits,loss", CASES)
def test_chunked_logits_give_the_same_loss_and_gradients(kind, geometry, logits, loss):
    """objective.logit_chunk_rows changes memory, not maths: every term and every gradient
    (embeddings, curvature, scale, SigLIP bias) equal to the whole-block computation, with
    chunks that do not divide the rows (B = 5, k = 2: chunks of 2 over 5 and 10 rows)."""
    results = []
    for chunk in (0, 2):
        emb = make_embeddings(geometry, B=5, k=2, seed=4)
        leaves = {}
        for name in ("image", "text", "box_image", "box_text", "curv", "logit_scale"):
            t = getattr(emb, name)
            if t is not None:
                leaves[name] = t.detach().requires_grad_(True)
                setattr(emb, name, leaves[name])
        bias = torch.tensor(-2.5, dtype=torch.float64, requires_grad=True)
        cfg = _cfg(kind, geometry, logits, loss, logit_chunk_rows=chunk)
        out = compute_objective(emb, cfg, geometry, sigmoid_bias=bias)
        out["loss"].backward()
        grads = {n: t.grad for n, t in leaves.items() if t.grad is not None}
        grads["bias"] = bias.grad
        results.append(({n: v.item() for n, v in out.items()}, grads))
    (whole, g_whole), (chunked, g_chunked) = results
    assert whole.keys() == chunked.keys()
    for name in whole:
        assert chunked[name] == pytest.approx(whole[name], rel=1e-12, abs=1e-12), name
    assert g_whole.keys() == g_chunked.keys() and "image" in g_whole
    for name, g in g_whole.items():
        if g is None:
            assert g_chunked[name] is None, name
            continue
        torch.testing.assert_close(g_chunked[name], g, rtol=1e-10, atol=1e-12, msg=name)


# ----------------------------------------------------------------------------------------------
# objective.box_pair_weight: box image <-> box text, same-text boxes positives of each other
# ----------------------------------------------------------------------------------------------


def ref_multi_positive(geometry, loss, rows, cols, rows_are_apex, ids, c, scale, bias):
    """Mean over rows of CE against the uniform distribution over same-id columns (softmax),
    or SigLIP's pairwise loss with every same-id column a positive (sigmoid)."""
    sims = ref_sim(geometry, "distance", rows, cols, rows_are_apex, c)
    total = 0.0
    for r, line in enumerate(sims):
        z = [scale * v for v in line]
        pos = [j for j in range(len(cols)) if ids[j] == ids[r]]
        if loss == "softmax":
            m = max(z)
            lse = m + math.log(sum(math.exp(v - m) for v in z))
            total += sum(lse - z[j] for j in pos) / len(pos)
        else:
            total += sum(
                math.log1p(math.exp(-(1.0 if j in pos else -1.0) * (v + bias)))
                for j, v in enumerate(z)
            )
    return total / len(rows)


@pytest.mark.parametrize("kind,geometry,loss", [
    ("clip", "euclidean", "softmax"), ("meru", "lorentz", "softmax"),
    ("hycoclip", "lorentz", "softmax"), ("meru", "lorentz", "sigmoid"),
])  # fmt: skip
def test_box_pair_counts_every_box_of_the_same_text_as_a_positive(kind, geometry, loss):
    emb = make_embeddings(geometry, B=4, k=2, seed=3)
    # 8 box rows, texts: A B A C B A D C (ids as text_identity would give them)
    emb.box_text_ids = torch.tensor([5, 9, 5, 2, 9, 5, 7, 2])
    cfg = _cfg(kind, geometry, "distance", loss, box_pair_weight=0.5)
    out = compute_objective(emb, cfg, geometry)
    c = float(emb.curv) if emb.curv is not None else 0.0
    s, bias, ids = float(emb.logit_scale), cfg.sigmoid_bias_init, emb.box_text_ids.tolist()
    bimg, btxt = emb.box_image.tolist(), emb.box_text.tolist()
    want_it = ref_multi_positive(geometry, loss, bimg, btxt, False, ids, c, s, bias)
    want_ti = ref_multi_positive(geometry, loss, btxt, bimg, True, ids, c, s, bias)
    assert out["contrastive_boximage_boxtext"].item() == pytest.approx(want_it, rel=1e-9)
    assert out["contrastive_boxtext_boximage"].item() == pytest.approx(want_ti, rel=1e-9)
    pair = 0.5 * (want_it + want_ti)
    assert out["contrastive_boxpair"].item() == pytest.approx(pair, rel=1e-9)
    # the papers' terms are untouched; the pair enters the loss with its weight only
    plain = compute_objective(emb, _cfg(kind, geometry, "distance", loss), geometry)
    assert out["contrastive"].item() == pytest.approx(plain["contrastive"].item(), rel=1e-12)
    assert out["loss"].item() == pytest.approx(plain["loss"].item() + 0.5 * pair, rel=1e-9)
    assert "contrastive_boxpair" not in plain


def test_box_pair_with_distinct_texts_is_the_plain_contrastive_pair():
    """All box texts different: one positive a row, CLIP's loss over (box image, box text)."""
    emb = make_embeddings("lorentz", B=3, k=2, seed=5)
    emb.box_text_ids = torch.arange(6) * 11
    out = compute_objective(emb, ObjectiveConfig(kind="meru", box_pair_weight=1.0), "lorentz")
    as_pairs = Embeddings(
        image=emb.box_image, text=emb.box_text, curv=emb.curv, logit_scale=emb.logit_scale
    )
    want = compute_objective(as_pairs, ObjectiveConfig(kind="meru"), "lorentz")
    assert out["contrastive_boxpair"].item() == pytest.approx(want["contrastive"].item(), rel=1e-12)


def test_box_pair_needs_boxes_and_text_identities():
    emb = make_embeddings("lorentz")
    with pytest.raises(ValueError, match="box_text_ids"):
        compute_objective(emb, ObjectiveConfig(kind="meru", box_pair_weight=1.0), "lorentz")
    emb.box_image = emb.box_text = None
    with pytest.raises(ConfigError, match="box_pair_weight.*data.boxes_per_sample"):
        compute_objective(emb, ObjectiveConfig(kind="meru", box_pair_weight=1.0), "lorentz")
    with pytest.raises(ConfigError, match="uncha.*own box image <-> box text"):
        build_objective(ObjectiveConfig(kind="uncha", box_pair_weight=1.0), "lorentz")


def test_text_identity_is_equal_exactly_for_equal_token_rows():
    from hyvl.models.embeddings import text_identity

    tokens = torch.tensor([[49406, 320, 1125, 49407, 0], [49406, 320, 1126, 49407, 0],
                           [49406, 320, 1125, 49407, 0], [49406, 1125, 320, 49407, 0]])  # fmt: skip
    ids = text_identity(tokens).tolist()
    assert ids[0] == ids[2] and len({ids[0], ids[1], ids[3]}) == 3  # word order counts


def test_box_pair_rows_of_this_rank_meet_every_rank_s_boxes(monkeypatch):
    """Pretend to be rank 1 of 2: our 4 box rows against all 10, same texts across ranks."""
    full = make_embeddings(B=5, k=2, seed=11)
    full.box_text_ids = torch.tensor([1, 2, 3, 1, 2, 4, 1, 3, 5, 2])
    before = 3  # samples of rank 0, i.e. its 6 box rows
    local = Embeddings(
        image=full.image[before:], text=full.text[before:],
        box_image=full.box_image[2 * before :], box_text=full.box_text[2 * before :],
        curv=full.curv, logit_scale=full.logit_scale,
        box_text_ids=full.box_text_ids[2 * before :],
    )  # fmt: skip
    offsets = {id(local.image): 3, id(local.text): 3, id(local.box_image): 6, id(local.box_text): 6}
    whole = {
        id(local.image): full.image, id(local.text): full.text,
        id(local.box_image): full.box_image, id(local.box_text): full.box_text,
    }  # fmt: skip
    monkeypatch.setattr(dist_mod, "world_size", lambda: 2)
    monkeypatch.setattr(dist_mod, "gather_with_grad", lambda x: (whole[id(x)], offsets[id(x)]))
    monkeypatch.setattr(dist_mod, "gather_no_grad", lambda x: full.box_text_ids)
    out = compute_objective(local, ObjectiveConfig(kind="meru", box_pair_weight=1.0), "lorentz")
    c, s = float(full.curv), float(full.logit_scale)
    ids = full.box_text_ids.tolist()
    bimg, btxt = full.box_image.tolist(), full.box_text.tolist()
    share = 2 / 10 * 4  # (world / global box rows) * our 4 rows' sum = their share of the mean

    def ref(rows, cols, apex):
        sims = ref_sim("lorentz", "distance", rows, cols, apex, c)
        total = 0.0
        for r, line in zip(range(6, 10), sims, strict=True):
            z = [s * v for v in line]
            m = max(z)
            lse = m + math.log(sum(math.exp(v - m) for v in z))
            pos = [j for j in range(10) if ids[j] == ids[r]]
            total += sum(lse - z[j] for j in pos) / len(pos)
        return total / 4

    got = out["contrastive_boximage_boxtext"].item()
    assert got == pytest.approx(share * ref(bimg[6:], btxt, False), rel=1e-9)
    got = out["contrastive_boxtext_boximage"].item()
    assert got == pytest.approx(share * ref(btxt[6:], bimg, True), rel=1e-9)
