"""CLIP, MERU and HyCoCLIP objectives: embeddings in, named loss terms out.

Definitions (``N`` = global batch over all processes, local rows against gathered columns):

* contrastive, ``kind: clip | meru``: ``0.5 * (CE(image -> all texts) + CE(text -> all images))``
  over ``scale * similarity``; similarity is ``-d_L(x, y)`` (Lorentz) or ``x . y`` (unit vectors,
  CLIP), or ``-oxy_angle(apex, child)`` with ``logits: angle`` (the text side is the apex).
  The target of local row ``i`` is its global index ``offset + i``.
* contrastive, ``kind: hycoclip`` (Pal et al. 2025, Sec. 3): the mean of four CEs: image -> all
  texts, text -> all images, box image -> all whole texts, box text -> all whole images (a box row
  of sample ``i`` targets sample ``i``).
* entailment, MERU (Desai et al. 2023, Eq. 10): ``mean relu(oxy_angle(text, image) -
  half_aperture(text))``, added with ``entail_weight`` (0.2).
* entailment, HyCoCLIP: ``0.5 * sum`` of four ``mean relu(oxy_angle(apex, child) - k *
  half_aperture(apex))``: text -> image and box text -> box image with ``k = 0.7``; box image ->
  image and box text -> text with ``k = 1.2``; added with ``entail_weight`` (0.2).
* ``kind: uncha`` (Kim et al. 2026, UNCHA; equation numbers as the authors' README cites the
  paper's, whose text was not available here; the formulas are read from their code): HyCoCLIP's boxes with a per-embedding uncertainty
  ``u(x) = softplus(-|x|)`` (``|x|`` the norm of the space components: 0.69 at the origin,
  falling to 0 far out). Contrastive (Eq. 10-11), the sum of three symmetric pairs:
  whole <-> whole (``image -> all texts``, ``text -> all images``, the model's scale ``s``),
  box <-> box (``box image -> all box texts`` and back, scale ``s_l``) and box -> whole
  (``box image -> all whole texts``, ``box text -> all whole images``, scale ``s_gl``) whose
  logits of row ``i`` are multiplied by ``w_i = clamp(exp(-u_i / 2), 0.1, 10)`` (``u_i``
  detached: a box far from the origin, low uncertainty, keeps a sharper softmax); each pair is
  ``0.5 * (CE + CE)``. Entailment (Eq. 14-17) with the piecewise residual
  ``r(a, A, k) = relu(a - k A) + beta * a`` (``a`` the exterior angle, ``A`` the half-aperture,
  ``beta = 0.1``): ``0.5 * mean r(text, image, 0.7) + 0.5 * mean r(box text, box image, 0.7)
  + 0.25 * (mean r(box image, image, 1.2) + mean r(box text, text, 1.2))`` plus, for each box
  modality, the calibration ``alpha * (mean(r_i^det / (2 (e^{u_i} + 1e-6)) + u_i / 2) + H)``
  with ``H = -sum p log(p + 1e-8)``, ``p = softmax(u)`` over the (local) box rows and
  ``alpha = 10``; added with ``entail_weight`` (0.2).
* ``kind: atmg`` (Ramasinghe et al. 2024, ATMG): two CEs without entailment, text -> all images
  over ``-scale * oxy_angle(text_i, image_j)`` and image -> all texts over
  ``+scale * oxy_angle(image_i, text_j)`` (the image is the apex and a large exterior angle
  means the text lies towards the origin). ``logits: angle`` is not this: it uses
  ``-oxy_angle(text, image)`` in both directions.
* ``kind: phyclip`` (Yoshikawa & Matsubara 2026, PHyCLIP) on a ``lorentz_product`` model
  (:class:`hyvl.geometry.LorentzProduct`): HyCoCLIP's four contrastive terms over the l1-product
  distance (the mean of the factors' geodesic distances) and HyCoCLIP's four entailment terms
  with each ``relu(oxy_angle - k * half_aperture)`` taken per factor and averaged over factors;
  the same weights (0.25 per CE, 0.5 x the entailment sum, ``entail_weight`` 0.2).
* ``box_pair_weight`` (not in CLIP, MERU or HyCoCLIP; off by default; UNCHA has a pair of its
  own): ``0.5 * (CE(box image -> all box texts) + CE(box text -> all box images))`` where the
  target of a row is the uniform distribution over the columns whose box text equals the row's
  (``Embeddings.box_text_ids``; the row's own column among them), added with this weight
  to any objective (boxes are then loaded for CLIP and MERU too). ``contrastive`` and the gate
  do not include it.
* ``entail_warmup_steps`` and ``entail_gate`` (not in the papers, both off by default) scale the
  entailment weight: a linear ramp over steps, and ``clamp((1 - L / ln N) / gate, 0, 1)`` of
  the batch's detached contrastive loss ``L`` (no entailment while the contrastive loss is at
  chance).
* ``learn_entail_weight`` (not in the papers, off by default) learns the entailment weight
  ``lambda`` (one scalar for all entailment terms, stored as ``log lambda``, init
  ``log entail_weight``) by homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR
  2018): with ``lambda = 1 / (2 sigma^2)`` their ``L_e / (2 sigma^2) + log sigma`` is
  ``lambda * L_e - 0.5 * log(2 lambda)`` (up to a constant), minimised at ``lambda = 1 / (2
  L_e)``. A plain learnable ``lambda`` in ``lambda * L_e`` is not offered: ``L_e >= 0``, so
  gradient descent only ever lowers ``lambda`` and parks it at its lower bound (the
  entailment switched off); the log term is what gives it an optimum. ``lambda`` is clamped in
  place to ``[entail_weight_min, entail_weight_max]`` after each optimizer step
  (:meth:`Objective.clamp_scalars_`, as the model's curvature). The ramp and the gate multiply
  the whole term, the log included (:func:`learned_entail`), so an entailment that is off is
  fully off. Logged as ``entail_weight``.
* ``loss: sigmoid`` replaces each CE by SigLIP's pairwise loss (Zhai et al. 2023): per row,
  ``-sum_j log sigmoid(label_ij * (logit_ij + bias))`` with ``label = +1`` for the positive and
  ``-1`` otherwise, and a learnable ``bias`` (init -10).

Every term is a mean over rows across all processes; on each rank it is formed as
``(world / global_rows) * sum over local rows`` (see :mod:`hyvl.objectives.distributed` for why
that, combined with DDP's gradient averaging, equals one process on the whole batch). Local
batch sizes may differ between ranks; the number of boxes per sample ``k`` must not (it comes
from ``data.boxes_per_sample``, the same on every rank).

All of it runs in fp32 (float64 inputs stay float64) with autocast disabled, so bf16 / fp16
training keeps a stable loss.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from hyvl import lorentz
from hyvl.config import ObjectiveConfig
from hyvl.errors import ConfigError
from hyvl.geometry import Geometry, get_geometry
from hyvl.models.embeddings import Embeddings
from hyvl.objectives import distributed
from hyvl.objectives.uncha import (
    uncha_box_terms,
    uncha_calibration,
    uncha_residual,
    uncha_uncertainty,
)

#: objectives that use box crops (``data.boxes_per_sample >= 1``)
BOX_KINDS = ("hycoclip", "uncha", "phyclip")
#: UNCHA clamps its two extra logit scales at 100 (ln 100 = 4.6052), as the model's.
UNCHA_LOG_SCALE_MAX = math.log(100.0)


def check_objective(cfg: ObjectiveConfig, geometry: str) -> Geometry:
    """The model's :mod:`~hyvl.geometry`; ConfigError for combinations that have no meaning."""
    space = get_geometry(geometry)
    if cfg.kind == "atmg" and not space.hyperbolic:
        raise ConfigError(
            "objective.kind='atmg' uses exterior angles, which need a lorentz model; use an "
            "atmg_* model or objective.kind='clip'"
        )
    if cfg.kind == "atmg" and cfg.logits == "angle":
        raise ConfigError(
            "objective.kind='atmg' forms ATMG's own angle logits (text -> image by "
            "-angle(text, image), image -> text by +angle(image, text)); leave objective.logits "
            "at 'distance' (logits: angle is a different, one-apex variant)"
        )
    if cfg.kind == "phyclip" and not space.product:
        raise ConfigError(
            "objective.kind='phyclip' needs a product of Lorentz factors: use a phyclip_* model "
            "(model.geometry=lorentz_product)"
        )
    if space.product and cfg.logits == "angle":
        raise ConfigError(
            "objective.logits='angle' is not defined on a product of Lorentz factors "
            "(model.geometry=lorentz_product): use logits='distance'"
        )
    if space.product and cfg.kind == "uncha":
        raise ConfigError(
            "objective.kind='uncha' is defined on one hyperboloid; a lorentz_product model "
            "trains with objective.kind='phyclip'"
        )
    if cfg.kind == "uncha" and cfg.logits == "angle":
        raise ConfigError(
            "objective.kind='uncha' scales distance logits by each box's uncertainty; "
            "objective.logits='angle' is not defined for it: use logits='distance'"
        )
    if not space.hyperbolic and cfg.logits == "angle":
        raise ConfigError(
            "objective.logits='angle' needs a lorentz model (the exterior angle is a hyperbolic "
            "quantity); use objective.logits='distance' (cosine) for a euclidean model"
        )
    if not space.hyperbolic and cfg.kind != "clip" and cfg.entail_weight != 0:
        raise ConfigError(
            f"objective.kind={cfg.kind!r} has entailment terms, which are only defined for a "
            "lorentz model; use a lorentz model, objective.kind='clip', or "
            "objective.entail_weight=0 (contrastive terms only)"
        )
    if cfg.kind == "uncha" and cfg.box_pair_weight > 0:
        raise ConfigError(
            "objective.kind='uncha' has its own box image <-> box text pair (with its own logit "
            "scale); leave objective.box_pair_weight at 0"
        )
    if cfg.entail_gate > 0 and cfg.loss != "softmax":
        raise ConfigError(
            "objective.entail_gate reads the contrastive loss against its chance value ln N, "
            "which only the softmax loss has; set objective.entail_gate=0 with loss='sigmoid'"
        )
    return space


def entail_gate(contrastive: Tensor, global_batch: int, margin: float, world: int) -> Tensor:
    """``clamp((1 - L / ln N) / margin, 0, 1)`` of the detached contrastive loss ``L``.

    0 while the loss is at or above chance (uniform logits over the ``N`` columns), 1 once it is
    ``margin`` (a fraction of ``ln N``) below. With several processes ``L`` is the global mean:
    each rank holds ``world / N`` times its row sum, so the ranks' values add up to ``world``
    times the mean, and every process applies the same gate.
    """
    value = contrastive.detach().clone()
    if world > 1:
        torch.distributed.all_reduce(value)
        value = value / world
    chance = torch.log(torch.tensor(float(max(global_batch, 2)), dtype=value.dtype))
    return ((1.0 - value / chance.to(value.device)) / margin).clamp(0.0, 1.0)


def learned_entail(entail: Tensor, log_weight: Tensor, factor: Tensor | float = 1.0) -> Tensor:
    """``factor * (lambda * entail - 0.5 * log(2 lambda))`` with ``lambda = exp(log_weight)``.

    Kendall, Gal & Cipolla (CVPR 2018, arXiv 1705.07115) weight a loss ``L`` by its
    homoscedastic uncertainty as ``L / (2 sigma^2) + log sigma``; with ``lambda = 1 / (2
    sigma^2)``, ``log sigma = -0.5 * log(2 lambda)``, so this is that weighting with the
    entailment's weight as the learned quantity. Its derivative in ``log lambda`` is
    ``factor * (lambda * entail - 0.5)``: zero at ``lambda = 1 / (2 entail)``, so a large
    entailment loss gets a small weight and a small one a large weight (up to the clamp). The
    regulariser carries the same ``factor`` (the warm-up ramp times the gate) as the weighted
    loss: a factor 0 leaves nothing, and while it is above 0 the optimum is unchanged.
    """
    weight = log_weight.to(entail.dtype).exp()
    return factor * (weight * entail - 0.5 * torch.log(2.0 * weight))


def _autocast_off(device: torch.device):
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return nullcontext()


def _compute_dtype(t: Tensor) -> torch.dtype:
    # Half inputs are promoted to fp32; float64 (tests, references) stays float64.
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _logits(
    space: Geometry,
    angle: bool,
    rows: Tensor,
    cols: Tensor,
    rows_are_apex: bool,
    curv,
    scale: Tensor,
) -> Tensor:
    """(R, D) x (C, D) -> (R, C) ``scale * similarity``: larger means more alike.

    ``rows_are_apex`` says which side is the more generic one (text, or a box's text) and so
    the cone apex for angle logits (``logits: angle``); distance and cosine are symmetric.
    """
    if not angle:
        if space.hyperbolic:
            # similarity = -distance: the sign goes on the scalar, which the distance multiplies
            # in place, so the (R, C) matrix is not passed over again either way (on a CPU each
            # pass costs ~1/3 of a matmul).
            return space.pairwise_distance(rows, cols, curv, scale=-scale)
        return space.pairwise_similarity(rows, cols, curv) * scale
    if rows_are_apex:
        return scale * space.pairwise_angle_similarity(rows, cols, curv)
    return scale * space.pairwise_angle_similarity(cols, rows, curv).T


def _row_losses(logits: Tensor, targets: Tensor, loss: str, bias: Tensor | None) -> Tensor:
    """(R, C) logits, (R,) target columns or (R, C) target probabilities -> (R,) row losses.

    Target probabilities (several positives a row) are cross-entropy against that
    distribution; with the sigmoid loss every column of nonzero probability is a positive.
    """
    if loss == "softmax":
        return F.cross_entropy(logits, targets, reduction="none")
    # SigLIP: every (row, column) pair is a binary problem, positive only at the target(s).
    if targets.dim() == 2:
        signs = torch.where(targets > 0, 1.0, -1.0).to(logits.dtype)
    else:
        signs = -torch.ones_like(logits)
        signs[torch.arange(len(targets), device=logits.device), targets] = 1.0
    return -F.logsigmoid(signs * (logits + bias)).sum(dim=1)


def same_text_targets(ids: Tensor, ids_all: Tensor, dtype: torch.dtype) -> Tensor:
    """(R,) and (C,) text identities -> (R, C) target probabilities: uniform over the columns
    whose text equals the row's (the row's own column among them)."""
    same = (ids.unsqueeze(1) == ids_all.unsqueeze(0)).to(dtype)
    return same / same.sum(dim=1, keepdim=True).clamp_min(1.0)


def compute_objective(
    emb: Embeddings,
    cfg: ObjectiveConfig,
    geometry: str,
    *,
    sigmoid_bias: Tensor | None = None,
    distributed_gather: bool = True,
    entail_scale: float = 1.0,
    uncha_log_scales: tuple[Tensor, Tensor] | None = None,
    entail_log_weight: Tensor | None = None,
) -> dict[str, Tensor]:
    """The loss and its named terms for one batch of embeddings (a pure function).

    Args:
        emb: local batch; ``image``/``text`` (B, D), ``box_image``/``box_text`` (B*k, D)
            sample-major (needed for ``kind: hycoclip``), ``curv`` (lorentz), ``logit_scale``.
        cfg: objective config (kind, logits, loss, weights).
        geometry: ``"lorentz"`` or ``"euclidean"`` (the model's).
        sigmoid_bias: 0-dim learnable bias for ``loss: sigmoid`` (default: the config's init
            value as a constant).
        distributed_gather: gather columns from all processes when a process group with more
            than one rank exists (and ``cfg.gather_with_grad``); False computes the local loss
            only (benchmarks, single-process use).
        entail_scale: multiplies ``cfg.entail_weight`` (the warm-up ramp of
            ``cfg.entail_warmup_steps``; 1.0 = the papers' weight). With
            ``cfg.entail_gate > 0`` it is further multiplied by :func:`entail_gate` of this
            batch's contrastive loss, reported as the term ``entail_gate``.
        uncha_log_scales: ``kind: uncha``'s learnable (log) logit scales of the box <-> box
            and box -> whole terms (default: the config's initial values as constants).
        entail_log_weight: with ``cfg.learn_entail_weight``, the learnable ``log lambda`` of
            the entailment (default: ``log cfg.entail_weight`` as a constant); the loss then
            adds :func:`learned_entail` instead of ``entail_weight * entail``.

    Returns:
        ``{"loss", "contrastive", "contrastive_image_text", "contrastive_text_image", ...}``:
        ``loss`` is the scalar to backpropagate; HyCoCLIP adds ``contrastive_boximage_text``,
        ``contrastive_boxtext_image`` and the ``entail_*`` terms; MERU adds ``entail`` and
        ``entail_text_image``. Diagnostics ``logit_scale``, ``curv``, ``sigmoid_bias`` and
        (``learn_entail_weight``) ``entail_weight``, the current lambda, are detached. Terms are 0-dim fp32 (float64 for float64 input).
    """
    space = check_objective(cfg, geometry)
    if emb.logit_scale is None:
        raise ValueError("Embeddings.logit_scale is None: the objective needs the model's scale")
    if space.hyperbolic and emb.curv is None:
        raise ValueError("Embeddings.curv is None but the geometry is lorentz")
    box_kind = cfg.kind in BOX_KINDS
    pairs = cfg.box_pair_weight > 0
    use_boxes = box_kind or pairs
    uncha = cfg.kind == "uncha"
    if use_boxes and not emb.has_boxes:
        what = f"objective.kind={cfg.kind!r}" if box_kind else "objective.box_pair_weight > 0"
        raise ConfigError(
            f"{what} needs box embeddings (box_image and box_text): set "
            "data.boxes_per_sample >= 1 and train on grounded data"
        )
    if pairs and emb.box_text_ids is None:
        raise ValueError(
            "objective.box_pair_weight > 0 needs Embeddings.box_text_ids (which box texts are "
            "equal): the model's forward sets them from the box tokens"
        )
    batch = emb.image.shape[0]
    if emb.text.shape[0] != batch:
        raise ValueError(f"{batch} image embeddings but {emb.text.shape[0]} text embeddings")
    k = 0
    if use_boxes:
        rows = emb.box_image.shape[0]
        if emb.box_text.shape[0] != rows or (batch and rows % batch) or (not batch and rows):
            raise ValueError(
                f"box embeddings must be (B*k, D) for B={batch}: got box_image "
                f"{tuple(emb.box_image.shape)} and box_text {tuple(emb.box_text.shape)}"
            )
        k = rows // batch if batch else 0

    dtype = _compute_dtype(emb.image)
    with _autocast_off(emb.image.device):
        image, text = emb.image.to(dtype), emb.text.to(dtype)
        scale = emb.logit_scale.to(dtype)
        curv = emb.curv.to(dtype) if space.hyperbolic else None
        bias = None
        if cfg.loss == "sigmoid":
            if sigmoid_bias is None:
                sigmoid_bias = torch.tensor(cfg.sigmoid_bias_init, device=image.device)
            bias = sigmoid_bias.to(dtype)
        angle = cfg.logits == "angle"

        def cone(apex: Tensor, child: Tensor, aperture_scale: float) -> Tensor:
            return space.cone_violation(apex, child, curv, aperture_scale, cfg.min_radius)

        world = distributed.world_size() if distributed_gather else 1
        if world > 1 and cfg.gather_with_grad:
            image_all, offset = distributed.gather_with_grad(image)
            text_all, _ = distributed.gather_with_grad(text)
            global_batch = image_all.shape[0]
        else:
            image_all, text_all, offset = image, text, 0
            # Local negatives only; rows are still weighted as a share of the global batch.
            global_batch = (
                sum(distributed.gather_sizes(batch, image.device)) if world > 1 else batch
            )
        # mean over the global rows = (world / global rows) * sum over local rows (see module doc)
        row_weight = world / max(global_batch, 1)
        box_weight = world / max(global_batch * k, 1)

        targets = offset + torch.arange(batch, device=image.device)

        def contrastive(logits: Tensor, tgt: Tensor) -> Tensor:
            return _row_losses(logits, tgt, cfg.loss, bias).sum()

        chunk = cfg.logit_chunk_rows

        def block(
            rows: Tensor,
            cols: Tensor,
            tgt: Tensor,
            rows_are_apex: bool,
            block_scale: Tensor | None = None,
            row_weight_: Tensor | None = None,
            sign: float | None = None,
        ) -> Tensor:
            """Summed row losses of one (R, C) logits block, ``chunk`` rows at a time if set.

            ``block_scale`` replaces the logit scale (UNCHA's own scales), ``row_weight_``
            (R,) multiplies each row's logits (UNCHA's uncertainty weights) and ``sign``
            selects ATMG's angle logits ``sign * scale * oxy_angle(rows, cols)`` (rows apex).
            """
            s_ = scale if block_scale is None else block_scale

            def part(r: Tensor, t: Tensor, w: Tensor | None) -> Tensor:
                if sign is not None:
                    logits = (sign * s_) * lorentz.pairwise_oxy_angle(r, cols, curv)
                else:
                    logits = _logits(space, angle, r, cols, rows_are_apex, curv, s_)
                if w is not None:
                    logits = logits * w.unsqueeze(-1)
                return contrastive(logits, t)

            if not chunk or rows.shape[0] <= chunk:
                return part(rows, tgt, row_weight_)
            # Each chunk's (chunk, C) matrices are freed after its forward and formed again in
            # backward (non-reentrant checkpoint: gradients reach cols, scale, curv and bias).
            return sum(
                checkpoint(
                    part,
                    rows[i : i + chunk],
                    tgt[i : i + chunk],
                    None if row_weight_ is None else row_weight_[i : i + chunk],
                    use_reentrant=False,
                )
                for i in range(0, rows.shape[0], chunk)
            )

        # One gathered column set per modality serves whole and box rows alike. Without a
        # gather (one process, or local negatives) text -> image is the transpose of image ->
        # text, so it is not formed again (as open_clip); with a gather they are different
        # blocks. Box rows get their own call rather than being concatenated with the whole
        # rows: slicing one (R, C) result apart makes autograd zero-fill and add a full-size
        # gradient per slice, where separate blocks cost nothing extra (the column-side norms,
        # O(C D), are all that is formed twice).
        # In chunks, text -> image is formed as its own block (a transpose would need the whole
        # image -> text matrix at once).
        shared = image_all is image and text_all is text and not chunk and cfg.kind != "atmg"
        box_image = box_text = None
        if use_boxes:
            box_image, box_text = emb.box_image.to(dtype), emb.box_text.to(dtype)

        out: dict[str, Tensor] = {}
        if cfg.kind == "atmg":
            # ATMG: the image is the apex of its own row's angles, with the opposite sign.
            out["contrastive_image_text"] = row_weight * block(
                image, text_all, targets, True, sign=1.0
            )
            out["contrastive_text_image"] = row_weight * block(
                text, image_all, targets, True, sign=-1.0
            )
        elif shared:
            image_logits = _logits(space, angle, image, text_all, False, curv, scale)
            out["contrastive_image_text"] = row_weight * contrastive(image_logits, targets)
            out["contrastive_text_image"] = row_weight * contrastive(image_logits.mT, targets)
        else:
            out["contrastive_image_text"] = row_weight * block(image, text_all, targets, False)
            out["contrastive_text_image"] = row_weight * block(text, image_all, targets, True)
        entail_terms: dict[str, Tensor] = {}
        entail: Tensor | None = None
        if uncha:
            uncha_terms, entail_terms, entail = uncha_box_terms(
                cfg, space, image, text, image_all, text_all, box_image, box_text, targets, k,
                curv, row_weight, box_weight, block, uncha_log_scales, dtype,
            )  # fmt: skip
            whole = 0.5 * (out["contrastive_image_text"] + out["contrastive_text_image"])
            out.update(uncha_terms)
            out["contrastive"] = whole + uncha_terms["contrastive"]
        elif box_kind:
            box_targets = targets.repeat_interleave(k)
            out["contrastive_boximage_text"] = box_weight * block(
                box_image, text_all, box_targets, False
            )
            out["contrastive_boxtext_image"] = box_weight * block(
                box_text, image_all, box_targets, True
            )
            out["contrastive"] = 0.25 * (
                out["contrastive_image_text"]
                + out["contrastive_text_image"]
                + out["contrastive_boximage_text"]
                + out["contrastive_boxtext_image"]
            )
            if space.hyperbolic:
                # Each box row's whole image / text: sample-major, k rows per sample.
                image_per_box = image.repeat_interleave(k, dim=0)
                text_per_box = text.repeat_interleave(k, dim=0)
                inter, intra = cfg.inter_aperture_scale, cfg.intra_aperture_scale
                entail_terms = {
                    "entail_text_image": row_weight * cone(text, image, inter).sum(),
                    "entail_boxtext_boximage": box_weight * cone(box_text, box_image, inter).sum(),
                    "entail_boximage_image": box_weight
                    * cone(box_image, image_per_box, intra).sum(),
                    "entail_boxtext_text": box_weight * cone(box_text, text_per_box, intra).sum(),
                }
                entail = cfg.hycoclip_entail_factor * sum(entail_terms.values())
        else:
            out["contrastive"] = 0.5 * (
                out["contrastive_image_text"] + out["contrastive_text_image"]
            )
            if cfg.kind == "meru" and space.hyperbolic:
                # MERU: the caption's cone at full half-aperture must contain its image.
                entail_terms = {"entail_text_image": row_weight * cone(text, image, 1.0).sum()}
                entail = entail_terms["entail_text_image"]

        loss = out["contrastive"]
        if pairs:
            # box image <-> box text, every box of the same text a positive (config doc)
            ids = emb.box_text_ids
            if image_all is not image:
                box_image_all, _ = distributed.gather_with_grad(box_image)
                box_text_all, _ = distributed.gather_with_grad(box_text)
                ids_all = distributed.gather_no_grad(ids)
            else:
                box_image_all, box_text_all, ids_all = box_image, box_text, ids
            same = same_text_targets(ids, ids_all, dtype)
            out["contrastive_boximage_boxtext"] = box_weight * block(
                box_image, box_text_all, same, False
            )
            out["contrastive_boxtext_boximage"] = box_weight * block(
                box_text, box_image_all, same, True
            )
            out["contrastive_boxpair"] = 0.5 * (
                out["contrastive_boximage_boxtext"] + out["contrastive_boxtext_boximage"]
            )
            loss = loss + cfg.box_pair_weight * out["contrastive_boxpair"]
        if entail is not None:
            out.update(entail_terms)
            out["entail"] = entail
            # As MERU: a zero weight leaves the term out (logged only), so a NaN cannot leak in.
            weight = entail_scale * cfg.entail_weight
            share = entail_scale  # learn_entail_weight: ramp x gate, on the whole term
            if cfg.entail_gate > 0:
                # UNCHA's contrastive loss sums three pairs, each at ln N by chance: the gate
                # reads their mean.
                chance_share = out["contrastive"] / 3 if uncha else out["contrastive"]
                gate = entail_gate(chance_share, global_batch, cfg.entail_gate, world)
                out["entail_gate"] = gate
                weight = weight * gate
                share = share * gate
            if cfg.learn_entail_weight:
                log_weight = entail_log_weight
                if log_weight is None:
                    log_weight = torch.tensor(math.log(cfg.entail_weight), device=image.device)
                out["entail_weight"] = log_weight.detach().to(dtype).exp()
                if entail_scale > 0:
                    # the log regulariser gets the ramp x gate share as well (learned_entail)
                    loss = loss + learned_entail(entail, log_weight, share)
                else:
                    # no entailment (a NaN cannot leak in); lambda stays in the graph with a
                    # zero gradient so that DDP sees every parameter used
                    loss = loss + 0.0 * log_weight.to(dtype)
            elif cfg.entail_weight > 0 and entail_scale > 0:
                loss = loss + weight * entail
        out["loss"] = loss
        out["logit_scale"] = scale.detach()
        if curv is not None:
            # a product space logs the mean of its factors' curvatures
            out["curv"] = curv.detach().mean() if space.product else curv.detach()
        if bias is not None:
            out["sigmoid_bias"] = bias.detach()
    return out


class Objective(nn.Module):
    """A configured objective; owns the SigLIP bias when ``loss: sigmoid``, UNCHA's two logit
    scales and, with ``learn_entail_weight``, ``log_entail_weight`` (``log lambda``).

    ``forward(emb) -> dict`` as :func:`compute_objective`, gathering across processes itself.
    Under DDP, wrap it with the model (or average its gradients) when it has parameters.
    ``step`` (set by the trainer before each step) drives ``entail_warmup_steps``. The learned
    entailment weight is kept in ``[entail_weight_min, entail_weight_max]`` as the model's
    curvature is kept in its bounds: :meth:`clamp_scalars_` clamps the parameter itself in
    place (``hyvl train`` calls it after every optimizer step and at start; loading a state
    dict calls it), so a weight at a bound keeps its gradient and leaves the bound as soon as
    its optimum moves inside; in eval mode the forward clamps the value it uses as well.
    """

    step: int = 0

    def __init__(self, cfg: ObjectiveConfig, geometry: str):
        super().__init__()
        check_objective(cfg, geometry)
        self.cfg = cfg
        self.geometry = geometry
        self.sigmoid_bias = None
        if cfg.loss == "sigmoid":
            self.sigmoid_bias = nn.Parameter(torch.tensor(float(cfg.sigmoid_bias_init)))
        self.local_logit_scale = self.global_local_logit_scale = None
        if cfg.kind == "uncha":
            # UNCHA's own logit scales (log stored, clamped at 100 as the model's).
            self.local_logit_scale = nn.Parameter(
                torch.tensor(math.log(cfg.uncha_local_scale_init))
            )
            self.global_local_logit_scale = nn.Parameter(
                torch.tensor(math.log(cfg.uncha_global_local_scale_init))
            )
        self.log_entail_weight = None
        if cfg.learn_entail_weight:
            self.log_entail_weight = nn.Parameter(torch.tensor(math.log(cfg.entail_weight)))
            self._log_entail_weight_bounds = (
                math.log(cfg.entail_weight_min),
                math.log(cfg.entail_weight_max),
            )
            # a checkpoint's value past a bound (edited by hand) comes back in bounds
            self.register_load_state_dict_post_hook(_clamp_objective_after_load)

    @torch.no_grad()
    def clamp_scalars_(self) -> None:
        """Clamp the learned entailment weight IN PLACE to its bounds (no gradient); nothing
        without ``learn_entail_weight``. Call it after ``optimizer.step()``, as
        :meth:`hyvl.models.model.HyvlModel.clamp_scalars_` (which says why there)."""
        if self.log_entail_weight is not None:
            self.log_entail_weight.clamp_(*self._log_entail_weight_bounds)

    @property
    def entail_weight(self) -> float:
        """The entailment weight lambda in use: learned (``exp(log_entail_weight)``) or fixed."""
        if self.log_entail_weight is None:
            return float(self.cfg.entail_weight)
        return float(self.log_entail_weight.detach().exp())

    def entail_scale(self) -> float:
        """The entailment weight's share at ``step``: ramps 0 -> 1 over ``entail_warmup_steps``."""
        warmup = self.cfg.entail_warmup_steps
        return 1.0 if warmup <= 0 else min(1.0, self.step / warmup)

    def forward(self, emb: Embeddings) -> dict[str, Tensor]:
        log_scales = None
        if self.local_logit_scale is not None:
            with torch.no_grad():  # in place, as the model's scalars: the gradient stays
                self.local_logit_scale.clamp_(max=UNCHA_LOG_SCALE_MAX)
                self.global_local_logit_scale.clamp_(max=UNCHA_LOG_SCALE_MAX)
            log_scales = (self.local_logit_scale, self.global_local_logit_scale)
        log_weight = self.log_entail_weight
        if log_weight is not None and not self.training:
            log_weight = log_weight.clamp(*self._log_entail_weight_bounds)
        return compute_objective(
            emb,
            self.cfg,
            self.geometry,
            sigmoid_bias=self.sigmoid_bias,
            entail_scale=self.entail_scale(),
            uncha_log_scales=log_scales,
            entail_log_weight=log_weight,
        )

    def extra_repr(self) -> str:
        return (
            f"kind={self.cfg.kind}, geometry={self.geometry}, logits={self.cfg.logits}, "
            f"loss={self.cfg.loss}, entail_weight={self.cfg.entail_weight}"
            + (", learned" if self.cfg.learn_entail_weight else "")
        )


def _clamp_objective_after_load(module: Objective, incompatible_keys) -> None:
    module.clamp_scalars_()


def build_objective(cfg: ObjectiveConfig, geometry: str) -> Objective:
    """The objective ``cfg`` describes, for a model of ``geometry`` ("lorentz" | "euclidean")."""
    return Objective(cfg, geometry)


__all__ = [
    "BOX_KINDS",
    "Objective",
    "build_objective",
    "check_objective",
    "compute_objective",
    "learned_entail",
    "uncha_calibration",
    "uncha_residual",
    "uncha_uncertainty",
]
