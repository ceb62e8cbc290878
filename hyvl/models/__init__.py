"""Models: towers, projections and the lift (``HyvlModel``), named configs, checkpoints."""

from hyvl.models.embeddings import Embeddings
from hyvl.models.registry import create_model, get_model_config, list_models, resolve_model_config

__all__ = [
    "Embeddings",
    "create_model",
    "get_model_config",
    "list_models",
    "resolve_model_config",
]
