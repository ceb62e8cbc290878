"""Two training processes (torchrun, gloo) read different shards: the skipped samples that
`hyvl train --json` and metrics.jsonl report are every process's, not the main one's."""

import json
import os
import subprocess
import sys

from conftest import jpeg, write_tar

# shard -> indices of its corrupt samples: every shard has some, so both processes skip
CORRUPT = {0: [1], 1: [2, 5], 2: [6], 3: [0, 3]}
PER_SHARD = 8


def test_two_processes_count_every_corrupt_sample(tmp_path):
    for shard, bad in CORRUPT.items():
        samples = [
            (
                f"s{shard}_{i}",
                {
                    "jpg": b"not a jpeg" if i in bad else jpeg((16, 16), (30 * i, 60, 90)),
                    "txt": f"picture {i} of shard {shard}".encode(),
                },
            )
            for i in range(PER_SHARD)
        ]
        write_tar(tmp_path / f"part-{shard:03d}.tar", samples)
    out = tmp_path / "run"
    # 2 processes x 4 samples per step x 4 steps = each of the 32 samples read exactly once:
    # finite mode (each process its own 2 shards), no shuffle, at most 2 bad in a batch of 4
    overrides = [
        f"data.train_shards={tmp_path}/part-{{000..003}}.tar",
        "data.resampled=false",
        "data.shuffle_buffer=1",
        "data.workers=0",
        "model.vision.image_size=16",
        "model.vision.depth=1",
        "model.text.layers=1",
        "train.cpu=true",
        "train.batch_size=8",
        "train.max_steps=4",
        "train.warmup_steps=1",
        "train.log_every=1",
        "train.checkpoint_every=4",
        "eval.zeroshot=",
        "eval.retrieval=",
    ]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "hyvl", "train", "--config", "clip_tiny", "--output-dir", str(out),
           "--json", str(tmp_path / "summary.json"), *overrides]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]

    total = sum(len(bad) for bad in CORRUPT.values())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["skipped"] == {"corrupt_image": total}
    assert f"skipped samples: corrupt_image {total}" in res.stdout
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 4 and last["skipped_samples"] == total
    # the checkpoint keeps each process's own counts (a resume continues them) and their sum
    meta = json.loads((out / "checkpoints" / "step_0000004" / "meta.json").read_text())
    mine = [p["skipped"].get("corrupt_image", 0) for p in meta["processes"]]
    assert len(mine) == 2 and all(n > 0 for n in mine) and sum(mine) == total
    assert meta["skipped"] == {"corrupt_image": total}
