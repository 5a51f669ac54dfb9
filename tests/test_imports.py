"""No import cycle inside the ``neuronscope`` package (SPEC §17).

Every ``import neuronscope.x`` / ``from neuronscope.x import y`` — at module level or inside a
function — is an edge of the module graph, read from the source with :mod:`ast`; a cycle in that
graph (even through a lazy, function-level import) fails with the cycle spelled out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PKG = Path(__file__).resolve().parents[1] / "neuronscope"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    """Directed graph module → imported neuronscope module (``from a import b`` → ``a.b`` when that is a module)."""
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            for t in targets:
                if t.startswith("neuronscope") and t in modules and t != name:
                    g.add_edge(name, t)
    return g


def test_the_graph_sees_lazy_imports() -> None:
    g = import_graph()
    assert g.has_edge("neuronscope.study", "neuronscope.unlearning")  # imported inside a method
    assert g.has_edge("neuronscope.unlearning.trainer", "neuronscope.evaluation")  # ROUGE-L lives there now


def test_no_import_cycle() -> None:
    g = import_graph()
    cycles = list(nx.simple_cycles(g))
    assert not cycles, "import cycles: " + "; ".join(" → ".join([*c, c[0]]) for c in cycles[:5])
