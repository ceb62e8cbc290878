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
import json
import sys
import tempfile
import time
from pathlib import Path

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
        base = torch.utils.data.DataLoader(
            _DecodeOnly(urls, args.image_size, args.batch_size),
            batch_size=None,
            num_workers=workers,
            prefetch_factor=2 if workers else None,
        )
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
    if args.json:
        Path(args.json).write_text(json.dumps({"shards": shards, "results": results}, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
