"""Preemption under torchrun: a signal to ONE of two processes stops both after the same step,
with one checkpoint of that step (issue 28). The single-process signal cases (the exit codes,
the exact rerun, Ctrl-C) run in the test's process in test_train_reliability.py.

This file is also the worker: ``tests/test_train_preempt.py hyvl-args...`` under torchrun; the
process of rank 1 sends itself SIGTERM while it trains step 2 (the fault is injected here, not
by a hook in hyvl).
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import jpeg, write_tar

ROOT = Path(__file__).resolve().parents[1]
SIGNAL_AT_STEP = 2


def worker(argv):
    import hyvl.train.loop as loop
    from hyvl.cli.main import main

    real = loop.optimizer_step

    def signalling(state, *args, **kwargs):
        if state.step == SIGNAL_AT_STEP - 1 and state.accelerator.process_index == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(state, *args, **kwargs)

    loop.optimizer_step = signalling
    return main(argv)


def test_preempt_signal_to_one_torchrun_rank_stops_every_rank_at_one_step(tmp_path):
    write_tar(
        tmp_path / "data.tar",
        [(f"s{i}", {"jpg": jpeg((16, 16), (20 * i, 60, 90)), "txt": f"picture {i}".encode()})
         for i in range(16)],
    )  # fmt: skip
    overrides = {
        "data.train_shards": str(tmp_path / "data.tar"),
        "data.workers": 0,
        "data.shuffle_buffer": 1,
        "data.boxes_per_sample": 0,
        "objective.kind": "meru",
        "model.vision.image_size": 32,
        "model.vision.depth": 1,
        "model.text.layers": 1,
        "train.cpu": "true",
        "train.batch_size": 4,
        "train.max_steps": 50,
        "train.checkpoint_every": 100,
        "train.eval_every": 0,
        "eval.zeroshot": "",
        "eval.retrieval": "",
    }
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [__file__, "train", "--config", str(ROOT / "configs" / "meru_tiny.yaml")]
    cmd += ["--output-dir", str(out), *(f"{k}={v}" for k, v in overrides.items())]
    cmd += ["--json", str(tmp_path / "summary.json")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    # torchrun reports its workers' exit code (75: checkpoint written, run again) and fails
    assert done.returncode != 0 and "exitcode  : 75" in done.stderr, done.stderr[-3000:]
    assert f"stopped by SIGTERM at step {SIGNAL_AT_STEP}/50" in done.stderr, done.stderr[-3000:]
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == [f"step_{SIGNAL_AT_STEP:07d}"]  # one, of the step both reached
    meta = json.loads((out / "checkpoints" / checkpoints[0] / "meta.json").read_text())
    assert meta["step"] == SIGNAL_AT_STEP and len(meta["processes"]) == 2
    assert {p.name for p in (out / "checkpoints" / checkpoints[0]).glob("rng_*.pt")} == {
        "rng_0.pt",
        "rng_1.pt",
    }
    assert not (out / ".hyvl-lock").exists()
    # what a batch script requeues on (torchrun's own exit code is 1 for any failure)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"]["step"] == SIGNAL_AT_STEP


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1:]))
