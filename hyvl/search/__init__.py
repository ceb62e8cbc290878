"""Search: an embedding index with exact (torch, FAISS flat) and approximate top-k, traversals."""

from hyvl.search.index import EmbeddingIndex, build_index

__all__ = ["EmbeddingIndex", "build_index"]
