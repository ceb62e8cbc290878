"""`hyvl bench`: run the step-time benchmark (tools/bench.py) from a source checkout.

The benchmark lives in ``tools/`` (next to the published-structure HyCoCLIP reference it times
against), which is not part of the installed wheel; this verb finds it relative to the package
and says so clearly when hyvl was installed without its sources.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hyvl.cli.common import OutputFile


def _bench_script() -> Path:
    import hyvl
    from hyvl.errors import HyvlError

    script = Path(hyvl.__file__).resolve().parents[1] / "tools" / "bench.py"
    if not script.is_file():
        raise HyvlError(
            f"{script} not found: `hyvl bench` needs a source checkout of hyvl "
            "(pip install -e .); run `python tools/bench.py` there"
        )
    return script


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="step-time ratios: CLIP vs MERU vs HyCoCLIP vs the published HyCoCLIP structure",
        description="Runs tools/bench.py from the source checkout (same options).",
    )
    p.add_argument("--quick", action="store_true", help="fewer repetitions, < 2 minutes")
    p.add_argument("--json", metavar="FILE", action=OutputFile, help="write the results here")
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu, or cuda[:N]: the GPU set, one JSON on stdout (exit 2 without a GPU)",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="tools/gpu_check.py: the GPU path proved and measured in one run (about 8 minutes "
        "on one H100/H200; with --device cpu its tiny --dry-run)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import importlib.util

    script = _bench_script()
    spec = importlib.util.spec_from_file_location("hyvl_tools_bench", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = (["--quick"] if args.quick else []) + (["--json", args.json] if args.json else [])
    argv += ["--full"] if args.full else []
    return module.main([*argv, "--device", args.device])
