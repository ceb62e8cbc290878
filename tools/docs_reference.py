"""Reference pages generated from the code, so they cannot go stale.

Used as a mkdocs hook (``hooks:`` in mkdocs.yml): a page holding the marker
``<!-- hyvl:cli -->`` gets every verb's ``--help`` (walked from hyvl's argparse parser), and
``<!-- hyvl:config-keys -->`` every config key of the run-config schema in ``hyvl/config.py``
(type, default, help), grouped by section; and the Sphinx role names the docstrings use
(``:func:``) are dropped from every rendered page. ``python tools/docs_reference.py cli|config``
prints the generated markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterator

CLI_MARKER = "<!-- hyvl:cli -->"
CONFIG_MARKER = "<!-- hyvl:config-keys -->"


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def cli_markdown() -> str:
    """Every verb's --help as printed on a 100-column terminal, one section per verb."""
    saved = {k: os.environ.get(k) for k in ("COLUMNS", "XDG_CACHE_HOME")}
    os.environ["COLUMNS"] = "100"
    # defaults computed from the environment read as a user's own (the cache under ~)
    os.environ["XDG_CACHE_HOME"] = "~/.cache"
    try:
        from hyvl.cli.main import build_parser

        out = []
        for parser in _parsers(build_parser()):
            level = "#" * max(2, min(parser.prog.count(" ") + 1, 4))  # hyvl, VERB: ##; SUB: ###
            out.append(
                f"{level} `{parser.prog}`\n\n```text\n{parser.format_help().rstrip()}\n```\n"
            )
        return "\n".join(out)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def config_markdown() -> str:
    """One table per config section: key, type, default (as JSON) and help."""
    from hyvl.config import fields_table

    sections: dict[str, list[dict]] = {}
    for row in fields_table():
        top = row["key"].split(".")[0] if "." in row["key"] else "(top level)"
        sections.setdefault(top, []).append(row)
    out = []
    for name, rows in sections.items():
        out.append(f"## `{name}`\n\n| key | type | default | help |\n| --- | --- | --- | --- |")
        for r in rows:
            default = json.dumps(r["default"])
            out.append(
                f"| `{r['key']}` | {_cell(r['type'])} | `{_cell(default)}` | {_cell(r['help'])} |"
            )
        out.append("")
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:  # mkdocs hook
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_markdown())
    if CONFIG_MARKER in markdown:
        markdown = markdown.replace(CONFIG_MARKER, config_markdown())
    return markdown


# Docstrings cite other objects with Sphinx roles (:func:`hyvl.load`); Markdown renders the
# backticks as code and leaves the role's name in front of it: drop the name.
_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|obj|exc):(?=<code)")


def on_page_content(html: str, page, config, files) -> str:  # mkdocs hook
    return _ROLE.sub("", html)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "cli"
    print(cli_markdown() if what == "cli" else config_markdown())
