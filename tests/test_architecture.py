"""The layers point one way (docs/architecture.md): no two hemwsl modules import each other, at module level or
inside functions, and library code never imports a command."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "hemwsl"
#: Known two-way pairs, listed as debts in docs/architecture.md: a module here may only leave the list (none left).
KNOWN: set[tuple[str, str]] = set()


def _imports() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for p in ROOT.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hemwsl"):
                mods = [node.module]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names if a.name.startswith("hemwsl")]
            else:
                continue
            edges.setdefault(name, set()).update(m for m in mods if m != name)
    return edges


def test_no_two_modules_import_each_other():
    edges = _imports()
    pairs = {(a, b) for a in edges for b in edges[a] if a < b and a in edges.get(b, ())
             and not (a.startswith(b + ".") or b.startswith(a + "."))}  # a package and its own modules excepted
    assert pairs <= KNOWN, sorted(pairs - KNOWN)


def test_no_two_packages_import_each_other():
    def pkg(m: str) -> str:
        return ".".join(m.split(".")[:2])

    edges: dict[str, set[str]] = {}
    for a, bs in _imports().items():
        edges.setdefault(pkg(a), set()).update(pkg(b) for b in bs if pkg(b) != pkg(a))
    pairs = sorted((a, b) for a in edges for b in edges[a] if a < b and a in edges.get(b, ()))
    assert not pairs, pairs


def test_library_code_never_imports_a_command():
    offenders = sorted(a for a, bs in _imports().items()
                       if not a.startswith(("hemwsl.commands", "hemwsl.cli", "hemwsl.__main__"))
                       and any(b.startswith("hemwsl.commands") for b in bs))
    assert not offenders, offenders
