"""Models: towers, projections and the lift (``HyvlModel``), named configs, checkpoints.

Submodules (``hyvl.models.tokenizer``, ``.transforms``, ``.checkpoint``, ...) are attributes
after ``import hyvl.models``, imported on first access (PEP 562) so that importing the package
does not build timm or open_clip.
"""

import importlib

from hyvl.models.embeddings import Embeddings
from hyvl.models.registry import create_model, get_model_config, list_models, resolve_model_config

__all__ = [
    "Embeddings",
    "create_model",
    "get_model_config",
    "list_models",
    "resolve_model_config",
]


def __getattr__(name: str):
    try:
        return importlib.import_module(f"hyvl.models.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"hyvl.models.{name}":
            raise
    raise AttributeError(f"module 'hyvl.models' has no attribute {name!r}")
