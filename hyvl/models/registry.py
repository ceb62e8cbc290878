"""The model factory: :func:`create_model` from a name (``hyvl.list_models()``), a mapping or a
config, with ``model.init``'s weights (:mod:`hyvl.models.init`) when the config names a source.

The names and their configs are in :mod:`hyvl.models.named` (re-exported here), which the
checkpoint loader uses without building through this module.
"""

from __future__ import annotations

from typing import Any

from hyvl.config import ModelConfig, from_dict, to_dict
from hyvl.models.named import (  # noqa: F401  (the names' home before the split)
    _merge,
    get_model_config,
    list_models,
    resolve_model_config,
)


def create_model(name_or_config: str | dict | ModelConfig, **overrides: Any):
    """Build a :class:`~hyvl.models.model.HyvlModel`: random init, or the towers of the config's
    ``init`` (``openclip_init``, its older name) source; ``model.init_report`` says what was
    copied (:class:`~hyvl.models.init.InitReport`, None without a source).

    ``overrides`` are merged into the config, e.g. ``create_model("meru_tiny", curv_init=0.5)``.
    """
    from hyvl.models.init import init_spec, initialise
    from hyvl.models.model import HyvlModel

    cfg = resolve_model_config(name_or_config)
    if overrides:
        cfg = from_dict(ModelConfig, _merge(to_dict(cfg), overrides), "model")
    spec, key = init_spec(cfg)
    model = HyvlModel(cfg)
    if spec:
        model.init_report = initialise(model, spec, key)
    return model
