"""Retrieval speed and exactness: torch exact, FAISS through hyvl, and bare FAISS, in one run.

All three search the same random hyperboloid points (fp32 space components) for the same
queries. "bare FAISS" is ``faiss.IndexFlatIP`` over the augmented vectors ``(-y_0, y_s)``
built by hand, with no re-rank and no Python around it: the floor for an exact flat search.
"hyvl faiss" is ``EmbeddingIndex.search(..., backend="faiss")`` (augmentation of the queries,
FAISS, exact Lorentz re-rank of k + slack candidates, deterministic ties, result dicts).
Exactness = fraction of queries whose top-k equals the brute-force ``pairwise_dist`` order.

    python tools/bench_retrieval.py [--items 100000] [--dim 512] [--queries 256] [-k 10] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

# torch and FAISS each bring an OpenMP pool; with the default (active) wait policy the pool that
# ran last keeps spinning on the cores and the other one's next call runs up to 2-3x slower.
# Passive waiting measures each backend alone (override: OMP_WAIT_POLICY=ACTIVE python ...).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from hyvl import lorentz  # noqa: E402
from hyvl.geometry import Lorentz  # noqa: E402
from hyvl.search.backends import brute_force  # noqa: E402
from hyvl.search.index import EmbeddingIndex  # noqa: E402


def timed(fns: dict, repeats: int) -> dict[str, list[float]]:
    """name -> wall times in seconds, one per repeat. The backends take turns within each
    repeat (rotating who goes first), so load from other processes hits all of them alike."""
    for fn in fns.values():
        fn()  # warm-up: lazy imports, backend construction, allocator
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = fns[name]
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=256)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--curv", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch/FAISS threads (0: leave as is)")
    p.add_argument("--json", help="also write the results as JSON here")
    args = p.parse_args(argv)

    import faiss

    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    # radii like trained MERU embeddings (distance to the origin ~ 1-3)
    items = lorentz.exp_map0(torch.randn(args.items, args.dim, generator=g) * 0.1, args.curv)
    queries = lorentz.exp_map0(torch.randn(args.queries, args.dim, generator=g) * 0.08, args.curv)
    meta = {"geometry": "lorentz", "curv": args.curv, "embed_dim": args.dim}
    index = EmbeddingIndex(
        items, [{"kind": "image", "item": str(i)} for i in range(len(items))], meta
    )

    bare = faiss.IndexFlatIP(args.dim + 1)
    bare.add(Lorentz().augment_items(items, args.curv).numpy())

    def run_bare():
        q = Lorentz().augment_queries(queries, args.curv).numpy()
        return bare.search(q, args.k)

    results: dict[str, dict] = {}
    _, truth = brute_force(queries, items, args.k, "lorentz", args.curv)
    fns = {
        "torch exact (hyvl)": lambda: index.search(queries, args.k, backend="torch"),
        "faiss flat (hyvl)": lambda: index.search(queries, args.k, backend="faiss"),
        "faiss flat (bare)": run_bare,
    }
    runs = timed(fns, args.repeats)
    for name, fn in fns.items():
        out = fn()
        if name.endswith("(bare)"):
            got = torch.from_numpy(out[1]).long()
        else:
            got = torch.tensor([[r["row"] for r in row] for row in out])
        exact = float((got == truth).all(dim=1).float().mean())
        seconds = min(runs[name])
        # The ratio to bare FAISS is the median over repeats of time / the same repeat's bare
        # time: neighbours in time share the machine's state, so drift and bursts of load
        # cancel (best-of times alone moved the ratio by +-6% between runs here).
        paired = statistics.median(
            t / b for t, b in zip(runs[name], runs["faiss flat (bare)"], strict=True)
        )
        results[name] = {
            "seconds": seconds,
            "queries_per_s": args.queries / seconds,
            "exact": exact,
            "time_over_bare_faiss": paired,
        }

    print(
        f"{args.items} items x {args.dim} dims, {args.queries} queries, k={args.k}, "
        f"{torch.get_num_threads()} threads, best of {args.repeats} (ratios: median of "
        f"paired repeats), "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
    )
    print(f"{'backend':<22}{'queries/s':>12}{'time / bare':>13}{'exact top-k':>13}")
    for name, r in results.items():
        print(
            f"{name:<22}{r['queries_per_s']:>12.1f}{r['time_over_bare_faiss']:>12.2f}x"
            f"{r['exact']:>13.3f}"
        )
    summary = {
        "config": vars(args)
        | {
            "threads_used": torch.get_num_threads(),
            "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
        },
        "backends": results,
        "hyvl_faiss_over_bare_faiss": results["faiss flat (hyvl)"]["time_over_bare_faiss"],
        "torch_over_bare_faiss": results["torch exact (hyvl)"]["time_over_bare_faiss"],
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
