"""Data: node x worker splitting (each sample once per epoch), skip counts merged over workers,
and few shards with many workers (resampling, not a hang)."""

import io
import tarfile
from collections import Counter

from PIL import Image

from hyvl.config import DataConfig, TextConfig
from hyvl.data.pipeline import build_train_loader
from hyvl.models.tokenizer import get_tokenizer

TOKENIZER = get_tokenizer(TextConfig(context_length=8))


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (i * 7 % 256, 40, 90)).save(buf, format="JPEG")
    return buf.getvalue()


def _shards(tmp_path, n_shards: int, per_shard: int, corrupt: set[str] = frozenset()):
    keys = []
    for s in range(n_shards):
        with tarfile.open(tmp_path / f"part-{s:03d}.tar", "w") as tar:
            for i in range(per_shard):
                key = f"s{s}_{i}"
                keys.append(key)
                files = {
                    "jpg": b"broken" if key in corrupt else _jpeg(i),
                    "txt": f"caption {key}".encode(),
                }
                for ext, data in files.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return f"{tmp_path}/part-{{000..{n_shards - 1:03d}}}.tar", keys


def _loader(spec, *, rank=0, world_size=1, workers=2, resampled=False, batch_size=5):
    cfg = DataConfig(
        train_shards=spec,
        workers=workers,
        resampled=resampled,
        shuffle_buffer=7,
        boxes_per_sample=0,
        min_box_size=0,
    )
    return build_train_loader(
        cfg,
        batch_size=batch_size,
        image_size=16,
        tokenizer=TOKENIZER,
        seed=1,
        rank=rank,
        world_size=world_size,
    )


def test_nodes_times_workers_read_every_sample_exactly_once_per_epoch(tmp_path):
    spec, keys = _shards(tmp_path, n_shards=8, per_shard=10)
    seen = Counter()
    # 2 ranks x 2 workers; each worker holds 2 shards = 20 samples = 4 batches of 5,
    # so one epoch is 8 batches per rank.
    for rank in range(2):
        it = iter(_loader(spec, rank=rank, world_size=2))
        for _ in range(8):
            seen.update(next(it).keys)
    assert set(seen) == set(keys)
    assert set(seen.values()) == {1}


def test_skips_are_counted_across_workers(tmp_path):
    corrupt = {"s0_2", "s1_0", "s1_4"}
    spec, keys = _shards(tmp_path, n_shards=2, per_shard=6, corrupt=corrupt)
    loader = _loader(spec, workers=2, batch_size=3)
    it = iter(loader)
    got = [k for _ in range(4) for k in next(it).keys]  # one epoch: 2 batches per worker
    assert sorted(got) == sorted(set(keys) - corrupt)
    assert loader.skipped() == {"corrupt_image": 3}


def test_one_shard_many_workers_resamples_instead_of_hanging(tmp_path):
    spec, keys = _shards(tmp_path, n_shards=1, per_shard=4)
    it = iter(_loader(spec, rank=1, world_size=2, workers=2, resampled=True, batch_size=3))
    got = {k for _ in range(6) for k in next(it).keys}
    assert got <= set(keys) and len(got) >= 2
