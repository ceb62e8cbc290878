"""Exact and approximate top-k search in Lorentz (or Euclidean) space.

The reduction. For a fixed curvature c the Lorentz distance is a decreasing function of the
Lorentzian inner product, ``d(q, y) = acosh(-c <q, y>_L) / sqrt(c)`` with
``<q, y>_L = q_s . y_s - q_0 y_0``. So ``argmin_y d(q, y) = argmax_y (q_0, q_s) . (-y_0, y_s)``:
a plain maximum-inner-product search over the augmented vectors ``(-y_0, y_s)`` ranks exactly by
distance, and FAISS's ``IndexFlatIP`` serves it (``augment_items`` / ``augment_queries`` of
:mod:`hyvl.geometry`; for CLIP the unit vectors themselves). FAISS (or the torch matmul) ranks in fp32 inner
products; hyvl then re-ranks a few extra candidates by float64 distances with ties broken by item
index, and a rounding certificate sends queries with near-ties at the cut to the brute force, so
the exact backends always return the brute-force order.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hyvl.errors import HyvlError
from hyvl.geometry import Geometry, get_geometry

RERANK_SLACK = 8  # extra FAISS candidates re-ranked exactly


class Candidates:
    """Distances from queries to chosen rows of ``items``, in float64 (the re-rank step).

    One batched float64 matmul of space components, then the geometry's
    ``distance_from_inner`` (item norms precomputed): at a fifth of the cost of
    ``lorentz.dist`` and more accurate than it in fp32.
    """

    def __init__(self, items: torch.Tensor, geometry: str | Geometry, curv: float | None):
        self.items, self.space, self.curv = items, get_geometry(geometry), curv
        self.sq = items.double().square().sum(-1)

    def distances(self, q: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """(Q, m) fp32 distances from ``q`` (Q, D) to ``items[idx]`` (idx (Q, m), >= 0)."""
        qd = q.double()
        ip = torch.bmm(self.items[idx].double(), qd.unsqueeze(-1)).squeeze(-1)
        q_sq = qd.square().sum(-1, keepdim=True)
        return self.space.distance_from_inner(ip, q_sq, self.sq[idx], self.curv).float()


def _stable_topk(dist: torch.Tensor, k: int, offset: int = 0):
    order = torch.sort(dist, dim=1, stable=True).indices[:, :k]
    return dist.gather(1, order), order + offset


def brute_force(queries, items, k, geometry: str | Geometry, curv, chunk: int = 65536):
    """(Q, k) distances and indices from full pairwise distances; ties -> lower index first."""
    space = get_geometry(geometry)
    best_d, best_i = None, None
    for start in range(0, items.shape[0], chunk):
        d = space.pairwise_distance(queries, items[start : start + chunk], curv)
        d, i = _stable_topk(d, min(k, d.shape[1]), start)
        if best_d is None:
            best_d, best_i = d, i
        else:
            # earlier blocks hold lower indices: concatenating them first keeps ties stable
            cat_d, cat_i = torch.cat([best_d, d], 1), torch.cat([best_i, i], 1)
            order = torch.sort(cat_d, dim=1, stable=True).indices[:, :k]
            best_d, best_i = cat_d.gather(1, order), cat_i.gather(1, order)
    return best_d, best_i


# fp32 matmul rounding bound, relative to |q_aug| |y_aug| (D * 2^-24 is ~3e-5 at D=512 in
# the worst case; accumulated errors are far smaller in practice, hence the margin)
SCORE_RTOL = 1e-4


def rerank(q, qa, cand_s, cand_i, k, exact: Candidates, aug_norm_max: float | None):
    """Top-k of ``exact.items`` for queries ``q`` from ``cand_i``, the candidates with the
    largest fp32 scores ``cand_s`` (inner products of ``qa`` with the augmented items).

    The candidates are re-ranked by float64 distances (:class:`Candidates`), ties broken by
    item index; indices < 0 (approximate indexes may return fewer than asked) rank last.

    With ``aug_norm_max`` (exact backends) the result is certified: every item outside the
    candidates scores at most the last candidate's score; when the k-th result beats that by
    more than the scores' rounding bound, no outside item can reach the top k. Queries without
    the certificate (near-ties at the cut, e.g. many duplicates) fall back to
    :func:`brute_force`, so the result always equals it.
    """
    n, m = exact.items.shape[0], cand_i.shape[1]
    valid = cand_i >= 0
    cand_i = cand_i.clamp_min(0)
    d = torch.where(valid, exact.distances(q, cand_i), float("inf"))
    by_index = torch.sort(cand_i, dim=1, stable=True).indices
    d, cand_i, cand_s = (t.gather(1, by_index) for t in (d, cand_i, cand_s))
    order = torch.sort(d, dim=1, stable=True).indices[:, :k]
    best_d, best_i = d.gather(1, order), cand_i.gather(1, order)
    if aug_norm_max is not None and m < n:
        kth_score = cand_s.gather(1, order).min(dim=1).values
        floor = cand_s.min(dim=1).values
        tol = SCORE_RTOL * qa.norm(dim=-1) * aug_norm_max
        unsure = (kth_score - floor <= tol).nonzero().squeeze(1)
        if len(unsure):
            fd, fi = brute_force(q[unsure], exact.items, k, exact.space, exact.curv)
            best_d[unsure], best_i[unsure] = fd, fi
    return best_d, best_i


class TorchBackend:
    """Exact: one matmul over the augmented vectors ranks by the Lorentz inner product, then
    the ``k + RERANK_SLACK`` best candidates are re-ranked exactly and certified
    (:func:`rerank`), so the result always equals :func:`brute_force`."""

    name = "torch"

    def __init__(self, items: torch.Tensor, geometry: str | Geometry, curv: float | None):
        self.items, self.space, self.curv = items.float(), get_geometry(geometry), curv
        self.exact = Candidates(self.items, self.space, curv)
        self.aug = self.space.augment_items(self.items, curv)
        self.aug_norm_max = float(self.aug.norm(dim=-1).max()) if len(self.aug) else 0.0

    def search(self, queries: torch.Tensor, k: int, score_block: int = 1 << 24):
        q = queries.float()
        n = self.items.shape[0]
        k = min(k, n)
        m = min(n, k + RERANK_SLACK)
        qa = self.space.augment_queries(q, self.curv)
        rows = max(1, score_block // max(n, 1))  # bound the (rows, N) score block in memory
        cand_s, cand_i = [], []
        for start in range(0, q.shape[0], rows):
            s, i = torch.topk(qa[start : start + rows] @ self.aug.T, m, dim=1)
            cand_s.append(s)
            cand_i.append(i)
        return rerank(
            q,
            qa,
            torch.cat(cand_s),
            torch.cat(cand_i),
            k,
            self.exact,
            self.aug_norm_max,
        )


def _faiss():
    try:
        import faiss
    except ImportError as err:
        raise HyvlError(
            "the FAISS backends need faiss: pip install 'hyvl[faiss]' (faiss-cpu)"
        ) from err
    return faiss


class FaissBackend:
    """FAISS over the augmented vectors: ``flat`` (exact, IndexFlatIP), ``hnsw`` or ``ivf``."""

    def __init__(
        self,
        items,
        geometry,
        curv,
        kind: str = "flat",
        nlist: int | None = None,
        nprobe: int | None = None,
        hnsw_m: int = 32,
        ef_search: int = 64,
        prebuilt=None,
    ):
        """``prebuilt``: a FAISS index read from disk (:meth:`write` wrote it for the same
        items and options); it replaces the build, and ``nprobe`` / ``ef_search`` still apply."""
        faiss = _faiss()
        self.name = f"faiss-{kind}"
        self.items, self.curv, self.kind = items.float(), curv, kind
        self.space = get_geometry(geometry)
        self.exact = Candidates(self.items, self.space, curv)
        vecs = self.space.augment_items(self.items, curv)
        if kind != "flat":
            # Graph and cluster indexes need a metric; the augmented item norms vary widely, so
            # MIPS is turned into L2 search (Bachrach et al. 2014): append sqrt(M^2 - |y|^2) to
            # items and 0 to queries; then |q - y|^2 = |q|^2 + M^2 - 2 q.y ranks like q.y.
            sq = (vecs * vecs).sum(-1)
            extra = (sq.max() - sq).clamp_min(0).sqrt().unsqueeze(-1)
            vecs = torch.cat([vecs, extra], dim=-1).contiguous()
        dim = vecs.shape[1]
        if prebuilt is not None:
            index = prebuilt
            if kind == "hnsw":
                index.hnsw.efSearch = ef_search
            elif kind == "ivf" and nprobe:
                faiss.extract_index_ivf(index).nprobe = nprobe
        elif kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_L2)
            index.hnsw.efSearch = ef_search
        elif kind == "ivf":
            nlist = nlist or max(1, int(vecs.shape[0] ** 0.5))
            quantizer = faiss.IndexFlatL2(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_L2)
            index.train(vecs.numpy())
            # a third of the lists: the MIPS->L2 extra coordinate makes clusters track norms
            index.nprobe = nprobe or max(8, nlist // 3)
            self._quantizer = quantizer  # keep it alive as long as the index
        else:
            raise HyvlError(f"unknown FAISS index kind {kind!r} (flat, hnsw, ivf)")
        if prebuilt is None:
            index.add(vecs.numpy())
        self.index = index
        self.aug_norm_max = float(vecs.norm(dim=-1).max()) if len(vecs) else 0.0  # certificate

    def write(self, path: Path) -> str:
        """The FAISS index to ``path`` (atomically: a failure or a kill mid-write leaves the
        previous file whole); returns the SHA-256 of the file, which :func:`read_faiss` checks."""
        import hashlib

        from hyvl.io import write_bytes

        data = _faiss().serialize_index(self.index).tobytes()
        write_bytes(path, data)
        return hashlib.sha256(data).hexdigest()

    def candidates(self, queries: torch.Tensor, n: int):
        """(augmented queries, FAISS scores, item indices) of the ``n`` best candidates."""
        q = self.space.augment_queries(queries.float(), self.curv)
        if self.kind != "flat":
            q = torch.cat([q, torch.zeros(q.shape[0], 1)], dim=-1)
        q = q.float().contiguous()
        scores, idx = self.index.search(q.numpy(), n)
        return q, torch.from_numpy(scores), torch.from_numpy(idx).long()

    def search(self, queries: torch.Tensor, k: int):
        n_items = self.items.shape[0]
        k = min(k, n_items)
        qa, scores, idx = self.candidates(queries, min(n_items, k + RERANK_SLACK))
        # IndexFlatIP scores are fp32 inner products, so the exact kind is certified; the
        # approximate kinds' scores are L2 distances of the MIPS transform: re-rank only.
        certify = self.aug_norm_max if self.kind == "flat" else None
        return rerank(queries.float(), qa, scores, idx, k, self.exact, certify)


def read_faiss(path: Path, sha256: str):
    """The FAISS index :meth:`FaissBackend.write` saved at ``path`` (for ``prebuilt=``), or
    None when the file is not the one of digest ``sha256`` (cut short, damaged, or replaced
    after its stamp was written). The file is read once: hashed, then deserialized."""
    import hashlib

    import numpy as np

    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        return None
    try:
        return _faiss().deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError:  # faiss's own error: a file of another faiss version, say
        return None


def make_backend(name: str, items, geometry, curv, **options):
    """``options`` tune the approximate FAISS indexes (``nlist``, ``nprobe``, ``hnsw_m``,
    ``ef_search``); the exact backends take none."""
    if name in ("torch", "faiss", "flat") and options:
        raise HyvlError(f"the exact {name} backend takes no options (got {sorted(options)})")
    if name == "torch":
        return TorchBackend(items, geometry, curv)
    if name in ("faiss", "flat"):
        return FaissBackend(items, geometry, curv, "flat")
    if name in ("hnsw", "ivf"):
        return FaissBackend(items, geometry, curv, name, **options)  # prebuilt= passes through
    raise HyvlError(f"unknown backend {name!r}: torch, faiss, hnsw or ivf")


def recall_vs_exact(approx, exact_idx: torch.Tensor, queries: torch.Tensor, k: int) -> float:
    """Mean fraction of the exact top-k that ``approx`` also returns (recall@k, in [0, 1])."""
    _, got = approx.search(queries, k)
    hits = [len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(got, exact_idx, strict=True)]
    return sum(hits) / len(hits)
