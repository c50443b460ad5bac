"""The import graph of `region_sam3` has no cycle (issue 21: predict <-> predict_cli <-> viz).

Every `import` statement counts, including the ones inside functions and under
`TYPE_CHECKING`: a lazy import hides a circle from the interpreter but not from a reader, and
the next refactor that hoists it turns it into an ImportError.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = "region_sam3"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the `region_sam3` modules it imports (statically, anywhere in the file)."""
    modules = {_module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import mod` imports the submodule `pkg.mod` when there is one.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the DFS stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_detects_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_predict_modules_import_one_way():
    graph = import_graph()
    assert "region_sam3.predict_cli" not in graph["region_sam3.predict"]
    assert "region_sam3.predict" not in graph["region_sam3.viz"]


def test_no_import_cycle_in_package():
    assert find_cycle(import_graph()) is None


@pytest.mark.parametrize("module", ["region_sam3.viz", "region_sam3.predict_cli",
                                    "region_sam3.predict"])
def test_module_imports_alone(module):
    """Each module imports first in a fresh interpreter (no reliance on import order)."""
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, timeout=120,
                   cwd=PACKAGE_DIR.parent)


#: `region_sam3.eval`, bottom-up: a module imports only from its own or a lower layer (issue 21:
#: the post-processor imported the stability evaluator -> matching -> boundary -> COCO AP).
EVAL_LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"types", "masks", "bands", "config", "candidates", "resize"}),  # data, mask ops
    frozenset({"postprocess", "ground_truth"}),              # model outputs / batches -> data
    frozenset({"base", "results_file"}),                     # evaluator protocol, writers
    frozenset({"coco_ap", "boundary", "matching", "cgf1", "stability", "distill_metrics",
               "object_probe", "presence", "query_ranking"}),            # evaluators
    frozenset({"pool"}),                                     # streaming merge
)


def test_eval_is_layered_bottom_up():
    graph = import_graph()
    layer_of = {f"region_sam3.eval.{m}": i for i, layer in enumerate(EVAL_LAYERS) for m in layer}
    listed = {m for m in graph if m.startswith("region_sam3.eval.")}
    assert listed == set(layer_of), f"place new eval modules in a layer: {listed ^ set(layer_of)}"
    wrong = [(m, t) for m in listed for t in graph[m]
             if t in layer_of and layer_of[t] > layer_of[m]]
    assert not wrong, f"eval modules importing upwards: {sorted(wrong)}"
