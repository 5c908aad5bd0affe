"""The import rule of docs/architecture.md, checked on the source (issue 15).

``course_utils`` has layers: a framework-neutral core, a PyTorch half, a Keras half,
grading, and the command line. Module-level imports may only point down the list in
``ALLOWED``; an import inside a function (the lazy imports that keep a PyTorch-only
notebook from loading TensorFlow, or a Keras notebook from loading PyTorch) is not a
dependency of the module and is not checked. Module-level imports inside the package must
also form no cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "course_utils"

#: module (dotted, below course_utils) -> layer; the first matching prefix wins
LAYERS = [
    ("keras", "keras"),
    ("grading", "grading"), ("autograde", "grading"),
    ("cli", "cli"), ("runner", "cli"), ("bench", "cli"), ("classroom", "cli"),
    ("models", "torch"), ("train", "torch"), ("features", "torch"), ("device", "torch"),
    ("checkpoint", "torch"), ("distributed", "torch"), ("data.fast", "torch"),
    ("data.transforms", "torch"), ("data.adapters", "torch"),
    ("", "core"),  # everything else: atomic, fingerprint, feature_cache, preprocessing,
                   # weights, seeding, factory, history, results, download, data, curves,
                   # plots, experiments, _lazy
]
#: what a layer's module-level imports may reach (its own layer included)
ALLOWED = {
    "core": {"core"},
    "torch": {"core", "torch"},
    "keras": {"core", "keras"},
    "grading": {"core", "grading", "torch", "keras"},  # its checkers test what the halves do
    "cli": {"core", "cli", "grading"},
}
#: third-party frameworks and the layers that may import them at module level
FRAMEWORKS = {"torch": {"torch", "grading", "cli"}, "torchvision": {"torch"},
              "tensorflow": {"keras", "grading"}, "keras": {"keras", "grading"}}


def layer_of(module: str) -> str:
    for prefix, layer in LAYERS:
        if module == prefix or module.startswith(prefix + ".") or prefix == "":
            return layer
    raise AssertionError(module)


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def top_level_imports(module: str, path: Path, *, everywhere: bool = False):
    """(imported name, line) of every import at module level (``if``/``try`` blocks
    included, function and class bodies not; with ``everywhere`` those too)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.Import):
                for a in node.names:
                    yield a.name, node.lineno
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(["course_utils", package][: 2 if package else 1])
                    base = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                    name = f"{base}.{node.module}" if node.module else base
                else:
                    name = node.module
                yield name, node.lineno
                for a in node.names:  # "from course_utils.x import y" may name a submodule
                    yield f"{name}.{a.name}", node.lineno
            elif everywhere and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                  ast.ClassDef, ast.With)):
                yield from visit(node.body)
            elif isinstance(node, (ast.If, ast.Try)):
                for block in (node.body, getattr(node, "orelse", []),
                              getattr(node, "finalbody", []),
                              *[h.body for h in getattr(node, "handlers", [])]):
                    yield from visit(block)

    yield from visit(tree.body)


MODULES = dict(modules())


def internal(name: str) -> str | None:
    """The course_utils module an import refers to (longest existing prefix), or None."""
    if not name.startswith("course_utils."):
        return None
    parts = name.split(".")[1:]
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m))
def test_module_level_imports_follow_the_layers(module):
    layer = layer_of(module)
    bad = []
    for name, line in top_level_imports(module, MODULES[module]):
        target = internal(name)
        if target is not None and target and layer_of(target) not in ALLOWED[layer]:
            bad.append(f"line {line}: {name} ({layer_of(target)} layer)")
        top = name.split(".")[0]
        if top in FRAMEWORKS and layer not in FRAMEWORKS[top]:
            bad.append(f"line {line}: {name}")
    assert not bad, (f"course_utils.{module} ({layer} layer) imports at module level what "
                     f"its layer may not (see docs/architecture.md): {bad}; import it inside "
                     "the function that needs it, or move the shared code down a layer")


def test_no_import_cycles_between_modules():
    """Not even through imports inside functions: a module that registers itself into
    another which imports it back (the dataset and model registries did) is a cycle too."""
    graph = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for name, _ in top_level_imports(module, path, everywhere=True):
            target = internal(name)
            if target and target != module and not module.startswith(target + "."):
                graph[module].add(target)  # (a package's __init__ runs before its modules)
    cycles, state = [], {}

    def walk(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt, stack + [nxt])
        state[node] = "done"

    for m in sorted(graph):
        if m not in state:
            walk(m, [m])
    # grading/ and autograde/ are checked by their own tests (issue 18 owns them)
    cycles = [c for c in cycles if not any(m.startswith(("grading", "autograde")) for m in c)]
    assert not cycles, f"import cycles: {[' -> '.join(c) for c in cycles]}"
