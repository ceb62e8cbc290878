"""hyvl: hyperbolic vision-language models (MERU, HyCoCLIP) and their CLIP baseline.

``import hyvl`` stays light: the model factory, the checkpoint loader and the
geometry module are imported on first use, so no tower is built and neither
accelerate nor timm is imported until you ask for a model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "create_model",
    "create_model_and_transforms",
    "get_tokenizer",
    "list_models",
    "geometry",
    "load",
    "lorentz",
    "push_to_hub",
    "save",
    "similarity",
]

# Submodules reachable as attributes (hyvl.lorentz, hyvl.geometry) and name -> (module,
# attribute); both resolved lazily by __getattr__ (PEP 562).
_SUBMODULES = ("geometry", "lorentz")
_LAZY = {
    "create_model": ("hyvl.models.registry", "create_model"),
    "list_models": ("hyvl.models.registry", "list_models"),
    "save": ("hyvl.models.checkpoint", "save"),
    "load": ("hyvl.models.checkpoint", "load"),
    "create_model_and_transforms": ("hyvl.models.factory", "create_model_and_transforms"),
    "get_tokenizer": ("hyvl.models.factory", "get_tokenizer"),
    "similarity": ("hyvl.models.factory", "similarity"),
    "push_to_hub": ("hyvl.models.publish", "push_to_hub"),
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"hyvl.{name}")
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hyvl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover
    from hyvl import geometry, lorentz
    from hyvl.models.checkpoint import load, save
    from hyvl.models.factory import create_model_and_transforms, get_tokenizer, similarity
    from hyvl.models.publish import push_to_hub
    from hyvl.models.registry import create_model, list_models
