"""Writing webdataset shards (``hyvl data make-shards`` and the demo data use this one path).

Each record becomes one sample: ``KEY.jpg`` + ``KEY.json`` (``{"caption", "boxes"?, ...}``)
+ ``KEY.txt`` (the caption, so plain-text readers work) + ``KEY.cls`` when a label is given.
Tars are written with webdataset's ``TarWriter`` and a fixed mtime, so identical input gives
byte-identical shards.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from PIL import Image

from hyvl.errors import DataError
from hyvl.images import BadImage, open_rgb, to_rgb

FIXED_MTIME = 1_700_000_000  # reproducible tars


def safe_key(key: str) -> str:
    """webdataset splits keys at the first dot of the basename: keys must not contain dots."""
    return re.sub(r"[^A-Za-z0-9_\-]", "_", str(key))


def image_key(image: str | Path) -> str:
    """A sample key from an image's path as the source names it: the path without its suffix
    (``a/cat.jpg`` -> ``a_cat``), so images of the same name in two folders stay apart."""
    return safe_key(Path(image).with_suffix("").as_posix().lstrip("./"))


def unique_keys(records: list[dict]) -> int:
    """Give every record a key no other has (tar members are named after it: two samples with
    one key collide and a reader keeps one). A repeated key gets ``_1``, ``_2``, ... (the
    first keeps it): ``one.png`` and ``one.jpg``, two caption lines of one image. Returns how
    many keys were changed."""
    used: set[str] = set()
    changed = 0
    for record in records:
        key = base = safe_key(record["key"])
        n = 0
        while key in used:
            n += 1
            key = f"{base}_{n}"
        used.add(key)
        changed += key != record["key"]
        record["key"] = key
    return changed


def _tar_samples(path: Path) -> int:
    """Samples in a written tar, read back: its distinct keys (member names up to the first dot
    of the basename, as webdataset groups them)."""
    import tarfile

    keys = set()
    with tarfile.open(path) as tar:
        for member in tar:
            folder, _, name = member.name.rpartition("/")
            keys.add((folder, name.split(".", 1)[0]))
    return len(keys)


def _encode(
    record: dict, resize: int | None, quality: int, dropped: Counter | None = None
) -> tuple[dict | None, str | None]:
    """Record -> webdataset sample dict, or (None, skip reason). Boxes with non-numeric or
    non-finite coordinates are left out and counted in ``dropped`` by reason."""
    image = record["image"]
    try:
        image = to_rgb(image) if isinstance(image, Image.Image) else open_rgb(image)
    except BadImage as err:
        return None, err.reason
    caption = (record.get("caption") or "").strip()
    if not caption:
        return None, "empty_caption"
    meta: dict[str, Any] = {"caption": caption}
    scale = 1.0
    if resize and min(image.size) > resize:
        scale = resize / min(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.BICUBIC)
    if record.get("boxes") is not None:
        boxes = []
        normalized = record.get("bbox_format") == "normalized"
        for box in record["boxes"]:
            try:
                bbox = [float(v) for v in box["bbox"]]
            except (TypeError, ValueError):
                bbox = None
            if bbox is None or len(bbox) != 4 or not all(math.isfinite(v) for v in bbox):
                reason = "box_not_finite" if bbox and len(bbox) == 4 else "box_malformed"
                if dropped is not None:
                    dropped[reason] += 1
                continue
            if not normalized:
                bbox = [v * scale for v in bbox]
            boxes.append({"bbox": [round(v, 2) for v in bbox], "text": box["text"]})
        meta["boxes"] = boxes
        if normalized:
            meta["bbox_format"] = "normalized"
    for extra in ("captions", "source"):
        if extra in record:
            meta[extra] = record[extra]
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    sample = {
        "__key__": safe_key(record["key"]),
        "jpg": buf.getvalue(),
        "json": json.dumps(meta).encode(),
        "txt": caption.encode(),
    }
    if record.get("cls") is not None:
        sample["cls"] = str(int(record["cls"])).encode()
    return sample, None


def _write_one(args) -> dict:
    import webdataset as wds

    path, records, resize, quality = args
    skipped: Counter = Counter()
    dropped: Counter = Counter()
    count = 0
    # written straight into write_shards' staging directory, which appears whole or not at all
    with open(path, "wb") as f, wds.TarWriter(f, mtime=FIXED_MTIME, encoder=False) as sink:
        for record in records:
            sample, reason = _encode(record, resize, quality, dropped)
            if reason:
                skipped[reason] += 1
                continue
            sink.write(sample)
            count += 1
    held = _tar_samples(path)  # the count reported is what a reader will find
    if held != count:
        raise DataError(f"{path.name}: {count} samples written but the tar holds {held}")
    return {
        "shard": path.name,
        "samples": count,
        "bytes": path.stat().st_size,
        "skipped": dict(skipped),
        "dropped_boxes": dict(dropped),
    }


def _missing_images(records: list[dict]) -> list[str]:
    return [
        str(r["image"])
        for r in records
        if isinstance(r["image"], (str, Path)) and not Path(r["image"]).is_file()
    ]


def _previous_shards(out_dir: Path, prefix: str) -> set[str]:
    """Shard names the previous manifest of ``prefix`` in ``out_dir`` lists (ours to replace)."""
    try:
        old = json.loads((out_dir / f"{prefix}-manifest.json").read_text())
        names = {s["shard"] for s in old["shards"]}
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    pattern = re.compile(rf"{re.escape(prefix)}-\d{{6}}\.tar")
    return {n for n in names if isinstance(n, str) and pattern.fullmatch(n)}


def write_shards(
    records: Iterable[dict],
    out_dir: str | Path,
    *,
    prefix: str = "shard",
    samples_per_shard: int = 1000,
    workers: int = 1,
    resize: int | None = None,
    quality: int = 90,
    progress: bool = True,
) -> dict:
    """Write ``records`` as ``OUT/PREFIX-000000.tar ...``; returns (and writes) the manifest.

    A record: ``{"key", "image": path | bytes | PIL.Image, "caption", "boxes"?: [{"bbox",
    "text"}], "bbox_format"?, "cls"?}``; a key used twice is made unique (:func:`unique_keys`)
    and each tar is read back to count its samples. Unreadable images are skipped and counted; when no
    image path exists at all (a wrong image root) nothing is written and DataError names them.

    Atomic: shards and manifest are written in a staging directory beside OUT and renamed in
    together (:func:`hyvl.io.atomic_dir`); a failure or a kill leaves the previous shards and
    manifest as they were. Shards of the previous manifest of ``prefix`` that the new one does
    not list are removed; other files in OUT are kept.
    """
    from hyvl.io import atomic_dir
    from hyvl.progress import progress_bar

    out_dir = Path(out_dir)
    records = [dict(r) for r in records]
    unique_keys(records)
    if samples_per_shard <= 0:
        raise DataError("samples per shard must be positive")
    missing = _missing_images(records)
    if records and len(missing) == len(records):
        raise DataError(
            f"none of the {len(records)} images exists (e.g. {', '.join(missing[:3])}): "
            "is --images the right root directory?"
        )
    previous = _previous_shards(out_dir, prefix)
    manifest_name = f"{prefix}-manifest.json"
    with atomic_dir(out_dir, last=manifest_name) as stage:
        jobs = [
            (
                stage / f"{prefix}-{i // samples_per_shard:06d}.tar",
                records[i : i + samples_per_shard],
                resize,
                quality,
            )
            for i in range(0, len(records), samples_per_shard)
        ]
        bar = progress_bar(
            total=len(jobs), desc=f"writing {out_dir.name}", unit="shard", disable=not progress
        )
        results = []
        if workers > 1 and len(jobs) > 1:
            with get_context("spawn").Pool(workers) as pool:
                for res in pool.imap(_write_one, jobs):
                    results.append(res)
                    bar.update()
        else:
            for job in jobs:
                results.append(_write_one(job))
                bar.update()
        bar.close()
        skipped: Counter = Counter()
        dropped: Counter = Counter()
        for r in results:
            skipped.update(r["skipped"])
            dropped.update(r.pop("dropped_boxes"))
        manifest = {
            "samples": sum(r["samples"] for r in results),
            "shards": results,
            "bytes": sum(r["bytes"] for r in results),
            "skipped": dict(skipped),
            "dropped_boxes": dict(dropped),
        }
        if records and not manifest["samples"]:
            raise DataError(
                f"no sample could be written ({', '.join(f'{k}: {v}' for k, v in sorted(skipped.items()))}"
                f"; e.g. {records[0]['image']})"
            )
        (stage / manifest_name).write_text(json.dumps(manifest, indent=2) + "\n")
    for name in previous - {r["shard"] for r in results}:
        (out_dir / name).unlink(missing_ok=True)  # stale shards of the previous manifest
    return manifest


DEMO_ENTRIES = {"train", "val", "zeroshot", "retrieval", "hierarchy.tsv"}


def write_demo(make, out_dir: str | Path, *, overwrite: bool = False, **kwargs) -> Path:
    """``make(directory, **kwargs)`` (a demo world: :func:`hyvl.data.demo.make_demo`, ...)
    written atomically to ``out_dir``.

    An existing demo directory is replaced; any other non-empty directory is refused unless
    ``overwrite`` (its other files are then kept). A failure or a kill leaves the previous
    contents as they were.
    """
    from hyvl.io import atomic_dir, check_out_dir

    out = Path(out_dir)
    ours = (
        out.is_dir()
        and (out / "hierarchy.tsv").is_file()
        and all(p.name in DEMO_ENTRIES for p in out.iterdir())
    )
    check_out_dir(out, overwrite=overwrite, what="hyvl demo data", ours=ours, replace_ours=True)
    with atomic_dir(out) as stage:
        make(stage, **kwargs)
    return out


# ------------------------------------------------------------------------------------------
# Sources for make-shards
# ------------------------------------------------------------------------------------------


def jsonl_rows(path: Path) -> Iterable[tuple[int, Any]]:
    """``(line number, parsed object)`` of each non-empty line of a JSONL file.

    Each line is decoded on its own, so invalid UTF-8, a lone surrogate (``"\\ud800"`` is valid
    JSON but no text can be written with it) or bad JSON is a DataError naming the line.
    """
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err})") from err
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(
                f"{path}:{n}: not valid UTF-8 (byte {err.start + 1} of the line: "
                f"{line[err.start : err.start + 1]!r})"
            ) from err
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{n}: not JSON ({err})") from err
        try:
            json.dumps(row, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as err:
            raise DataError(
                f"{path}:{n}: holds a lone surrogate ({err.object[err.start : err.end]!r}), "
                "which is not text: fix the escape (e.g. a \\ud83d without its pair)"
            ) from err
        if not isinstance(row, dict):
            raise DataError(f"{path}:{n}: not a JSON object")
        yield n, row


def records_from_captions(images_dir: str | Path, captions: str | Path) -> list[dict]:
    """An image folder + a JSONL (``{"image", "caption"}``) or CSV (``image,caption``) file."""
    images_dir, captions = Path(images_dir), Path(captions)
    if not captions.is_file():
        raise DataError(f"{captions}: no such captions file")
    rows: list[dict] = []
    if captions.suffix == ".csv":
        with open(captions, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"image", "caption"} <= set(reader.fieldnames):
                raise DataError(f"{captions}: CSV needs the columns 'image' and 'caption'")
            rows = list(reader)
    else:
        for n, row in jsonl_rows(captions):
            if "image" not in row or "caption" not in row:
                raise DataError(f"{captions}:{n}: needs the keys 'image' and 'caption'")
            rows.append(row)
    return [
        {
            "key": image_key(r["image"]),
            "image": images_dir / r["image"],
            "caption": r["caption"],
            **({"cls": r["cls"]} if r.get("cls") not in (None, "") else {}),
        }
        for r in rows
    ]


def records_from_coco(captions_json: str | Path, images_dir: str | Path) -> list[dict]:
    """COCO captions JSON: one sample per image, its first caption (all kept in json)."""
    path = Path(captions_json)
    try:
        coco = json.loads(path.read_text())
        names = {img["id"]: img["file_name"] for img in coco["images"]}
        caps: dict[Any, list[str]] = {}
        for ann in coco["annotations"]:
            caps.setdefault(ann["image_id"], []).append(ann["caption"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a COCO captions file ({type(err).__name__}: {err})") from err
    return [
        {
            "key": f"{image_id}",
            "image": Path(images_dir) / names[image_id],
            "caption": texts[0],
            "captions": texts,
        }
        for image_id, texts in caps.items()
        if image_id in names
    ]


def records_from_grounded(jsonl: str | Path, images_dir: str | Path | None = None) -> list[dict]:
    """Grounded JSONL: ``{"image", "caption", "boxes": [{"bbox", "text"}], "bbox_format"?}``."""
    path = Path(jsonl)
    base = Path(images_dir) if images_dir else path.parent
    out = []
    for n, row in jsonl_rows(path):
        try:
            image = row["image"]
            boxes = row.get("boxes", [])
            for b in boxes:
                b["bbox"], b["text"]  # noqa: B018 - presence check
        except (KeyError, TypeError) as err:
            raise DataError(
                f"{path}:{n}: bad grounded record ({type(err).__name__}: {err})"
            ) from err
        out.append(
            {
                "key": image_key(image),
                "image": base / image,
                "caption": row.get("caption", ""),
                "boxes": boxes,
                **({"bbox_format": row["bbox_format"]} if "bbox_format" in row else {}),
            }
        )
    return out
