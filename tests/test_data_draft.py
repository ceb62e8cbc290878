"""JPEG draft decoding: decode at the size training needs, boxes scaled onto that one decode."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from hyvl.config import DataConfig
from hyvl.data.layouts import decode_image, decode_image_draft, draft_reduction, parse_sample
from hyvl.errors import ConfigError


def _scene(size=(512, 384)) -> Image.Image:
    """Smooth background with a red block at (300, 100)-(420, 260): content a crop must find."""
    w, h = size
    xs = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    ys = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    rgb = np.concatenate([np.broadcast_to(xs, (h, w, 1)), np.broadcast_to(ys, (h, w, 1))], -1)
    rgb = np.concatenate([rgb, np.full((h, w, 1), 200, np.float32)], -1).astype(np.uint8)
    image = Image.fromarray(rgb)
    ImageDraw.Draw(image).rectangle((300, 100, 419, 259), fill=(230, 20, 20))
    return image


def _encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


def test_reduction_rule():
    # the largest of 8, 4, 2 that keeps the shorter side >= the need; 1 when none does
    assert draft_reduction((512, 384), 64) == 4  # 96 >= 64, 48 < 64
    assert draft_reduction((512, 512), 224) == 2
    assert draft_reduction((1024, 1024), 224) == 4
    assert draft_reduction((512, 512), 300) == 1
    assert draft_reduction((512, 512), 0) == 1


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
def test_same_pixels_where_the_draft_cannot_apply(fmt):
    """PNG, WebP and a JPEG without a reduction to spare decode exactly as before."""
    data = _encode(_scene((200, 150)), fmt)
    image, full = decode_image_draft(data, "x", min_side=100)  # 150 // 2 < 100
    assert full == (200, 150)
    assert np.array_equal(np.asarray(image), np.asarray(decode_image(data, "x")))
    if fmt != "JPEG":  # other formats ignore the draft however small the need
        image, _ = decode_image_draft(data, "x", min_side=8)
        assert np.array_equal(np.asarray(image), np.asarray(decode_image(data, "x")))


def test_draft_decode_is_the_downscaled_image():
    data = _encode(_scene(), "JPEG")
    image, full = decode_image_draft(data, "x", min_side=64)
    assert full == (512, 384) and image.size == (128, 96) and image.mode == "RGB"
    reference = decode_image(data, "x").resize((128, 96), Image.Resampling.BOX)
    diff = np.abs(np.asarray(image, np.float32) - np.asarray(reference, np.float32))
    assert diff.mean() < 3.0  # DCT-domain scaling ~ box filter, up to JPEG noise


def _grounded(data: bytes, boxes: list) -> dict:
    meta = {"caption": "a red block", "boxes": boxes}
    return {"__key__": "k", "jpg": data, "json": json.dumps(meta).encode()}


def test_box_crops_land_on_the_same_content():
    data = _encode(_scene(), "JPEG")
    boxes = [
        {"bbox": [300, 100, 420, 260], "text": "red block"},
        {"bbox": [0.0, 0.0, 0.25, 0.25], "text": "corner"},
    ]
    raw = _grounded(data, boxes[:1])
    full, _ = parse_sample(raw, min_box_size=32)
    small, dropped = parse_sample(raw, min_box_size=32, draft=64)
    assert not dropped and small.image.size == (128, 96)
    (box,), (full_box,) = [b for b, _ in small.boxes], [b for b, _ in full.boxes]
    assert box == pytest.approx([c / 4 for c in full_box])
    crop = small.image.crop(tuple(round(c) for c in box))
    want = full.image.crop(tuple(round(c) for c in full_box)).resize(crop.size, Image.BOX)
    diff = np.abs(np.asarray(crop, np.float32) - np.asarray(want, np.float32))
    assert diff.mean() < 4.0
    assert np.asarray(crop, np.float32).mean(axis=(0, 1))[0] > 200  # it is the red block

    # normalized boxes scale the same way
    raw = _grounded(data, boxes[1:])
    raw["json"] = json.dumps({**json.loads(raw["json"]), "bbox_format": "normalized"}).encode()
    sample, _ = parse_sample(raw, draft=64)
    assert sample.boxes[0][0] == pytest.approx((0.0, 0.0, 32.0, 24.0))


def test_box_checks_use_full_size_pixels():
    """A 40 px box survives min_box_size=32 although it is 10 px in the 1/4 decode; a 20 px
    box is dropped for its full size, as without the draft."""
    data = _encode(_scene(), "JPEG")
    boxes = [{"bbox": [10, 10, 50, 50], "text": "a"}, {"bbox": [60, 60, 80, 80], "text": "b"}]
    for draft in (0, 64):
        sample, dropped = parse_sample(_grounded(data, boxes), min_box_size=32, draft=draft)
        assert [t for _, t in sample.boxes] == ["a"] and dropped == ["box_too_small"]


def test_decode_draft_config_checked():
    assert DataConfig().decode_draft == 1.0
    with pytest.raises(ConfigError, match="decode_draft"):
        DataConfig(decode_draft=-1)
