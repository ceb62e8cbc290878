"""Turn a raw webdataset sample (``{"__key__", ext: bytes}``) into a :class:`Sample`.

Layouts, detected per sample unless ``data.layout`` forces one:

* ``grounded`` (hyvl): ``KEY.jpg`` + ``KEY.json`` ``{"caption", "boxes": [{"bbox", "text"}]}``,
  bbox in pixels unless ``"bbox_format": "normalized"``.
* ``grit`` (GRIT raw): image + ``json`` with ``caption``, ``noun_chunks`` and ``ref_exps``, each a
  list of ``[start, end, x1, y1, x2, y2, score]`` (box normalised to [0, 1], text =
  ``caption[start:end]``). Boxes are de-duplicated by text.
* ``hycoclip`` (HyCoCLIP's processed shards): ``child.jpg``, ``child.txt``, ``numparents.txt``,
  ``parentNNN.jpg`` / ``parentNNN.txt`` (box crops stored as their own images).
* ``plain``: image (jpg/jpeg/png/webp) + caption (``txt``, or ``json`` with ``caption``);
  optional ``cls``.

A sample that cannot be used raises :class:`Skip` with a reason; a box that cannot be used is
dropped and its reason returned, so callers count both.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass, field

from PIL import Image

from hyvl.images import BadImage, open_rgb, to_rgb

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


class Skip(Exception):
    """The sample is unusable; ``reason`` is the counter key."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class Sample:
    key: str
    image: Image.Image
    caption: str
    # (x1, y1, x2, y2) in pixels of ``image`` and the box text; or pre-cropped box images.
    boxes: list[tuple[tuple[float, float, float, float], str]] = field(default_factory=list)
    box_crops: list[tuple[Image.Image, str]] = field(default_factory=list)
    label: int | None = None

    @property
    def num_boxes(self) -> int:
        return len(self.boxes) + len(self.box_crops)


def decode_image(data: bytes, what: str) -> Image.Image:
    """Fully decoded 8-bit RGB (so truncated files fail here), every mode scaled correctly;
    a damaged or oversized image raises Skip (``corrupt_image``, ``image_too_large``)."""
    try:
        return open_rgb(data, what)
    except BadImage as err:
        raise Skip(err.reason, str(err)) from err


def draft_reduction(size: tuple[int, int], min_side: int) -> int:
    """Largest JPEG DCT reduction (8, 4, 2; else 1) whose decode keeps a side >= ``min_side``.

    libjpeg decodes at 1/2, 1/4 or 1/8 of the size (scaling in the DCT domain), skipping most
    of the inverse transform and the colour conversion of the pixels it does not produce.
    """
    if min_side > 0:
        for reduction in (8, 4, 2):
            if min(size) // reduction >= min_side:
                return reduction
    return 1


def decode_image_draft(
    data: bytes, what: str, min_side: int
) -> tuple[Image.Image, tuple[int, int]]:
    """``(image, full_size)``: a JPEG decoded at the smallest DCT scale (1/8, 1/4, 1/2) whose
    shorter side is still >= ``min_side``, and the (width, height) of the full-size image.

    Anything else (PNG, WebP, a JPEG with no reduction to spare, ``min_side <= 0``) is exactly
    :func:`decode_image`, so those pixels are the same as without draft decoding.
    """
    try:
        with Image.open(io.BytesIO(data)) as probe:  # header only
            full_size, is_jpeg = probe.size, probe.format == "JPEG"
    except Exception:
        return decode_image(data, what), (0, 0)  # raises Skip with the reason
    reduction = draft_reduction(full_size, min_side) if is_jpeg else 1
    if reduction == 1:
        return decode_image(data, what), full_size
    try:
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (full_size[0] // reduction, full_size[1] // reduction))
        image.load()
        return to_rgb(image), full_size
    except Exception as err:
        raise Skip("corrupt_image", f"{what}: {type(err).__name__}: {err}") from err


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as err:
            raise Skip("undecodable_text", str(err)) from err
    return value.strip()


def _json(raw: dict) -> dict | None:
    if "json" not in raw:
        return None
    try:
        obj = json.loads(raw["json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise Skip("bad_json", str(err)) from err
    if not isinstance(obj, dict):
        raise Skip("bad_json", "top level is not an object")
    return obj


def detect_layout(raw: dict) -> str:
    if "child.jpg" in raw or "child.txt" in raw:
        return "hycoclip"
    meta = _json(raw)
    if meta is not None and "boxes" in meta:
        return "grounded"
    if meta is not None and ("noun_chunks" in meta or "ref_exps" in meta):
        return "grit"
    return "plain"


def _image_of(raw: dict, draft: int) -> tuple[Image.Image, tuple[int, int]]:
    for ext in IMAGE_EXTS:
        if ext in raw:
            what = f"{raw.get('__key__')}.{ext}"
            if draft > 0:
                return decode_image_draft(raw[ext], what, draft)
            image = decode_image(raw[ext], what)
            return image, image.size
    raise Skip("missing_image", f"no {'/'.join(IMAGE_EXTS)} member")


def _decode(data: bytes, what: str, draft: int) -> Image.Image:
    return decode_image_draft(data, what, draft)[0] if draft > 0 else decode_image(data, what)


def _caption(raw: dict, meta: dict | None) -> str:
    if "txt" in raw:
        caption = _text(raw["txt"])
    elif meta is not None and "caption" in meta:
        caption = meta["caption"] if isinstance(meta["caption"], str) else ""
        caption = caption.strip()
    else:
        raise Skip("missing_caption")
    if not caption:
        raise Skip("empty_caption")
    return caption


def _check_box(box, text: str, width: int, height: int, min_size: int):
    """Clip a pixel box to the image; return (box, None) or (None, drop reason)."""
    if not text:
        return None, "box_empty_text"
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        return None, "box_malformed"
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return None, "box_not_finite"  # NaN would pass the checks below and clip to an edge
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        return None, "box_outside_image"
    x1, y1, x2, y2 = max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return None, "box_zero_area"
    if x2 - x1 < min_size or y2 - y1 < min_size:
        return None, "box_too_small"
    return (x1, y1, x2, y2), None


def parse_sample(raw: dict, layout: str = "auto", min_box_size: int = 0, draft: int = 0):
    """(Sample, dropped-box reasons) from a raw sample; raises :class:`Skip`.

    ``draft > 0`` decodes JPEGs with :func:`decode_image_draft` (shorter side >= ``draft``).
    Boxes are read and checked (``min_box_size``, clipping) in the pixels of the full-size
    image, then scaled to the decoded one, so every box keeps its content and its drop reason.
    """
    key = raw.get("__key__", "?")
    if layout == "auto":
        layout = detect_layout(raw)
    dropped: list[str] = []
    label = None
    if "cls" in raw:
        try:
            label = int(_text(raw["cls"]))
        except ValueError as err:
            raise Skip("bad_cls", str(err)) from err

    if layout == "hycoclip":
        if "child.jpg" not in raw:
            raise Skip("missing_image", "no child.jpg")
        image = _decode(raw["child.jpg"], f"{key}.child.jpg", draft)
        caption = _text(raw.get("child.txt"))
        if not caption:
            raise Skip("missing_caption" if "child.txt" not in raw else "empty_caption")
        crops = []
        names = sorted(k for k in raw if re.fullmatch(r"parent\d+\.jpg", k))
        for name in names:
            text = _text(raw.get(name[:-4] + ".txt"))
            if not text:
                dropped.append("box_empty_text")
                continue
            try:
                crops.append((_decode(raw[name], f"{key}.{name}", draft), text))
            except Skip:
                dropped.append("box_corrupt_image")
        return Sample(key, image, caption, box_crops=crops, label=label), dropped

    meta = _json(raw)
    image, (w, h) = _image_of(raw, draft)
    caption = _caption(raw, meta)
    boxes = []
    if layout == "grounded" and meta is not None:
        normalized = meta.get("bbox_format") == "normalized"
        for item in meta.get("boxes") or []:
            if not isinstance(item, dict) or "bbox" not in item:
                dropped.append("box_malformed")
                continue
            bbox = item["bbox"]
            if normalized and isinstance(bbox, list) and len(bbox) == 4:
                bbox = [bbox[0] * w, bbox[1] * h, bbox[2] * w, bbox[3] * h]
            text = item.get("text") if isinstance(item.get("text"), str) else ""
            box, reason = _check_box(bbox, text.strip(), w, h, min_box_size)
            if reason:
                dropped.append(reason)
            else:
                boxes.append((box, text.strip()))
    elif layout == "grit" and meta is not None:
        seen = set()
        for entry in (meta.get("noun_chunks") or []) + (meta.get("ref_exps") or []):
            try:
                start, end, x1, y1, x2, y2 = entry[:6]
                text = caption[int(start) : int(end)].strip()
            except (TypeError, ValueError, IndexError):
                dropped.append("box_malformed")
                continue
            if text in seen:
                dropped.append("box_duplicate_text")
                continue
            box, reason = _check_box((x1 * w, y1 * h, x2 * w, y2 * h), text, w, h, min_box_size)
            if reason:
                dropped.append(reason)
            else:
                seen.add(text)
                boxes.append((box, text))
    if image.size != (w, h):  # draft-decoded: box pixels of the full size -> decoded pixels
        sx, sy = image.width / w, image.height / h
        boxes = [((x1 * sx, y1 * sy, x2 * sx, y2 * sy), t) for (x1, y1, x2, y2), t in boxes]
    return Sample(key, image, caption, boxes=boxes, label=label), dropped
