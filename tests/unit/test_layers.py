"""The layers hold: import-linter's contracts (pyproject.toml) are kept, and no module of
reconciler imports itself back through others (a cycle), counting imports made inside
functions, which run too."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    edges = {module: sorted(graph.find_modules_directly_imported_by(module)) for module in sorted(graph.modules)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in edges:
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, position = work.pop()
            if position == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            successors = edges[node]
            if position < len(successors):
                work.append((node, position + 1))
                nxt = successors[position]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found


def test_no_module_imports_itself_back_through_others() -> None:
    graph = grimp.build_graph("reconciler", exclude_type_checking_imports=True)
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for module in ("a", "a.b", "a.c", "a.d"):
        graph.add_module(module)
    graph.add_import(importer="a.b", imported="a.c")
    graph.add_import(importer="a.c", imported="a.b")
    graph.add_import(importer="a.c", imported="a.d")
    assert cycles(graph) == [["a.b", "a.c"]]


def test_the_import_contracts_are_kept() -> None:
    program = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert program, "import-linter is in the test extras"
    result = subprocess.run([program], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:]


def test_every_kind_is_in_the_independence_contract() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = [item for item in config["tool"]["importlinter"]["contracts"] if item["type"] == "independence"]
    kinds = {f"reconciler.kinds.{path.name}" for path in (ROOT / "reconciler" / "kinds").iterdir()
             if (path / "__init__.py").is_file()}
    assert set(contract["modules"]) == kinds


UNTYPED_DETAILS = ("action.details[", "action.details.get(", "details = action.details")


def test_no_executor_digs_in_untyped_details() -> None:
    """Executors read their action's details as the kind's typed model (``Model.of(action)``,
    reconciler/engine/actions.py), never by indexing the plan's dict."""
    kinds = ROOT / "reconciler" / "kinds"
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in sorted(kinds.rglob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
             if any(pattern in line for pattern in UNTYPED_DETAILS)]
    assert found == []
