"""An on-disk embedding index: fp32 embeddings + item metadata + the model they came from.

Layout of ``INDEX/``: ``embeddings.safetensors`` (tensor ``embeddings`` (N, D)),
``items.jsonl`` (one ``{"kind": "image"|"text", "item": path/key/text, "caption"?}`` per row)
and ``meta.json`` (``checkpoint``, ``geometry``, ``curv``, ``embed_dim``, ``hyvl_version``).
Approximate FAISS indexes (HNSW, IVF) are saved beside them as ``ann-BACKEND-KIND-OPTIONS.faiss``
(+ ``.json``: the rows they index, a fingerprint of those embeddings and the file's SHA-256) by
``hyvl index build --ann`` or on first use, and read back instead of rebuilt while the embeddings
are unchanged. Both are written atomically (:mod:`hyvl.io`), the stamp last: a failed or killed
write leaves the previous pair usable, and a file that does not match its stamp is rebuilt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from hyvl.errors import CheckpointError, DataError, HyvlError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
INDEX_FILES = ("embeddings.safetensors", "items.jsonl", "meta.json")  # meta.json written last


class EmbeddingIndex:
    def __init__(self, embeddings: torch.Tensor, items: list[dict], meta: dict[str, Any]):
        if embeddings.shape[0] != len(items):
            raise HyvlError(f"{embeddings.shape[0]} embeddings but {len(items)} items")
        self.embeddings = embeddings.float().contiguous()
        self.items = items
        self.meta = meta
        self.directory: Path | None = None  # set by load(): where ANN indexes are kept
        self.skipped: dict[str, int] = {}  # set by build_index: images skipped, by reason
        self._backends: dict = {}

    @property
    def geometry(self) -> str:
        return self.meta["geometry"]

    @property
    def curv(self) -> float | None:
        return self.meta.get("curv")

    def __len__(self) -> int:
        return len(self.items)

    def rows(self, kind: str | None) -> torch.Tensor:
        """Row numbers of the items of ``kind`` (all rows for None)."""
        return torch.tensor(
            [i for i, it in enumerate(self.items) if kind is None or it["kind"] == kind],
            dtype=torch.long,
        )

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write the index to ``directory`` atomically: a failure or a kill mid-write leaves
        the previous index there whole (:func:`hyvl.io.atomic_dir`)."""
        from safetensors.torch import save_file

        from hyvl.io import atomic_dir

        directory = Path(directory)
        with atomic_dir(directory, last=INDEX_FILES[-1], derived=_is_ann_file) as tmp:
            save_file({"embeddings": self.embeddings}, str(tmp / INDEX_FILES[0]))
            with open(tmp / INDEX_FILES[1], "w", encoding="utf-8") as f:
                for item in self.items:
                    f.write(json.dumps(item) + "\n")
            (tmp / INDEX_FILES[2]).write_text(json.dumps(self.meta, indent=2) + "\n")
        self.directory = directory
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> EmbeddingIndex:
        from safetensors.torch import load_file

        from hyvl.io import recover_dir

        directory = Path(directory)
        recover_dir(directory)  # an index swap killed between its two renames
        missing = [f for f in INDEX_FILES if not (directory / f).is_file()]
        if missing:
            raise DataError(f"{directory}: not a hyvl index (missing {', '.join(missing)})")
        try:
            emb = load_file(str(directory / "embeddings.safetensors"))["embeddings"]
        except Exception as err:  # safetensors raises its own error types for corrupt headers
            raise DataError(f"{directory / 'embeddings.safetensors'}: unreadable ({err})") from err
        items = []
        for n, line in enumerate((directory / "items.jsonl").read_text().splitlines(), 1):
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{directory / 'items.jsonl'} line {n}: not JSON ({err})") from err
        try:
            meta = json.loads((directory / "meta.json").read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{directory / 'meta.json'}: not JSON ({err})") from err
        if "geometry" not in meta:
            raise DataError(f"{directory / 'meta.json'}: no 'geometry' (not a hyvl index?)")
        if emb.shape[0] != len(items):
            raise DataError(
                f"{directory}: {emb.shape[0]} embeddings but {len(items)} lines in items.jsonl"
            )
        index = cls(emb, items, meta)
        index.directory = directory
        return index

    def append(self, other: EmbeddingIndex) -> EmbeddingIndex:
        """A new index with ``other``'s rows after this one's; both must come from one model
        (:func:`check_same_model`)."""
        check_same_model(self.meta, other.meta)
        return EmbeddingIndex(
            torch.cat([self.embeddings, other.embeddings]), self.items + other.items, self.meta
        )

    # ------------------------------------------------------------------ search
    def search(
        self,
        queries: torch.Tensor,
        k: int = 10,
        kind: str | None = None,
        backend: str = "torch",
        **options,
    ) -> list[list[dict]]:
        """Top-k items of ``kind`` for each query row: ``[{"rank", "item", "distance", ...}]``.

        ``options`` tune approximate backends (``nprobe``, ``nlist``, ``ef_search``, ``hnsw_m``).
        """
        from hyvl.search.backends import make_backend

        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise HyvlError(f"k must be a positive integer, got {k!r}")
        options = {k_: v for k_, v in options.items() if v is not None}
        key = (backend, kind, tuple(sorted(options.items())))
        if key not in self._backends:
            rows = self.rows(kind)
            if len(rows) == 0:
                raise DataError(f"the index holds no {kind} items")
            if backend in ("hnsw", "ivf") and self.directory is not None:
                engine = self._saved_ann(backend, kind, rows, options)
            else:
                engine = make_backend(
                    backend, self.embeddings[rows], self.geometry, self.curv, **options
                )
            self._backends[key] = (rows, engine)
        rows, engine = self._backends[key]
        dist, idx = engine.search(queries.float(), k)
        # Map to index rows with one tensor gather and build the dicts from Python ints: indexing
        # a tensor element by element costs microseconds per result.
        found = rows[idx].tolist()
        items = self.items
        return [
            [
                {"rank": r + 1, "distance": d, "row": i, **items[i]}
                for r, (d, i) in enumerate(zip(d_row, i_row, strict=True))
            ]
            for d_row, i_row in zip(dist.tolist(), found, strict=True)
        ]

    def build_ann(self, backend: str, **options) -> list[Path]:
        """Build and save ``backend`` (hnsw / ivf) for each item kind; returns the files."""
        if self.directory is None:
            raise HyvlError("build_ann needs an index loaded from (or saved to) a directory")
        paths = []
        for kind in sorted({it["kind"] for it in self.items}):
            self.search(self.embeddings[:1], 1, kind=kind, backend=backend, **options)
            paths.append(self._ann_path(backend, kind, options))
        return paths

    def _ann_path(self, backend: str, kind: str | None, options: dict) -> Path:
        # Build-time options name the file; search-time ones (nprobe, ef_search) apply on load.
        build = (
            f"m{options.get('hnsw_m', 32)}"
            if backend == "hnsw"
            else f"nlist{options.get('nlist') or 'auto'}"
        )
        return self.directory / f"ann-{backend}-{kind or 'all'}-{build}.faiss"

    def _saved_ann(self, backend: str, kind: str | None, rows: torch.Tensor, options: dict):
        """The ANN backend from its saved file when that indexes these embeddings, else built
        and saved (a read-only index directory only costs the rebuild, with a warning)."""
        import logging

        from hyvl.io import write_text
        from hyvl.search.backends import make_backend, read_faiss

        log = logging.getLogger(__name__)
        path = self._ann_path(backend, kind, options)
        emb = self.embeddings[rows].double()
        stamp = {"rows": len(rows), "fingerprint": [emb.sum().item(), emb.square().sum().item()]}
        side = path.with_suffix(".json")
        items = self.embeddings[rows]
        saved = _read_stamp(side)
        # the stamp is written after its file and names the file's SHA-256, so a file replaced
        # without its stamp (a failure between the two writes) is never taken for another one
        if path.is_file() and saved.get("sha256") and all(saved.get(k) == stamp[k] for k in stamp):
            prebuilt = read_faiss(path, saved["sha256"])
            if prebuilt is not None:
                return make_backend(
                    backend, items, self.geometry, self.curv, prebuilt=prebuilt, **options
                )
            log.warning("%s is not the file %s describes; rebuilding it", path, side.name)
        engine = make_backend(backend, items, self.geometry, self.curv, **options)
        try:
            digest = engine.write(path)
            write_text(side, json.dumps({**stamp, "sha256": digest}) + "\n")
        except (OSError, HyvlError) as err:  # read-only or full disk: the search goes on
            # the message, not the exception: a kept log record would keep its frames alive
            log.warning(
                "%s: ANN index not saved (%s); any earlier file is unchanged", path, str(err)
            )
        return engine

    def approximate_recall(
        self,
        k: int,
        kind: str | None = None,
        backend: str = "hnsw",
        sample: int = 100,
        **options,
    ) -> tuple[float, int]:
        """Recall@k of an approximate backend against the exact one on ``sample`` queries.

        The queries are midpoints (in the tangent space at the origin) of seeded random pairs
        of indexed items: near the data like real queries, but not stored vectors, which an
        approximate index finds too easily. Returns ``(recall in [0, 1], queries used)``.
        """
        from hyvl.geometry import get_geometry

        rows = self.rows(kind)
        g = torch.Generator().manual_seed(0)
        a = self.embeddings[rows[torch.randint(len(rows), (sample,), generator=g)]]
        b = self.embeddings[rows[torch.randint(len(rows), (sample,), generator=g)]]
        queries = get_geometry(self.geometry).mean(torch.stack([a, b], dim=1), self.curv)
        k = min(k, len(rows))
        exact = self.search(queries, k, kind=kind, backend="torch")
        approx = self.search(queries, k, kind=kind, backend=backend, **options)
        hits = [
            len({h["row"] for h in x} & {h["row"] for h in e}) / k
            for x, e in zip(approx, exact, strict=True)
        ]
        return sum(hits) / len(hits), len(hits)


def _read_stamp(path: Path) -> dict:
    """An ANN file's stamp, or {} when missing or unreadable (the file is then rebuilt)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def _is_ann_file(name: str) -> bool:
    """A saved ANN index or its stamp: derived from the embeddings, replaced with them."""
    return name.startswith("ann-") and name.endswith((".faiss", ".json"))


def is_index_dir(path: str | Path) -> bool:
    """True when ``path`` holds an index and nothing else (what ``--overwrite`` may replace)."""
    path = Path(path)
    return (path / INDEX_FILES[2]).is_file() and all(
        p.name in INDEX_FILES or _is_ann_file(p.name) for p in path.iterdir()
    )


def _image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS)


@torch.no_grad()
def build_index(
    checkpoint: str | Path,
    images: str | Path | None = None,
    texts: str | Path | None = None,
    batch_size: int = 64,
    *,
    device: str = "cpu",
    shard: Any = None,
    workers: int = 0,
    precision: str = "fp32",
    append_to: dict | None = None,
) -> EmbeddingIndex:
    """Embed an image folder (or shards) and/or a text file (one text per line).

    ``shard`` (:class:`~hyvl.evaluation.Shard`, e.g. ``Shard.from_accelerate()`` under
    torchrun): the processes split the batches and every process returns the whole index, in
    one-process order. ``workers`` / ``precision`` as in ``hyvl eval``. ``append_to``: the meta
    of an index these rows will join, checked (:func:`check_same_model`) before any embedding.
    """
    import hyvl
    from hyvl.evaluation.embed import Shard, embed_images, embed_texts
    from hyvl.evaluation.files import ImageFiles, drop_skipped

    if images is None and texts is None:
        raise HyvlError("nothing to index: give --images and/or --texts")
    lines = read_texts(texts) if texts is not None else []  # before the model: fail fast
    if images is not None:
        from hyvl.data.shards import check_source

        check_source(images)
    shard = shard or Shard()
    model, preprocess, tokenizer = hyvl.load(checkpoint, device=device)
    from hyvl.geometry import require_distance_score, require_single_space
    from hyvl.models.checkpoint import fingerprint

    require_single_space(model, "hyvl index (search by inner products)")
    require_distance_score(model, "hyvl index (search by inner products)")

    meta = {
        "checkpoint": str(Path(checkpoint).resolve())
        if Path(checkpoint).exists()
        else str(checkpoint),
        "fingerprint": fingerprint(model),
        "geometry": model.geometry,
        "curv": model.curv.item() if model.curv is not None else None,
        "embed_dim": model.config.embed_dim,
        "hyvl_version": hyvl.__version__,
    }
    if append_to is not None:
        check_same_model(append_to, meta)
    parts, items, skipped = [], [], {}
    if images is not None:
        root = Path(images)
        if root.is_dir():
            files = _image_files(root)
            if not files:
                raise DataError(f"{root}: no images ({', '.join(sorted(IMAGE_EXTS))})")
            dataset = ImageFiles([(p, 0) for p in files], preprocess)
            batches, total = shard.share(dataset, batch_size, workers)
            emb, labels = embed_images(model, batches, total, shard=shard, precision=precision)
            emb, _, kept, skipped = drop_skipped(emb, labels)
            kept_files = [p for p, k in zip(files, kept.tolist(), strict=True) if k]
            if not kept_files:
                raise DataError(f"{root}: no usable image (skipped: {skipped})")
            items += [{"kind": "image", "item": str(p)} for p in kept_files]
        else:
            emb, pairs, skipped = _embed_shards(
                model, tokenizer, str(images), batch_size, shard, precision
            )
            items += [{"kind": "image", "item": k, "caption": c} for k, c in pairs]
        parts.append(emb)
    if texts is not None:
        parts.append(embed_texts(model, tokenizer, lines, shard=shard, precision=precision))
        items += [{"kind": "text", "item": t} for t in lines]
    index = EmbeddingIndex(torch.cat(parts), items, meta)
    index.skipped = skipped  # images skipped by reason (not saved: a property of this build)
    return index


def check_same_model(base: dict, new: dict, where: str | Path | None = None) -> None:
    """Embeddings described by meta ``new`` may join an index described by ``base``: the same
    model, by its weights' fingerprint (:func:`hyvl.models.checkpoint.fingerprint`; an index
    from before fingerprints: by checkpoint path), not only the same geometry and curvature
    (two CLIP checkpoints share those and their rows are not comparable)."""
    at = f" at {where}" if where else ""
    for key in ("geometry", "embed_dim"):
        if base.get(key) != new.get(key):
            raise HyvlError(
                f"cannot append: {key} {new.get(key)!r} != the index{at}'s {base.get(key)!r}"
            )
    curv, other = base.get("curv"), new.get("curv")
    if curv is not None and abs(curv - (other or 0)) > 1e-6 * curv:
        raise HyvlError(
            f"cannot append: embeddings of curvature {other} into an index{at} of curvature "
            f"{curv} (a different checkpoint?)"
        )
    a, b = base.get("fingerprint"), new.get("fingerprint")
    same = a == b if a and b else base.get("checkpoint") == new.get("checkpoint")
    if not same:
        what = f"model {a}" if a else "a model whose fingerprint it does not record"
        raise HyvlError(
            f"cannot append: the index{at} holds embeddings of {base.get('checkpoint')} "
            f"({what}), these come from {new.get('checkpoint')} (model {b or 'unknown'}); "
            "rows of two models are not comparable: build a new index (another --out, or "
            "--overwrite)"
        )


def read_texts(path: str | Path) -> list[str]:
    """Non-empty stripped lines of a UTF-8 text file; a line that is not UTF-8 is an error
    naming the file and the line (a text cannot be half-indexed)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such texts file")
    lines = []
    for n, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError as err:
            raise DataError(
                f"{path} line {n}: not UTF-8 ({err.reason} at byte {err.start}); re-encode "
                "the file as UTF-8"
            ) from err
        if text:
            lines.append(text)
    if not lines:
        raise DataError(f"{path}: no texts in it")
    return lines


def _embed_shards(model, tokenizer, shards: str, batch_size: int, shard, precision: str):
    """Image embeddings of shards and their ``(key, caption)`` pairs, in shard order."""
    from hyvl.data.pipeline import build_eval_loader
    from hyvl.evaluation.embed import embed_images

    loader = build_eval_loader(
        shards,
        batch_size=batch_size,
        image_size=model.image_size,
        tokenizer=tokenizer,
        rank=shard.rank,
        world=shard.world,
    )
    pairs = []

    def batches():
        for b in loader:
            pairs.append((b.index, [[k, c] for k, c in zip(b.keys, b.captions, strict=True)]))
            yield b.index, b.images

    from hyvl.evaluation.files import gather_counts

    emb, _ = embed_images(model, batches(), shard=shard, precision=precision)
    keys = [pair for batch in shard.gather_json(pairs) for pair in batch]
    return emb, keys, gather_counts(shard, loader.skipped())


def load_index_model(index: EmbeddingIndex, checkpoint: str | Path | None = None):
    """The model behind ``index`` (its recorded checkpoint unless one is given)."""
    import hyvl

    ref = checkpoint or index.meta.get("checkpoint")
    try:
        model, preprocess, tokenizer = hyvl.load(ref)
    except CheckpointError as err:
        raise CheckpointError(
            f"the index's model could not be loaded ({err}); pass --checkpoint"
        ) from err
    check_same_space(index, model, ref)
    return model, preprocess, tokenizer


def check_same_space(index: EmbeddingIndex, model, ref) -> None:
    """Refuse a model whose embeddings do not live where the index's do: another geometry,
    another size or another curvature would give distances that mean nothing."""
    where = f"{index.meta.get('checkpoint', 'the index')}"

    def space(geometry, dim, curv):
        c = f", curvature {curv:.6g}" if curv is not None else ""
        return f"{geometry}, {dim}-d{c}"

    curv = model.curv.item() if model.curv is not None else None
    ours = space(index.geometry, index.meta.get("embed_dim"), index.curv)
    theirs = space(model.geometry, model.config.embed_dim, curv)
    same_curv = curv is None or index.curv is None or abs(curv - index.curv) <= 1e-5 * index.curv
    same_dim = model.config.embed_dim == index.meta.get("embed_dim", model.config.embed_dim)
    differs = model.geometry != index.geometry or not same_dim or not same_curv
    if differs:
        raise HyvlError(
            f"--checkpoint {ref} embeds into {theirs}, but the index was built by {where} "
            f"({ours}): search it with its own model or rebuild the index"
        )
