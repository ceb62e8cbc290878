"""``hyvl explore``: a page over an index, its Poincare disk, searches and cones.

:class:`Explorer` holds an index (:class:`~hyvl.search.index.EmbeddingIndex` of a Lorentz
model) laid out on the Poincare disk and answers what the page asks: the points inside a view
box (level of detail: the first ``limit`` of a fixed random order, so zooming in shows more),
an item's neighbours, cone ancestors and descendants and its walk to the origin, and a query's
nearest items, cone and walk. :mod:`hyvl.explore.server` serves it; :meth:`Explorer.export`
writes one self-contained HTML file with the same script and the answers precomputed.

Layout: the items' tangent vectors at the origin are projected on their top-2 principal
directions and rescaled to keep their length, the hyperbolic distance ``d`` to the origin, so a
point's radius on the unit disk is ``tanh(sqrt(c) d / 2)`` (:func:`hyvl.viz.disk_radius_of`
times ``sqrt(c)``) and the rings of constant ``d`` are true distances.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hyvl import lorentz
from hyvl.errors import DataError, HyvlError

#: Debian's chromium, and the flags that start it headless on a machine without network access
#: or a display (nothing asked of Google's services: sync, component updates, background
#: fetches, QUIC probes). The browser tests and tools/explore_screenshot.py launch it with these.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

STATIC = Path(__file__).parent / "static"
KIND_NAMES = ("image", "text", "box_image", "box_text")
CHUNK = 16384


def _label(item: dict) -> str:
    if item["kind"] == "text":
        return item["item"]
    if item.get("caption"):
        return item["caption"]
    path = Path(item["item"])
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def _classes(items: list[dict]) -> tuple[list[str], list[int]]:
    """Class names and one class per item (-1: none). Images in an image folder of class
    sub-folders take their folder's class (``classnames.txt`` beside the folders when it
    names them all, else the folder name, ``_`` as a space); a text equal to a class name
    takes that class."""
    folders = {}
    for it in items:
        if it["kind"] == "image" and "caption" not in it:
            folders.setdefault(str(Path(it["item"]).parent), None)
    if len(folders) < 2:
        return [], [-1] * len(items)
    for folder in folders:
        path = Path(folder)
        name = path.name.replace("_", " ")
        listed = path.parent / "classnames.txt"
        try:
            siblings = sorted(p.name for p in path.parent.iterdir() if p.is_dir())
            names = [x.strip() for x in listed.read_text().splitlines() if x.strip()]
            if len(names) == len(siblings):
                name = names[siblings.index(path.name)]
        except (OSError, ValueError):
            pass
        folders[folder] = name
    names = sorted(set(folders.values()))
    number = {n: i for i, n in enumerate(names)}
    by_text = {n.lower(): i for n, i in number.items()}
    out = []
    for it in items:
        if it["kind"] == "image" and "caption" not in it:
            out.append(number[folders[str(Path(it["item"]).parent)]])
        elif it["kind"] == "text":
            out.append(by_text.get(it["item"].strip().lower(), -1))
        else:
            out.append(-1)
    return names, out


class Cones:
    """Cone membership between a few points and every indexed item in one pass over the index.

    The angles come from MERU's law-of-cosines formula on float64 scalars (the items' norms,
    kept, and one fp32 matrix product); where an angle is within ``SCREEN`` of the
    half-aperture, or the formula is ill-conditioned (near-equal points, an apex next to the
    origin), the exact :func:`hyvl.lorentz.oxy_angle` decides. The same answers as the exact
    element-wise test, reading the index once for a batch of points (the index's size in
    memory traffic dominates: 100k x 512 floats is 200 MB a pass)."""

    SCREEN = 0.02  # rad, far above the fp32 product's effect on the angle (~1e-4 at worst)

    def __init__(self, emb: torch.Tensor, curv: float):
        self.emb, self.c = emb, curv
        self.sq = torch.cat([e.double().square().sum(-1) for e in emb.split(CHUNK)])
        self.norm = self.sq.sqrt()
        self.time = (1 / curv + self.sq).sqrt()
        self.aperture = lorentz.half_aperture(emb, curv).double()

    def _angle(self, ip, ax_norm, ax_time, ch_time):
        c = self.c
        cxy = c * (ip - ax_time * ch_time)  # c <x, y>_L <= -1
        numer = ch_time + cxy * ax_time
        denom = ax_norm * (cxy.square() - 1).clamp_min(0).sqrt()
        angle = torch.acos((numer / denom.clamp_min(1e-300)).clamp(-1, 1))
        # near-equal points: -c<x,y>_L - 1 is a difference of the fp32 product's size
        close = -cxy - 1 < 1e-4 * c * ax_time * ch_time + 1e-6
        shaky = (denom < 1e-6) | (c**0.5 * ax_norm < 1e-3) | close
        return angle, shaky

    def _pass(self, points: torch.Tensor, apex_is_item: bool) -> torch.Tensor:
        pts = points.float().reshape(-1, points.shape[-1])
        p_sq = pts.double().square().sum(-1)
        p_norm, p_time = p_sq.sqrt()[None], (1 / self.c + p_sq).sqrt()[None]
        p_aperture = lorentz.half_aperture(pts, self.c).double()[None]
        out = torch.empty(len(self.emb), len(pts), dtype=torch.bool)
        for start in range(0, len(self.emb), CHUNK):
            sl = slice(start, start + CHUNK)
            ip = (self.emb[sl] @ pts.T).double()  # (chunk, B)
            if apex_is_item:
                aperture = self.aperture[sl, None]
                angle, shaky = self._angle(ip, self.norm[sl, None], self.time[sl, None], p_time)
            else:
                aperture = p_aperture
                angle, shaky = self._angle(ip, p_norm, p_time, self.time[sl, None])
            inside = angle <= aperture
            i, j = (shaky | ((angle - aperture).abs() < self.SCREEN)).nonzero().unbind(1)
            if len(i):
                items, others = self.emb[start + i], pts[j]
                if apex_is_item:
                    exact = (
                        lorentz.oxy_angle(items, others, self.c).double()
                        <= self.aperture[start + i]
                    )
                else:
                    exact = lorentz.oxy_angle(others, items, self.c).double() <= p_aperture[0, j]
                inside[i, j] = exact
            out[sl] = inside
        return out

    def inside(self, x: torch.Tensor) -> torch.Tensor:
        """Bool (N,) for one point ``x`` (D,), (N, B) for points (B, D): the items inside the
        cone of each point."""
        out = self._pass(x, apex_is_item=False)
        return out[:, 0] if x.dim() == 1 else out

    def holding(self, y: torch.Tensor) -> torch.Tensor:
        """Bool (N,) for one point ``y`` (D,), (N, B) for points (B, D): the items whose cone
        holds each point."""
        out = self._pass(y, apex_is_item=True)
        return out[:, 0] if y.dim() == 1 else out


def walk_to_origin(
    x: torch.Tensor, texts: torch.Tensor, curv: float, steps: int = 12, cones: Cones | None = None
) -> list:
    """``hyvl traverse``'s walk (:func:`hyvl.search.traverse.traverse`): ``steps`` points from
    ``x`` to the origin, each with the nearest text whose cone holds it (row into ``texts``),
    candidates tried nearest first, as there. ``cones``: :class:`Cones` of ``texts``, kept
    between walks. ``x`` (B, D) gives B walks, computed together."""
    from hyvl.search.traverse import tangent_path

    many = x.dim() == 2
    xs = x if many else x[None]
    points = torch.cat([tangent_path(p, None, steps, curv) for p in xs])  # (B * steps, D)
    d0 = lorentz.dist0(points, curv).tolist()
    if len(texts):
        d = lorentz.pairwise_dist(points, texts, curv)
        inside = (cones or Cones(texts, curv)).holding(points).T  # (B * steps, T)
        # nearest first, ties to the lower row: the order traverse() tries them in
        masked = torch.where(inside, d, torch.inf)
        best = torch.sort(masked, dim=1, stable=True).indices[:, 0]
        held = inside.any(dim=1)
    walks = []
    for b in range(len(xs)):
        walk = []
        for s in range(steps):
            i = b * steps + s
            chosen = int(best[i]) if len(texts) and bool(held[i]) else None
            walk.append(
                {
                    "step": s,
                    "dist0": d0[i],
                    "text": chosen,
                    "distance": None if chosen is None else float(d[i, chosen]),
                }
            )
        walks.append(walk)
    return walks if many else walks[0]


def check_drawable(index) -> None:
    """Refuse an index the disk cannot show: a CLIP (sphere) index, or an empty one."""
    where = index.directory or "the index"
    if index.geometry != "lorentz" or index.curv is None:
        raise HyvlError(
            f"{where}: the explorer draws the Poincare disk of a Lorentz model (MERU / "
            f"HyCoCLIP); this index is {index.geometry}"
        )
    if len(index) == 0:
        raise DataError(f"{where}: no items to show")


class Explorer:
    """An index laid out on the Poincare disk, with the answers the page asks for.

    ``model`` / ``preprocess`` / ``tokenizer`` (optional): embed typed texts and uploaded
    images; without a model a typed text picks the indexed item whose label matches it.
    """

    def __init__(self, index, model=None, preprocess=None, tokenizer=None, title: str = ""):
        check_drawable(index)
        self.index, self.model = index, model
        self.preprocess, self.tokenizer = preprocess, tokenizer
        self.curv = float(index.curv)
        self.title = title or str(index.meta.get("checkpoint", "index"))
        emb = index.embeddings
        self.items = index.items
        self.labels = [_label(it) for it in self.items]
        self.kinds = np.array([KIND_NAMES.index(it["kind"]) for it in self.items], np.int8)
        self.classnames, cls = _classes(self.items)
        self.cls = np.array(cls, np.int32)
        self.d0 = lorentz.dist0(emb, self.curv)
        tangent = lorentz.log_map0(emb, self.curv)
        # principal directions from at most 20000 rows (seeded): the same picture, a fixed cost
        g = torch.Generator().manual_seed(0)
        sample = tangent[torch.randperm(len(tangent), generator=g)[:20000]]
        self.mean = sample.mean(0)
        _, _, v = torch.linalg.svd(sample - self.mean, full_matrices=False)
        self.basis = v[:2].T.contiguous()  # (D, 2); fewer than 2 directions: padded below
        if self.basis.shape[1] < 2:
            self.basis = torch.nn.functional.pad(self.basis, (0, 2 - self.basis.shape[1]))
        self.xy = self.place(emb).numpy()
        # level of detail: every view shows the first points of one fixed random order, texts
        # (the hierarchy's names) before images
        order = torch.randperm(len(emb), generator=g).numpy()
        self.order = order[np.argsort(self.kinds[order] != 1, kind="stable")]
        self.text_rows = index.rows("text")
        self.cones = Cones(emb, self.curv)
        self.text_cones = Cones(emb[self.text_rows], self.curv) if len(self.text_rows) else None
        self._thumbs: dict[int, bytes] = {}
        self._is_file: dict[int, bool] = {}

    # ------------------------------------------------------------------ layout
    def place(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 2) positions on the unit disk: direction from the principal plane, radius
        ``tanh(sqrt(c) d / 2)`` for the distance ``d`` to the origin."""
        t = lorentz.log_map0(points.float(), self.curv)
        p = t @ self.basis
        unit = p / p.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        d = lorentz.dist0(points.float(), self.curv)
        return unit * torch.tanh(self.curv**0.5 * d / 2).unsqueeze(-1)

    def meta(self) -> dict[str, Any]:
        from hyvl.viz import KIND_COLOURS, class_styles, ring_distances

        rings = ring_distances(float(self.d0.max()))
        counts = {k: int((self.kinds == i).sum()) for i, k in enumerate(KIND_NAMES)}
        return {
            "title": self.title,
            "curv": self.curv,
            "items": len(self.items),
            "max_radius": float(np.sqrt((self.xy**2).sum(1)).max()),
            "counts": {k: v for k, v in counts.items() if v},
            "rings": [{"d": d, "r": float(np.tanh(self.curv**0.5 * d / 2))} for d in rings],
            "kinds": list(KIND_NAMES),
            "kind_colours": [KIND_COLOURS[k] for k in KIND_NAMES],
            "classes": self.classnames,
            "class_styles": class_styles(self.classnames),
            "can_embed_text": self.model is not None,
            "can_embed_image": self.model is not None,
        }

    def points(self, box=None, limit: int = 4000) -> dict[str, Any]:
        """The first ``limit`` points (in the level-of-detail order) inside ``box``
        ``(x0, y0, x1, y1)`` on the unit disk, and how many the box holds."""
        order = self.order
        if box is not None:
            x0, y0, x1, y1 = box
            xy = self.xy[order]
            inside = (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
            order = order[inside]
        rows = order[:limit]
        return {
            "in_view": len(order),
            **self._rows(rows),
        }

    def _rows(self, rows) -> dict[str, list]:
        rows = np.asarray(rows, dtype=np.int64)
        return {
            "rows": rows.tolist(),
            "x": np.round(self.xy[rows, 0], 5).tolist(),
            "y": np.round(self.xy[rows, 1], 5).tolist(),
            "kind": self.kinds[rows].tolist(),
            "cls": self.cls[rows].tolist(),
            "d0": np.round(self.d0.numpy()[rows], 4).tolist(),
            "label": [self.labels[r] for r in rows],
            "thumb": [self.has_thumb(int(r)) for r in rows],
        }

    def _brief(self, row: int, distance: float | None = None) -> dict[str, Any]:
        out = {
            "row": row,
            "kind": self.items[row]["kind"],
            "label": self.labels[row],
            "d0": float(self.d0[row]),
            "x": float(self.xy[row, 0]),
            "y": float(self.xy[row, 1]),
        }
        if distance is not None:
            out["distance"] = distance
        return out

    # ------------------------------------------------------------------ answers
    def _cone(self, x: torch.Tensor, exclude: int | None = None, mask=None) -> list[int]:
        """Rows inside the cone of ``x``, nearest to ``x`` first (``mask``: that cone, if
        known)."""
        emb = self.index.embeddings
        rows = (self.cones.inside(x) if mask is None else mask).nonzero().squeeze(1)
        if exclude is not None:
            rows = rows[rows != exclude]
        d = lorentz.dist(x[None].expand(len(rows), -1), emb[rows], self.curv)
        return rows[torch.sort(d, stable=True).indices].tolist()

    def _holding(self, x: torch.Tensor, exclude: int | None = None, mask=None) -> list[int]:
        """Rows whose cone holds ``x`` (its ancestors), the most generic first."""
        rows = (self.cones.holding(x) if mask is None else mask).nonzero().squeeze(1)
        if exclude is not None:
            rows = rows[rows != exclude]
        return rows[torch.sort(self.d0[rows], stable=True).indices].tolist()

    def _walk(self, x: torch.Tensor) -> list[dict]:
        """The walk of ``x`` (D,) to the origin, or the walks of points (B, D)."""
        from hyvl.search.traverse import tangent_path

        many = x.dim() == 2
        xs = x if many else x[None]
        texts = self.index.embeddings[self.text_rows]
        paths = walk_to_origin(xs, texts, self.curv, cones=self.text_cones)
        out = []
        for p, path in zip(xs, paths, strict=True):
            xy = self.place(tangent_path(p, None, len(path), self.curv)).tolist()
            walk = []
            for s, (x_, y_) in zip(path, xy, strict=True):
                row = None if s["text"] is None else int(self.text_rows[s["text"]])
                label = None if row is None else self.labels[row]
                walk.append({**s, "text": row, "label": label, "x": x_, "y": y_})
            out.append(walk)
        return out if many else out[0]

    def _nearest(self, x: torch.Tensor, k: int, kind: str | None, exclude=None) -> list[dict]:
        kinds = {it["kind"] for it in self.items}
        if kind is not None and kind not in kinds:
            return []
        hits = self.index.search(x[None], k + (exclude is not None), kind=kind)[0]
        return [self._brief(h["row"], h["distance"]) for h in hits if h["row"] != exclude][:k]

    def item(self, row: int, k: int = 8, many: int = 12) -> dict[str, Any]:
        """An item: caption, neighbours, ancestors / descendants by cone, its walk."""
        if isinstance(row, bool) or not 0 <= row < len(self.items):
            raise DataError(f"no item {row}: the index holds {len(self.items)}")
        return self.items_detail([row], k, many)[0]

    def items_detail(self, rows: list[int], k: int = 8, many: int = 12) -> list[dict[str, Any]]:
        """:meth:`item` for several rows, the index read once for all of them."""
        x = self.index.embeddings[rows]
        inside, holding = self.cones.inside(x), self.cones.holding(x)
        hits = self.index.search(x, min(k + 1, len(self.items)))
        walks = self._walk(x)
        out = []
        for j, row in enumerate(rows):
            cone = self._cone(x[j], exclude=row, mask=inside[:, j])
            above = self._holding(x[j], exclude=row, mask=holding[:, j])
            near = [self._brief(h["row"], h["distance"]) for h in hits[j] if h["row"] != row]
            out.append(
                {
                    **self._brief(row),
                    "item": self.items[row]["item"],
                    "caption": self.items[row].get("caption"),
                    "neighbours": near[:k],
                    "ancestors": [self._brief(r) for r in above[:many]],
                    "ancestors_count": len(above),
                    "descendants": [self._brief(r) for r in cone[:many]],
                    "descendants_count": len(cone),
                    "path": walks[j],
                }
            )
        return out

    def embed_text(self, text: str) -> torch.Tensor:
        """The text's embedding by the model; without one, the embedding of the indexed item
        labelled ``text`` (else the first whose label contains it)."""
        if not text.strip():
            raise DataError("the query is empty: type the words to search for")
        if self.model is None:
            want = text.strip().lower()
            labels = [label.lower() for label in self.labels]
            row = labels.index(want) if want in labels else None
            if row is None:
                row = next((i for i, label in enumerate(labels) if want in label), None)
            if row is None:
                raise DataError(
                    f"no indexed item is labelled {text!r}, and there is no model to embed "
                    "a new text: start hyvl explore with --checkpoint"
                )
            return self.index.embeddings[row]
        with torch.no_grad():
            return self.model.encode_text(self.tokenizer([text]))[0].float()

    def embed_image(self, data: bytes) -> torch.Tensor:
        from hyvl.images import BadImage, open_rgb

        if self.model is None:
            raise DataError("no model to embed an image: start hyvl explore with --checkpoint")
        try:
            image = open_rgb(data, "the uploaded image")
        except BadImage as err:
            raise DataError(f"{err} ({err.reason})") from err
        with torch.no_grad():
            return self.model.encode_image(self.preprocess(image).unsqueeze(0))[0].float()

    def query(
        self, text: str | None = None, image: bytes | None = None, kind: str = "auto", k: int = 10
    ) -> dict[str, Any]:
        """A typed text or an uploaded image: its nearest items (``kind``: ``auto`` =
        ``hyvl retrieve``'s default, images for a text and texts for an image; ``image``,
        ``text`` or ``any``), the items inside its cone and its walk to the origin."""
        if kind not in ("auto", "image", "text", "any"):
            raise DataError(f"kind {kind!r}: auto, image, text or any")
        if image is not None:
            x, label, qkind = self.embed_image(image), "uploaded image", "image"
        else:
            x, label, qkind = self.embed_text(text or ""), text, "text"
        want = {"auto": "text" if qkind == "image" else "image", "any": None}.get(kind, kind)
        cone = self._cone(x)
        xy = self.place(x[None])[0].tolist()
        return {
            "query": label,
            "kind": qkind,
            "d0": float(lorentz.dist0(x, self.curv)),
            "x": xy[0],
            "y": xy[1],
            "results": self._nearest(x, k, want),
            "cone": cone[:5000],
            "cone_count": len(cone),
            "path": self._walk(x),
        }

    # ------------------------------------------------------------------ thumbnails
    def has_thumb(self, row: int) -> bool:
        """An image item that is a file (checked once per item)."""
        if row not in self._is_file:
            it = self.items[row]
            self._is_file[row] = (
                it["kind"] == "image" and "caption" not in it and Path(it["item"]).is_file()
            )
        return self._is_file[row]

    def thumb(self, row: int, size: int = 64) -> bytes | None:
        """A JPEG thumbnail of an image item that is a file (None for the others)."""
        if not (0 <= row < len(self.items)) or not self.has_thumb(row):
            return None
        if row not in self._thumbs:
            from hyvl.images import BadImage, open_rgb

            try:
                image = open_rgb(self.items[row]["item"])
            except BadImage:
                return None
            image.thumbnail((size, size))
            buf = io.BytesIO()
            image.save(buf, format="JPEG", quality=80)
            if len(self._thumbs) > 4096:  # a bounded cache
                self._thumbs.pop(next(iter(self._thumbs)))
            self._thumbs[row] = buf.getvalue()
        return self._thumbs[row]

    # ------------------------------------------------------------------ the page
    def page(self, data: dict | None = None) -> str:
        """The HTML page: script and style inlined from the package (no CDN, no network);
        ``data`` (an export's precomputed answers) makes it work without a server."""
        script = (STATIC / "explore.js").read_text(encoding="utf-8")
        style = (STATIC / "explore.css").read_text(encoding="utf-8")
        html = (STATIC / "index.html").read_text(encoding="utf-8")
        payload = "null" if data is None else json.dumps(data, separators=(",", ":"))
        # a '</' inside the JSON would close the script element early
        payload = payload.replace("</", "<\\/")
        return (
            html.replace("/*STYLE*/", style)
            .replace("/*DATA*/null", payload)
            .replace("/*SCRIPT*/", script)
            .replace("{{title}}", _html_escape(self.title))
        )

    def export(self, directory: str | Path, max_points: int = 3000, thumbs: int = 600) -> Path:
        """``DIRECTORY/index.html``: the page with the first ``max_points`` points (texts
        first), each one's answers precomputed, and up to ``thumbs`` thumbnails inlined."""
        from hyvl.io import write_text
        from hyvl.progress import progress_bar

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        shown = self.order[:max_points]
        details = {}
        rows = [int(r) for r in shown]
        with progress_bar(total=len(rows), desc="export", unit="item") as bar:
            for start in range(0, len(rows), 64):  # 64 items per pass over the index
                batch = rows[start : start + 64]
                for row, detail in zip(batch, self.items_detail(batch, 6, 8), strict=True):
                    details[row] = detail
                bar.update(len(batch))
        pictures = {}
        for row in shown.tolist():
            if len(pictures) >= thumbs:
                break
            data = self.thumb(int(row), size=48)
            if data is not None:
                pictures[row] = "data:image/jpeg;base64," + base64.b64encode(data).decode()
        data = {
            "meta": self.meta(),
            "points": self._rows(shown),
            "items": details,
            "thumbs": pictures,
        }
        data["meta"]["can_embed_text"] = data["meta"]["can_embed_image"] = False
        data["meta"]["exported"] = len(shown)
        return write_text(directory / "index.html", self.page(data))


def _html_escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def open_explorer(index_dir: str | Path, checkpoint: str | Path | None = None) -> Explorer:
    """The explorer of ``index_dir`` with its model (``checkpoint``, else the one the index
    records; when that cannot be loaded, typed texts pick indexed items by their labels)."""
    import logging

    from hyvl.errors import CheckpointError
    from hyvl.search.index import EmbeddingIndex, load_index_model

    index = EmbeddingIndex.load(index_dir)
    check_drawable(index)  # before loading any model
    model = preprocess = tokenizer = None
    try:
        model, preprocess, tokenizer = load_index_model(index, checkpoint)
        model.eval()
    except CheckpointError as err:
        if checkpoint is not None:
            raise
        logging.getLogger(__name__).warning(
            "%s; queries pick indexed items by label (pass --checkpoint to embed texts and images)",
            err,
        )
    name = getattr(getattr(model, "config", None), "name", None)
    where = index.meta.get("checkpoint", "?")
    with contextlib.suppress(ValueError):  # shown relative to here when it lies below
        where = str(Path(where).relative_to(Path.cwd()))
    title = f"{name} ({where})" if name else str(where)
    title += f", curvature c = {index.curv:.3g}" if index.curv is not None else ""
    return Explorer(index, model, preprocess, tokenizer, title=title)
