"""Whether a run config's model family, geometry, objective and box crops agree
(:class:`hyvl.config.RunConfig` calls :func:`check_recipe` after its fields validate), and
the model families that decide it. Split from :mod:`hyvl.config` to keep each module readable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from hyvl.errors import ConfigError

if TYPE_CHECKING:
    from hyvl.config import RunConfig

DEFAULT_GEOMETRY = "lorentz"  # ModelConfig.geometry's default (config.py reads it from here)


class Family(NamedTuple):
    geometry: str
    boxes: bool  # whether the objective uses box crops (and so needs data.boxes_per_sample >= 1)


# The model family decides geometry, objective and box needs; meru_* and hycoclip_* models
# share one architecture and differ in objective and data.
FAMILIES = {
    "clip": Family("euclidean", boxes=False),
    "meru": Family("lorentz", boxes=False),
    "hycoclip": Family("lorentz", boxes=True),
    "uncha": Family("lorentz", boxes=True),
    "atmg": Family("lorentz", boxes=False),
    "phyclip": Family("lorentz_product", boxes=True),
}


def model_family(spec: Any) -> tuple[str | None, str]:
    """(family or None, geometry) of a model spec (a name or a mapping), without building it."""
    name = spec if isinstance(spec, str) else spec.get("base") if isinstance(spec, dict) else None
    family = name.split("_")[0] if isinstance(name, str) else None
    family = family if family in FAMILIES else None
    geometry = spec.get("geometry") if isinstance(spec, dict) else None
    if geometry is None:
        geometry = FAMILIES[family].geometry if family else DEFAULT_GEOMETRY
    return family, geometry


def check_recipe(cfg: RunConfig) -> None:
    """Model family, geometry, objective and box crops agree, else ConfigError naming the keys.

    An objective of another family is accepted as an ablation with ``objective.entail_weight=0``
    (contrastive terms only, e.g. HyCoCLIP's box-augmented CLIP baseline), as build_objective
    accepts it.
    """
    family, geometry = model_family(cfg.model)
    kind, boxes = cfg.objective.kind, cfg.data.boxes_per_sample
    needs_boxes = FAMILIES[kind].boxes or cfg.objective.box_pair_weight > 0
    ablation = " (or objective.entail_weight=0: contrastive terms only)"
    if cfg.objective.entail_weight != 0:
        model = cfg.model if isinstance(cfg.model, str) else cfg.model.get("base", "")
        if family is not None and kind != family:
            size = model.partition("_")[2]
            raise ConfigError(
                f"objective.kind={kind!r} does not match model {model!r} (the {family} family): "
                f"use {f'model={kind}_{size}' if size else f'a {kind}_* model'} or "
                f"objective.kind={family}{ablation}"
            )
        if FAMILIES[kind].geometry != geometry:
            raise ConfigError(
                f"objective.kind={kind!r} trains a {FAMILIES[kind].geometry} model, but "
                f"model.geometry is {geometry!r}: use a {kind}_* model{ablation}"
            )
    if needs_boxes and boxes == 0:
        what = f"objective.kind={kind!r}"
        if not FAMILIES[kind].boxes:
            what = f"objective.box_pair_weight={cfg.objective.box_pair_weight}"
        raise ConfigError(
            f"{what} needs box crops but data.boxes_per_sample=0: set "
            "data.boxes_per_sample=1 (and train on grounded shards)"
        )
    if not needs_boxes and boxes > 0:
        raise ConfigError(
            f"data.boxes_per_sample={boxes} loads box crops objective.kind={kind!r} does not use, "
            "and skips every sample without boxes: set data.boxes_per_sample=0"
        )
