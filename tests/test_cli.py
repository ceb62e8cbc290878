"""The `hyvl` command itself: help, version, and errors without tracebacks."""

import subprocess
import sys

import hyvl
from hyvl.cli.common import format_table


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "hyvl", *args], capture_output=True, text=True, timeout=120
    )


def test_help_and_version():
    out = run_cli("--help")
    assert out.returncode == 0
    assert "usage: hyvl" in out.stdout
    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"hyvl {hyvl.__version__}"


def test_import_is_light():
    # `import hyvl` and the geometry modules must not pull in the towers' or trainer's stacks
    # (nor the models package, nor the test-only mpmath / hypothesis): scripts that only need
    # hyvl.lorentz should not pay for timm/open_clip/accelerate. One fresh interpreter checks
    # all of it (a process of its own is the point: this test process has imported them all).
    # The command line's parsers (all of `hyvl --help`) come first: they need no torch at all
    # (it takes ~3 s of CPU to import, 10x the rest of `hyvl --help`).
    code = (
        "import sys; from hyvl.cli.main import build_parser; build_parser(); "
        "print('torch' in sys.modules); import hyvl, hyvl.lorentz, hyvl.geometry; "
        "print([m for m in ('accelerate','timm','open_clip','webdataset','transformers', "
        "'hyvl.models','mpmath','hypothesis') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "[]"]


def test_table_alignment():
    text = format_table(
        [{"metric": "top1", "value": 12.5}, {"metric": "top5", "value": 100.0}], title="t"
    )
    lines = text.splitlines()
    assert lines[0] == "t"
    assert lines[1].split() == ["metric", "value"]
    assert lines[3].split() == ["top1", "12.50"]
    assert len({len(line) for line in lines[1:]}) == 1
