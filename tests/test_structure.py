"""Structural rules of the package, checked on its source: no import cycles, small modules,
the geometry name compared in one place."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "hyvl"


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """Every hyvl module ``module`` imports, at any depth (functions too), TYPE_CHECKING aside.

    An import of ``a.b.c`` is an edge to ``a.b.c`` (the most specific module named), not to the
    parents Python also initialises: a package ``__init__`` re-exporting its submodules is not a
    cycle that can bite.
    """
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in found if name in modules}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    return {
        name: _imports(ast.parse(path.read_text()), name, path.name == "__init__.py", modules)
        - {name}
        for name, path in files.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_cycle_finder_sees_function_level_imports(tmp_path):
    pkg = tmp_path / "hyvl"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "__init__.py").write_text("")
    (pkg / "models" / "a.py").write_text("from hyvl.models.b import f\n")
    (pkg / "models" / "b.py").write_text("def f():\n    from . import a\n")
    (pkg / "models" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from hyvl.models import a\n"
    )
    graph = import_graph(pkg)
    assert graph["hyvl.models.c"] == set()
    assert find_cycle(graph) == ["hyvl.models.a", "hyvl.models.b", "hyvl.models.a"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


GEOMETRY_NAMES = {"lorentz", "euclidean"}


def _names_geometry(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in GEOMETRY_NAMES
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_names_geometry(e) for e in node.elts)
    return False


def geometry_comparisons(root: Path = ROOT) -> dict[str, int]:
    """module -> how often its code compares against a geometry name (==, !=, in, match)."""
    counts: dict[str, int] = {}
    for path in sorted(root.rglob("*.py")):
        n = 0
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                n += any(_names_geometry(x) for x in [node.left, *node.comparators])
            elif isinstance(node, ast.MatchValue):
                n += _names_geometry(node.value)
        if n:
            counts[_module_name(path, root)] = n
    return counts


def test_geometry_comparison_counter_sees_each_form(tmp_path):
    pkg = tmp_path / "hyvl"
    pkg.mkdir()
    (pkg / "a.py").write_text(
        "def f(model, g):\n"
        "    if model.geometry == 'lorentz' or 'euclidean' != g or g in ('lorentz', 'x'):\n"
        "        return {'lorentz': 1}  # a mapping is not a comparison\n"
        "    match g:\n"
        "        case 'euclidean':\n"
        "            return 2\n"
    )
    assert geometry_comparisons(pkg) == {"hyvl.a": 4}


def test_geometry_name_is_compared_in_at_most_one_module():
    # What differs per geometry is asked of hyvl.geometry's objects (model.space), so a new
    # geometry is one class there rather than a hunt through every module.
    counts = geometry_comparisons()
    assert len(counts) <= 1, f"geometry names compared in several modules: {counts}"


def cited_documents(text: str) -> list[str]:
    """Markdown files a text cites as documents: a path (with a folder in it) or an upper-case
    name (like the README); a lower-case bare name is a file a command writes."""
    names = re.findall(r"(?<![\w/.-])((?:\.\./|[\w-]+/)*[\w-]+\.md)\b", text)
    return [n for n in names if "/" in n or n.split(".")[0].isupper()]


def test_document_citations_are_recognised():
    text = "see " + ", ".join(["docs/guide.md", "NOTES.md", "../other/Y.md", "--markdown out.md"])
    assert cited_documents(text) == ["docs/guide.md", "NOTES.md", "../other/Y.md"]


def test_every_document_cited_in_the_repository_exists():
    # Comments and docs that cite files the user does not have are worse than none.
    repo = ROOT.parent
    files = [*repo.glob("*.md"), *(repo / "docs").rglob("*.md")]
    for folder in ("hyvl", "tests", "tools"):
        files += (repo / folder).rglob("*.py")
    missing = []
    for path in files:
        if path == Path(__file__):  # its examples are made up
            continue
        for name in cited_documents(path.read_text()):
            if not ((repo / name).exists() or (path.parent / name).exists()):
                missing.append(f"{path.relative_to(repo)}: {name}")
    assert not missing, missing


MAX_CODE_LINES = 450


def code_lines(source: str) -> int:
    """Lines that hold code: not blank, not only a comment, not part of a docstring."""
    tree = ast.parse(source)
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    layout = {
        tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
        tokenize.ENCODING, tokenize.ENDMARKER,
    }  # fmt: skip
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in layout:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return len(lines - docstrings)


def test_code_line_counter():
    source = (
        '"""Module doc\n\nspanning lines."""\n'
        "import os  # a comment\n"
        "\n"
        "# only a comment\n"
        "def f(x):\n"
        '    """Doc."""\n'
        "    return (x +\n"
        "            1)\n"
        "S = '''a string that\nis code'''\n"
    )
    assert code_lines(source) == 6  # import, def, return (2 lines), S (2 lines)


def test_no_module_over_450_lines_of_code():
    # Small modules are what make the package readable top to bottom (as nanoGPT / timm).
    sizes = {str(p.relative_to(ROOT.parent)): code_lines(p.read_text()) for p in ROOT.rglob("*.py")}
    big = {name: n for name, n in sizes.items() if n > MAX_CODE_LINES}
    assert not big, f"modules over {MAX_CODE_LINES} lines of code: {big}"
