"""The import graph shows the architecture: which room may import which, and no cycles.

generation/ (the domain) imports none of api/, web/, worker/ nor a pool; api/ and web/ never import
worker/ or a pool (the web process never loads torch); worker/ never imports a pool; the pools never
import each other. Read from the source with `ast`, imports inside functions included.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ourvidz", "generation", "sdxl_tasks", "wan_tasks")


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path, name):
    """The project modules `path` (module `name`) imports, resolved to the deepest module that exists."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from package import module` imports the module; `from module import name` the module.
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        found.update(t for t in targets if t.split(".")[0] in PACKAGES)
    return found


@pytest.fixture(scope="module")
def graph():
    modules = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")
               if "migrations" not in p.parts}
    edges = {}
    for name, path in modules.items():
        targets = set()
        for target in imported(path, name):
            while target and target not in modules:  # `from x import function`: the module x
                target = target.rpartition(".")[0]
            if target and target != name and not modules[target].name == "__init__.py":
                targets.add(target)
        edges[name] = targets
    return edges


def room(module):
    """The room a module sits in."""
    parts = module.split(".")
    if parts[0] == "generation" and len(parts) > 2 and parts[1] in ("api", "web", "worker"):
        return parts[1]
    return {"generation": "domain", "sdxl_tasks": "sdxl", "wan_tasks": "wan", "ourvidz": "project"}[parts[0]]


FORBIDDEN = {
    "domain": {"api", "web", "worker", "sdxl", "wan"},
    "api": {"worker", "sdxl", "wan"},
    "web": {"worker", "sdxl", "wan"},
    "worker": {"sdxl", "wan"},
    "sdxl": {"wan"},
    "wan": {"sdxl"},
}


def test_the_rooms_see_the_modules_they_should(graph):
    assert room("generation.models") == "domain" and room("generation.api.views") == "api"
    assert room("generation.worker.runtime") == "worker" and room("wan_tasks.pipeline") == "wan"
    # The reader itself: these edges are in the code today.
    assert "generation.worker.runtime" in graph["sdxl_tasks.tasks"]
    assert "generation.submission" in graph["generation.api.views"]
    assert "generation.models" in graph["generation.worker.runtime"]  # `from ..models import`


def test_no_room_imports_what_its_rules_forbid(graph):
    broken = sorted(f"{source} imports {target}" for source, targets in graph.items() for target in targets
                    if room(target) in FORBIDDEN.get(room(source), set()))
    assert broken == []


def test_the_forbidden_check_would_see_a_violation(graph):
    bad = {**graph, "generation.models": graph["generation.models"] | {"generation.worker.runtime"}}
    assert any(room(t) in FORBIDDEN["domain"] for t in bad["generation.models"])


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles(graph):
    assert cycles(graph) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
