"""Data loader throughput: hyvl's training loader against a decode-only webdataset baseline.

Both read the same shards with the same number of DataLoader workers. The baseline is the least
any loader must do: read the tars, decode every image with PIL and apply the same image
transform (no layout parsing, no box crops, no tokenisation). The ratio loader/baseline says how
much the hyvl pipeline (box crop + its transform, tokenisation in the workers, skip counting,
seeded streams) costs on top of that. Goal: ratio >= 0.90 with boxes_per_sample=0.

    python tools/bench_data.py                      # demo shards written to a temp dir
    python tools/bench_data.py --shards 'DIR/train/*.tar' --workers 0 1 2 --json out.json
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hyvl.cli.common import print_table
from hyvl.config import DataConfig, TextConfig
from hyvl.data.demo import make_demo
from hyvl.data.pipeline import build_train_loader, expand_shards
from hyvl.models.tokenizer import get_tokenizer
from hyvl.models.transforms import image_transform


class _DecodeOnly(torch.utils.data.IterableDataset):
    """Bare webdataset: tar -> PIL decode -> image transform, batched in the worker."""

    def __init__(self, urls, image_size, batch_size):
        super().__init__()
        self.urls, self.image_size, self.batch_size = urls, image_size, batch_size

    def __iter__(self):
        import webdataset as wds

        info = torch.utils.data.get_worker_info()
        urls = self.urls if info is None else self.urls[info.id :: info.num_workers]
        transform = image_transform(self.image_size, train=True)
        ds = (
            wds.WebDataset(urls, shardshuffle=False, nodesplitter=None, workersplitter=None)
            .repeat()
            .decode("pil")
            .to_tuple("jpg;png;jpeg;webp")
        )
        batch = []
        for (image,) in ds:
            batch.append(transform(image))
            if len(batch) == self.batch_size:
                yield torch.stack(batch)
                batch = []


def write_jpeg_shard(path: Path, size: int, samples: int, seed: int = 0) -> str:
    """A grounded shard of ``samples`` size x size JPEGs (smooth background, a few blocks, one
    box per sample on a block): what a photo-sized dataset looks like to the decoder."""
    import tarfile

    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    with tarfile.open(path, "w") as tar:
        for i in range(samples):
            tint = rng.uniform(0.3, 1.0, 3).astype(np.float32)
            rgb = (ramp[None, :, None] * tint + ramp[:, None, None] * (1 - tint)) / 1.3
            rgb += rng.normal(0, 6, (size, size, 3)).astype(np.float32)  # texture, like photos
            image = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
            draw = ImageDraw.Draw(image)
            for _ in range(4):
                x, y = rng.integers(0, size * 3 // 4, 2)
                w = int(rng.integers(size // 8, size // 3))
                draw.rectangle(
                    (x, y, x + w, y + w), fill=tuple(int(v) for v in rng.integers(0, 255, 3))
                )
            buf = io.BytesIO()
            image.save(buf, "JPEG", quality=90)
            meta = {
                "caption": "blocks",
                "boxes": [{"bbox": [int(x), int(y), int(x + w), int(y + w)], "text": "a block"}],
            }
            for ext, data in (("jpg", buf.getvalue()), ("json", json.dumps(meta).encode())):
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(path)


def draft_comparison(
    root: Path, inputs, outputs, batch_size: int, batches: int, reps: int, workers: int = 0
):
    """Loader with one box per sample and draft decoding vs today's full-size decode-only loop
    (and the loader without draft, for context), on the same JPEGs, in one process, taking
    turns (base, draft, no-draft, base, ...) so machine load hits all alike; medians."""
    tokenizer = get_tokenizer(TextConfig(context_length=32))
    rows = []
    for size in inputs:
        shard = write_jpeg_shard(root / f"jpeg{size}.tar", size, samples=2 * batch_size)
        for out in outputs:

            def loader(draft: float, shard=shard, out=out):
                cfg = DataConfig(
                    train_shards=shard,
                    workers=workers,
                    shuffle_buffer=1,
                    boxes_per_sample=1,
                    min_box_size=0,
                    decode_draft=draft,
                )
                return build_train_loader(
                    cfg, batch_size=batch_size, image_size=out, tokenizer=tokenizer
                )

            runs = {
                "decode_only": (_decode_only_loader([shard], out, batch_size, workers), len),
                "draft": (loader(1.0), lambda b: len(b.keys)),
                "no_draft": (loader(0.0), lambda b: len(b.keys)),
            }
            rates: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(reps):
                for name, (it, count) in runs.items():
                    rates[name].append(_rate(it, batches, max(1, workers) * 2, count))
            med = {name: statistics.median(r) for name, r in rates.items()}
            rows.append(
                {
                    "input_px": size,
                    "output_px": out,
                    "decode_only_samples_per_s": round(med["decode_only"], 1),
                    "loader_draft_samples_per_s": round(med["draft"], 1),
                    "loader_full_samples_per_s": round(med["no_draft"], 1),
                    "draft_over_full": round(med["draft"] / med["decode_only"], 3),
                    "nodraft_over_full": round(med["no_draft"] / med["decode_only"], 3),
                }
            )
            print(
                f"{size} px JPEG -> {out} px: draft loader / full decode-only "
                f"{rows[-1]['draft_over_full']:.2f}x",
                flush=True,
            )
    return rows


def _decode_only_loader(urls, image_size: int, batch_size: int, workers: int):
    return torch.utils.data.DataLoader(
        _DecodeOnly(urls, image_size, batch_size),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=2 if workers else None,
    )


def _rate(iterable, batches: int, warmup: int, count) -> float:
    it = iter(iterable)
    for _ in range(warmup):
        next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        n += count(next(it))
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shards", help="shard spec (default: demo shards in a temp dir)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=20, help="timed batches per measurement")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument(
        "--boxes",
        type=int,
        nargs="+",
        default=[0, 1],
        help="box crops per sample in the hyvl loader",
    )
    ap.add_argument(
        "--draft-inputs", type=int, nargs="*", default=[512, 1024], help="JPEG sizes (px)"
    )
    ap.add_argument(
        "--draft-outputs", type=int, nargs="*", default=[224, 64], help="training sizes (px)"
    )
    ap.add_argument("--draft-batches", type=int, default=4, help="timed batches per turn")
    ap.add_argument("--draft-reps", type=int, default=3, help="turns per variant")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    tmp = None
    shards = args.shards
    if shards is None:
        tmp = tempfile.TemporaryDirectory()
        make_demo(
            Path(tmp.name),
            train_samples=2000,
            val_samples=8,
            zeroshot_per_class=1,
            retrieval_images=2,
            samples_per_shard=250,
        )
        shards = str(Path(tmp.name) / "train" / "*.tar")
    urls = expand_shards(shards)
    tokenizer = get_tokenizer(TextConfig(context_length=32))
    torch.set_num_threads(1)

    results = []
    for workers in args.workers:
        warm = max(1, workers) * 2
        base = _decode_only_loader(urls, args.image_size, args.batch_size, workers)
        base_rate = _rate(base, args.batches, warm, len)
        for boxes in args.boxes:
            cfg = DataConfig(
                train_shards=shards,
                workers=workers,
                resampled=True,
                shuffle_buffer=256,
                boxes_per_sample=boxes,
                min_box_size=0,
            )
            loader = build_train_loader(
                cfg,
                batch_size=args.batch_size,
                image_size=args.image_size,
                tokenizer=tokenizer,
                seed=0,
            )
            hyvl_rate = _rate(loader, args.batches, warm, lambda b: len(b.keys))
            results.append(
                {
                    "workers": workers,
                    "boxes_per_sample": boxes,
                    "hyvl_samples_per_s": round(hyvl_rate, 1),
                    "decode_only_samples_per_s": round(base_rate, 1),
                    "ratio": round(hyvl_rate / base_rate, 3),
                }
            )
            print(
                f"workers={workers} boxes={boxes}: hyvl {hyvl_rate:8.1f} samples/s   "
                f"decode-only {base_rate:8.1f} samples/s   ratio {hyvl_rate / base_rate:.3f}",
                flush=True,
            )
    print_table(results, title="loader throughput (goal: ratio >= 0.90 at boxes_per_sample=0)")
    out: dict = {"shards": shards, "results": results}
    if args.draft_inputs and args.draft_outputs:
        with tempfile.TemporaryDirectory() as jpeg_dir:
            draft = draft_comparison(
                Path(jpeg_dir),
                args.draft_inputs,
                args.draft_outputs,
                args.batch_size,
                args.draft_batches,
                args.draft_reps,
            )
        print_table(
            draft,
            title="JPEG draft decoding: loader with 1 box/sample over full-size decode-only "
            "(goal: >= 1.3 at 224 px from 512 px)",
        )
        out["draft"] = draft
        for row in draft:
            out[f"draft_over_full_{row['output_px']}_from_{row['input_px']}"] = row[
                "draft_over_full"
            ]
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
