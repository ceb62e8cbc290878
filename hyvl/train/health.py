"""Training health: is the run learning, and if not, what is wrong?

Two pure pieces, so each can be tested on constructed cases without a training run:

* :func:`embedding_stats` turns one batch's :class:`~hyvl.models.embeddings.Embeddings` (and
  its contrastive loss) into the numbers logged at every logged step: the contrastive loss
  relative to ``ln(global batch)`` (1.0 = chance: the model cannot tell the batch apart),
  the spread of each modality (root-mean-square distance of the tangent vectors ``log_map0(x)``
  from their mean; for CLIP of the unit vectors from their mean), the mean distance to the
  origin of each modality (Lorentz models), and the share of entailment pairs (caption ->
  image; box text -> box image; box image -> image; box text -> text) inside their cones.
* :class:`HealthMonitor` watches those numbers step by step and names what is wrong:

  ``collapse``
      the contrastive loss stays within ``collapse_tolerance`` (2%) of ``ln B`` for
      ``patience`` steps after it once was below that line or after ``grace_steps``, or the
      images (or texts) become indistinguishable to the loss, ``spread * logit_scale <
      min_logit_spread`` (logits of one row then differ by less than that, so the softmax is
      uniform), for ``patience`` steps.
  ``frozen_text``
      the texts of a batch (captions naming different objects) are indistinguishable,
      ``spread * logit_scale < min_logit_spread``, while the images are not, for ``patience``
      steps: the text tower maps every caption to one point.
  ``entailment_dead``
      every entailment pair is inside its cone from the first logged step on, for ``patience``
      steps: the entailment terms are 0 and teach nothing (typically all embeddings sit inside
      ``2 * min_radius`` of the origin, where a cone is a half-space).
  ``few_classes``
      a periodic zero-shot evaluation answers at most a quarter of the classes for all its
      images (``zero-shot predicts 1 of 10 classes``): the run learned something that is the
      same on every test image, whatever the loss and the spreads say (a shortcut such as the
      number of objects a caption names). Checked at each evaluation, open until one answers
      more (:meth:`HealthMonitor.update_zeroshot`).
  ``clamp``
      curvature or an alpha sits at its clamp (MERU's ``[c0/10, 10 c0]`` for ``c``, ``alpha <= 1``)
      for ``patience`` steps: its gradient keeps pushing it past the bound and the trainer
      clamps it back after every step (it is free to leave as soon as the gradient turns).

The trainer logs the stats and ``health`` (``"ok"`` or the names of the open problems) in
``metrics.jsonl``, shows ``health`` on the progress line and prints one plain line on stderr
when a problem appears; the run's summary says ``healthy``, or names each problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from hyvl.geometry import get_geometry

MODALITIES = ("image", "text", "box_image", "box_text")
# (apex, child) pairs whose cone share is reported: the pairs of MERU / HyCoCLIP's
# entailment terms, whichever the batch has.
CONE_PAIRS = (
    ("text", "image"),
    ("box_text", "box_image"),
    ("box_image", "image"),
    ("box_text", "text"),
)


# The problems in words, for people (``health`` in metrics.jsonl keeps the names).
PROBLEM_WORDS = {
    "collapse": "collapse",
    "frozen_text": "frozen text side",
    "entailment_dead": "dead entailment",
    "clamp": "a scalar at its clamp",
    "few_classes": "zero-shot predicts too few classes",
}


@dataclass(frozen=True)
class HealthThresholds:
    """When the monitor calls a run unhealthy (see the module docstring)."""

    collapse_tolerance: float = 0.02
    min_logit_spread: float = 0.05
    patience: int = 20
    grace_steps: int = 100
    clamp_tolerance: float = 1e-3


def aperture_scales(objective_cfg) -> dict[tuple[str, str], float]:
    """The aperture scale of each (apex, child) pair in the objective's entailment terms."""
    if objective_cfg.kind not in ("hycoclip", "uncha", "phyclip"):
        return {}
    inter, intra = objective_cfg.inter_aperture_scale, objective_cfg.intra_aperture_scale
    return {
        ("text", "image"): inter,
        ("box_text", "box_image"): inter,
        ("box_image", "image"): intra,
        ("box_text", "text"): intra,
    }


def _spread(tangent: torch.Tensor) -> float:
    """(N, D) -> RMS distance of the rows from their mean (0 when all rows are equal)."""
    centred = tangent - tangent.mean(dim=0, keepdim=True)
    return float(centred.pow(2).sum(dim=-1).mean().sqrt())


@torch.no_grad()
def embedding_stats(
    emb,
    *,
    contrastive_loss: float | None,
    global_batch: int,
    min_radius: float = 0.1,
    aperture_scales: dict[tuple[str, str], float] | None = None,
) -> dict[str, float | None]:
    """One batch's health numbers (see the module docstring).

    Args:
        emb: :class:`~hyvl.models.embeddings.Embeddings`, (B, D) per modality.
        contrastive_loss: the batch's contrastive term (mean of its cross-entropies).
        global_batch: B over all processes: ``ln B`` is the loss of uniform logits.
        min_radius: the cones' K (MERU's 0.1).
        aperture_scales: per (apex, child) pair, the objective's aperture scale (HyCoCLIP's
            0.7 / 1.2; see :func:`aperture_scales`); 1.0 where absent.

    Returns ``{"loss_over_ln_b", "spread_<m>", "d0_<m>", "in_cone"}`` for each modality ``m``
    present (``d0_*`` and ``in_cone`` only for Lorentz models; ``in_cone`` pools every pair).
    """
    out: dict[str, float | None] = {}
    ln_b = math.log(max(global_batch, 2))
    out["loss_over_ln_b"] = None if contrastive_loss is None else contrastive_loss / ln_b
    curv = emb.curv.detach().float() if emb.curv is not None else None
    # one curvature per factor: a product of Lorentz factors (PHyCLIP)
    space = None if curv is None else get_geometry("lorentz_product" if curv.ndim else "lorentz")
    for name in MODALITIES:
        value = getattr(emb, name)
        if value is None:
            continue
        value = value.detach().float()
        tangent = value if curv is None else space.log_map0(value, curv)
        out[f"spread_{name}"] = _spread(tangent)
        if curv is not None:
            out[f"d0_{name}"] = float(space.dist0(value, curv).mean())
    if curv is not None:
        inside, total = 0, 0
        for apex_name, child_name in CONE_PAIRS:
            apex, child = getattr(emb, apex_name), getattr(emb, child_name)
            if apex is None or child is None:
                continue
            # box -> whole pairs: k box rows per sample, sample-major (Embeddings docstring)
            if child.shape[0] < apex.shape[0]:
                child = child.repeat_interleave(apex.shape[0] // child.shape[0], dim=0)
            k = (aperture_scales or {}).get((apex_name, child_name), 1.0)
            inside_rows = space.in_cone(apex.float(), child.float(), curv, k, min_radius)
            inside += int(inside_rows.sum())
            total += inside_rows.numel()
        out["in_cone"] = inside / total if total else None
    return out


@dataclass
class _Streak:
    """Consecutive steps a condition has held, and the step it started."""

    since: int | None = None

    def update(self, holds: bool, step: int) -> int:
        if not holds:
            self.since = None
            return 0
        if self.since is None:
            self.since = step
        return step - self.since


@dataclass
class HealthMonitor:
    """Follows the logged stats of a run and names its problems (module docstring).

    ``update(step, stats)`` takes the record of one logged step: ``loss_over_ln_b``,
    ``spread_*``, ``in_cone``, ``logit_scale`` and, for Lorentz models, ``curv``,
    ``curv_bounds`` (low, high) and ``alphas`` (name -> value). It returns the problems that
    appeared at this step (name -> one plain sentence); ``problems`` keeps every problem seen
    with the step it was first reported, ``open`` those that still hold. ``healthy_step`` is
    the last logged step at which the collapse condition did not hold (None: not one yet).
    """

    thresholds: HealthThresholds = field(default_factory=HealthThresholds)
    problems: dict[str, tuple[int, str]] = field(default_factory=dict)
    open: set[str] = field(default_factory=set)
    healthy_step: int | None = None
    _streaks: dict[str, _Streak] = field(default_factory=dict)
    _learned: bool = False
    _first_step: int | None = None
    _cones_full_since_start: bool = True
    _words: dict[str, str] = field(default_factory=dict)  # a problem's words, where they vary

    def _check(self, name: str, holds: bool, step: int) -> bool:
        """True once ``holds`` has been true for ``patience`` steps in a row."""
        held = self._streaks.setdefault(name, _Streak()).update(holds, step)
        return holds and held >= self.thresholds.patience

    def update(self, step: int, stats: dict) -> dict[str, str]:
        t = self.thresholds
        if self._first_step is None:
            self._first_step = step
        scale = stats.get("logit_scale") or 1.0
        found: dict[str, str] = {}

        ratio = stats.get("loss_over_ln_b")
        at_chance = ratio is not None and ratio >= 1.0 - t.collapse_tolerance
        if ratio is not None and not at_chance:
            self._learned = True
        loss_stuck = at_chance and (self._learned or step >= t.grace_steps)
        image_spread = stats.get("spread_image")
        images_same = image_spread is not None and image_spread * scale < t.min_logit_spread
        if not (loss_stuck or images_same):
            self.healthy_step = step
        if self._check("collapse", loss_stuck or images_same, step):
            why = (
                f"contrastive loss at {ratio:.3f} x ln(B)"
                if loss_stuck
                else f"images indistinguishable (spread {image_spread:.2g} x logit scale "
                f"{scale:.3g} < {t.min_logit_spread})"
            )
            found["collapse"] = f"collapse: {why} for {t.patience}+ steps"

        text_spread = stats.get("spread_text")
        texts_same = text_spread is not None and text_spread * scale < t.min_logit_spread
        if self._check("frozen_text", texts_same, step):
            found["frozen_text"] = (
                f"frozen text side: captions indistinguishable (spread {text_spread:.2g} x logit "
                f"scale {scale:.3g} < {t.min_logit_spread}) for {t.patience}+ steps"
            )

        in_cone = stats.get("in_cone")
        self._cones_full_since_start &= in_cone is not None and in_cone >= 1.0
        if self._check("entailment_dead", self._cones_full_since_start, step):
            found["entailment_dead"] = (
                f"entailment dead: every pair inside its cone since step {self._first_step} "
                "(entailment terms are 0)"
            )

        clamped = []
        curv, bounds = stats.get("curv"), stats.get("curv_bounds")
        if curv is not None and bounds is not None:
            low, high = bounds
            if curv <= low * (1 + t.clamp_tolerance) or curv >= high * (1 - t.clamp_tolerance):
                clamped.append(f"curvature {curv:.4g} (bounds {low:.4g}, {high:.4g})")
        for name, alpha in (stats.get("alphas") or {}).items():
            if alpha >= 1.0 - t.clamp_tolerance:
                clamped.append(f"{name} {alpha:.4g} (clamp 1)")
        if self._check("clamp", bool(clamped), step):
            found["clamp"] = f"at a clamp: {', '.join(clamped)} for {t.patience}+ steps"

        for name in ("collapse", "frozen_text", "entailment_dead", "clamp"):
            if name in found:
                self.open.add(name)
            elif self._streaks.get(name, _Streak()).since is None:
                self.open.discard(name)
        new = {k: v for k, v in found.items() if k not in self.problems}
        for name, message in new.items():
            self.problems[name] = (step, message)
        return new

    def update_zeroshot(self, step: int, zeroshot: dict | None) -> dict[str, str]:
        """Takes a periodic zero-shot result (``num_classes``, ``num_predicted_classes``,
        ``num_samples``); returns ``{"few_classes": sentence}`` when it newly predicts too few
        classes (:func:`hyvl.evaluation.zeroshot.few_classes`). A later result that answers
        more classes closes the problem (the summary still names it, as recovered)."""
        from hyvl.evaluation.zeroshot import few_classes, few_classes_words

        if not zeroshot or "num_predicted_classes" not in zeroshot:
            return {}
        if not few_classes(zeroshot):
            self.open.discard("few_classes")
            return {}
        words = few_classes_words(zeroshot)
        self.open.add("few_classes")
        new = "few_classes" not in self.problems
        self._words["few_classes"] = words  # the latest count
        message = (
            f"{words} for all {zeroshot.get('num_samples', '?')} images: it answers (nearly) "
            "the same for every image"
        )
        if new:
            self.problems["few_classes"] = (step, message)
        return {"few_classes": message} if new else {}

    @property
    def status(self) -> str:
        """``"ok"`` or the open problems, comma-separated (the ``health`` field)."""
        return ", ".join(sorted(self.open)) or "ok"

    @property
    def collapse_since(self) -> int | None:
        """The first logged step of the collapse condition's current streak (reported or still
        within its patience), None when it does not hold."""
        return self._streaks.get("collapse", _Streak()).since

    def summary(self) -> str:
        """For the end of a run: ``healthy``; ``unhealthy:`` and each problem in words with
        the step it appeared, and which still hold; or, when every problem closed again before
        the end, ``healthy at the end, recovered from:`` and the problems (a run that answered
        two classes at step 200 and ten at step 800 ended healthy)."""
        if not self.problems:
            return "healthy"
        words = {**PROBLEM_WORDS, **self._words}
        parts = "; ".join(
            f"{words[name]} from step {step}" for name, (step, _) in self.problems.items()
        )
        if not self.open:
            return f"healthy at the end, recovered from: {parts}"
        open_words = ", ".join(words[name] for name in sorted(self.open))
        return f"unhealthy: {parts} (still: {open_words})"


class CollapseError(RuntimeError):
    """``train.on_collapse=stop`` and the run collapsed: the message says when, where the last
    checkpoint is and which one was the last healthy one; ``report`` holds the same as a dict
    (the trainer adds ``summary``, the run's summary with ``stopped``: the report)."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report
        self.summary: dict | None = None


def model_scalars(model) -> dict:
    """Curvature, its clamp bounds and the alphas of a Lorentz model (empty for CLIP)."""
    if getattr(model, "curv", None) is None:
        return {}
    low, high = (math.exp(b) for b in model._log_curv_bounds)
    alphas = {
        # a product space's alphas (one per factor): the largest, the nearest to alpha's bound 1
        name: float(getattr(model, f"{name}_alpha").detach().exp().max())
        for name in ("visual", "textual")
        if getattr(model, f"{name}_alpha", None) is not None
    }
    return {"curv_bounds": (low, high), "alphas": {f"{k}_alpha": v for k, v in alphas.items()}}


class TrainingHealth:
    """The trainer's side: stats of the logged step's batch into the record, the monitor's
    verdict as ``record["health"]``, new problems as plain lines, and the stop decision."""

    def __init__(self, cfg, global_batch: int):
        tcfg = cfg.train
        self.monitor = HealthMonitor(HealthThresholds(patience=tcfg.health_patience))
        self.on_collapse = tcfg.on_collapse
        self.global_batch = global_batch
        self.scales = aperture_scales(cfg.objective)
        self.min_radius = cfg.objective.min_radius
        # UNCHA's contrastive loss sums three pairs, each at ln B by chance: read their mean
        self.pairs = 3 if cfg.objective.kind == "uncha" else 1

    def observe(self, step: int, record: dict, emb, model, reduce=None) -> list[str]:
        """Adds the health fields to ``record``; returns one line per new problem.

        ``reduce({name: 0-dim tensor}) -> {name: float}`` averages the local batch's numbers
        over processes (a collective: every process calls ``observe`` at the same steps).
        """
        contrastive = record.get("contrastive")
        stats = embedding_stats(
            emb,
            contrastive_loss=None if contrastive is None else contrastive / self.pairs,
            global_batch=self.global_batch,
            min_radius=self.min_radius,
            aperture_scales=self.scales,
        )
        if reduce is not None:
            present = {k: torch.tensor(float(v)) for k, v in stats.items() if v is not None}
            stats.update(reduce(present))
        record.update(stats)
        scalars = {k: record.get(k) for k in ("logit_scale", "curv")}
        new = self.monitor.update(step, {**stats, **scalars, **model_scalars(model)})
        record["health"] = self.monitor.status
        return [f"hyvl train: step {step}: {message}" for message in new.values()]

    def observe_zeroshot(self, step: int, zeroshot: dict | None) -> list[str]:
        """A periodic zero-shot result into the verdict; one line per new problem."""
        new = self.monitor.update_zeroshot(step, zeroshot)
        return [f"hyvl train: step {step}: {message}" for message in new.values()]

    def keep_step(self) -> int | None:
        """While the collapse condition holds: the step at or before which the newest
        checkpoint is the last healthy one, which pruning must keep (else None)."""
        return self.monitor.healthy_step if self.monitor.collapse_since is not None else None

    def last_healthy(self, checkpoints: list) -> tuple[int, Any] | None:
        """The newest of ``checkpoints`` (``[(step, path)]``, oldest first) written at or
        before the last logged step without the collapse condition."""
        ok = self.monitor.healthy_step
        healthy = [c for c in checkpoints if ok is not None and c[0] <= ok]
        return healthy[-1] if healthy else None

    def check_stop(self, step: int, checkpoints) -> None:
        """Raise :class:`CollapseError` when the run collapsed and ``on_collapse=stop``.

        ``checkpoints() -> [(step, path)]`` (the complete ones, oldest first) is asked only
        then. Nothing is deleted: the checkpoints written while the collapse was building
        stay, and the message names the last healthy one to resume from.
        """
        if self.on_collapse != "stop" or "collapse" not in self.monitor.open:
            return
        _, message = self.monitor.problems["collapse"]
        found = checkpoints()
        latest = found[-1] if found else None
        healthy = self.last_healthy(found)
        since = self.monitor.collapse_since

        def where(c):
            return "none" if c is None else f"{c[1]} (step {c[0]})"

        report = {
            "reason": "collapse",
            "step": step,
            "message": message,
            "collapse_since_step": since,
            "last_checkpoint": None
            if latest is None
            else {"step": latest[0], "path": str(latest[1])},
            "last_healthy_checkpoint": None
            if healthy is None
            else {"step": healthy[0], "path": str(healthy[1])},
        }
        if healthy is None:
            resume = "no checkpoint was written before it: start again with a lower train.lr"
        elif healthy == latest:
            resume = "resume from it with a lower train.lr (train.allow_config_change=true)"
        else:
            resume = (
                f"to resume from it, move the newer step_* folders out of {healthy[1].parent} "
                "and rerun with a lower train.lr (train.allow_config_change=true)"
            )
        raise CollapseError(
            f"hyvl train: stopped at step {step} (train.on_collapse=stop): {message}; "
            f"last checkpoint: {where(latest)}; last healthy checkpoint (before the collapse "
            f"began at step {since}): {where(healthy)}; {resume}",
            report,
        )
