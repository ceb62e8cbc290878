"""Objectives: embeddings in, named loss terms out (CLIP, MERU, HyCoCLIP; softmax or sigmoid).

``build_objective(cfg, geometry)`` returns an ``nn.Module`` whose ``forward(emb)`` gives
``{"loss", "contrastive", "entail", ...}``; :func:`compute_objective` is the same as a pure
function (no parameters, optionally without any cross-process gather).
"""

from hyvl.objectives.distributed import gather_with_grad
from hyvl.objectives.objective import Objective, build_objective, check_objective, compute_objective

__all__ = [
    "Objective",
    "build_objective",
    "check_objective",
    "compute_objective",
    "gather_with_grad",
]
