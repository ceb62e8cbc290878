"""The examples in README.md and docs/ run as printed.

A code block is checked when the line before it is a marker comment:

- ``<!-- docs-check -->`` before a ``console`` block: each ``$ hyvl ...`` line runs in this
  process (in an empty folder) and what it prints, stdout and stderr as a terminal shows them,
  must be the lines under it;
- ``<!-- docs-check: python -->`` before a ``python`` block: the code runs and what it prints
  must be the block right after it;
- ``<!-- docs-check: skip (why) -->``: not run (it trains, or needs data a test does not have).

In expected output a line ``...`` stands for any number of lines. In the README and the manual's
pages (tutorials, how-to, reference, explanation) every block that shows a command's output must
carry one of the markers, so no example goes unnoticed when it stops being true.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!--\s*docs-check(?::\s*(?P<kind>python|skip\b[^>]*?))?\s*-->$")
MANUAL = ("tutorials", "how-to", "reference", "explanation")


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[dict]:
    """Fenced code blocks: lang, text, the line they start on and the marker before them."""
    out, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^(\s*)(`{3,})(\w*)", lines[i])
        if not fence:
            i += 1
            continue
        start, ticks = i, fence.group(2)
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(ticks):
            j += 1
        before = next((lines[k].strip() for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        mark = MARKER.match(before)
        out.append(
            {
                "lang": fence.group(3),
                "text": "\n".join(lines[start + 1 : j]),
                "line": start + 1,
                "marker": None if mark is None else (mark.group("kind") or "console"),
            }
        )
        i = j + 1
    return out


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def _marked(kind: str) -> list:
    seen, params = set(), []
    for path in documents():
        found = blocks(path)
        for n, b in enumerate(found):
            if b["marker"] != kind:
                continue
            if kind == "python":
                follow = found[n + 1] if n + 1 < len(found) else None
                key = b["text"]
                if key in seen:  # the same snippet in two places runs once
                    continue
                seen.add(key)
                params.append(pytest.param(b, follow, id=f"{rel(path)}:{b['line']}"))
            else:
                params.append(pytest.param(b, id=f"{rel(path)}:{b['line']}"))
    return params


def matches(expected: str, actual: str) -> bool:
    """Line by line, trailing spaces ignored; an expected line '...' matches any lines."""
    parts = []
    for line in expected.strip("\n").splitlines():
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(re.escape(line.rstrip()) + r"\n")
    got = "".join(line.rstrip() + "\n" for line in actual.strip("\n").splitlines())
    return re.fullmatch("".join(parts), got) is not None


def run_hyvl(command: str) -> str:
    from hyvl.cli.main import main

    argv = shlex.split(command, comments=True)
    assert argv and argv[0] == "hyvl", f"only hyvl commands are checked: {command!r}"
    buf = io.StringIO()
    # argparse's own errors exit: what they print is still compared
    out, err = contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf)
    with out, err, contextlib.suppress(SystemExit):
        main(argv[1:])
    return buf.getvalue()


@pytest.mark.parametrize("block", _marked("console"))
def test_console_example_prints_what_it_shows(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "100")
    assert block["lang"] == "console", (
        "docs-check marks console blocks (python: docs-check: python)"
    )
    commands: list[tuple[str, list[str]]] = []
    for line in block["text"].splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        else:
            assert commands, f"output before any command: {line!r}"
            commands[-1][1].append(line)
    assert commands
    for command, expected in commands:
        got = run_hyvl(command)
        assert matches("\n".join(expected), got), (
            f"$ {command}\n--- shown:\n" + "\n".join(expected) + f"\n--- printed:\n{got}"
        )


@pytest.mark.parametrize(("block", "output"), _marked("python"))
def test_python_example_prints_what_it_shows(block, output, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert block["lang"] == "python"
    assert output is not None and output["lang"] in ("text", ""), "no output block after it"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(block["text"], f"<docs {block['line']}>", "exec"), {"__name__": "__docs__"})
    assert matches(output["text"], buf.getvalue()), buf.getvalue()


def _shows_output(b: dict, follow: dict | None) -> bool:
    if b["lang"] == "console":
        return any(line and not line.startswith("$ ") for line in b["text"].splitlines())
    return b["lang"] == "python" and follow is not None and follow["lang"] == "text"


def test_every_example_with_output_is_checked_or_marked():
    unmarked = []
    for path in documents():
        parts = path.relative_to(REPO).parts
        if path.name != "README.md" and (len(parts) < 3 or parts[1] not in MANUAL):
            continue  # measured-figure pages (benchmarks, learning, ...) keep their own records
        found = blocks(path)
        for n, b in enumerate(found):
            follow = found[n + 1] if n + 1 < len(found) else None
            if b["marker"] is None and _shows_output(b, follow):
                unmarked.append(f"{rel(path)}:{b['line']}")
    assert not unmarked, (
        "mark these examples <!-- docs-check --> (console), <!-- docs-check: python --> or "
        f"<!-- docs-check: skip (why) -->: {unmarked}"
    )


def test_checks_are_found_and_a_wrong_example_fails():
    assert len(_marked("console")) >= 3 and len(_marked("python")) >= 2
    shown = "hyvl config list\nname  description\n...\nclip_tiny  CLIP"
    assert matches("a\n...\nd", "a\nb\nc\nd") and matches("a\n...\nb", "a\nb")
    assert not matches(shown, "hyvl config list\nname  description\nclip_tiny  MERU")
    assert not matches("a\nb", "a\nb\nc")


def test_readme_links_point_to_files_that_exist():
    text = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not re.match(r"^[a-z]+://", link)]
    assert local
    missing = [link for link in local if not (REPO / link).exists()]
    assert not missing, missing
    assert len(text.splitlines()) <= 300


def test_reference_pages_cover_every_verb_and_every_config_key():
    """The site's CLI and config references are generated (tools/docs_reference.py): every verb's
    help and every schema key is on them, so a new option or key documents itself."""
    import importlib.util

    from hyvl.cli.main import build_parser
    from hyvl.config import fields_table

    spec = importlib.util.spec_from_file_location(
        "docs_reference", REPO / "tools/docs_reference.py"
    )
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    cli = ref.cli_markdown()
    progs = [p.prog for p in ref._parsers(build_parser())]
    assert len(progs) > 20 and all(f"`{prog}`" in cli for prog in progs)
    assert "(default: 64)" in cli and "~/.cache/hyvl/prototypes" in cli
    keys = ref.config_markdown()
    assert all(f"`{row['key']}`" in keys for row in fields_table())
    page = (REPO / "docs/reference/cli.md").read_text()
    assert ref.on_page_markdown(page, None, None, None).count("```text") == len(progs)
