"""The package's structure, read from its source: the import graph has no cycle and the numpy-only stages import no
TensorFlow.

Every import counts: module level, inside functions, and the modules loaded by name through `importlib`
(`pruning/prune.py`'s `IMPLEMENTATIONS`, `__init__.py`'s lazy API, `moved_modules.MOVED` for the old paths).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "keras_expander"
TENSORFLOW = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "ai_edge_litert", "tflite_micro")
# Modules that must run on numpy and scipy alone (tested on plain arrays, imported by `import keras_expander`).
NUMPY_ONLY = ("keras_expander.layers", "keras_expander.expansion", "keras_expander.pruning.masks",
              "keras_expander.pruning.decision", "keras_expander.predictions")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _strings_naming_modules(tree: ast.AST) -> set[str]:
    """String constants that name one of our modules (importlib targets: IMPLEMENTATIONS, _LAZY, MOVED's homes)."""
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in MODULES}


def imports_of(module: str) -> set[str]:
    """Every module `module` imports (ours resolved to the module, or its package for `from package import name`
    where name is a module), external ones by full dotted name."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node, path.name == "__init__.py")
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                found.add(candidate if candidate in MODULES else source)
    found |= _strings_naming_modules(tree)  # moved_modules' old names name no module of ours, so they never count
    return found - {module}


def internal_graph() -> dict[str, set[str]]:
    return {module: {name for name in imports_of(module) if name in MODULES} for module in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a path (first == last), or None. Package __init__ edges to their own children are
    ignored: importing a package's child runs the package first, never the other way round."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if target.startswith(node + ".") and MODULES[node].name == "__init__.py":
                continue
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_import_graph_is_read_from_the_source():
    """Guards the reader itself: edges the package is known to have are found (a parser that found none would
    pass the cycle test vacuously)."""
    graph = internal_graph()
    assert "keras_expander.pruning.tf_keras_wrapper" in graph["keras_expander.pruning.prune"]  # through importlib
    assert "keras_expander.pruning.wrapper" in graph["keras_expander.pruning.keras3_wrapper"]
    assert "keras_expander.firmware.fused_rnn" in graph["keras_expander.firmware.rewrites"]
    assert "keras_expander.firmware.project" in graph["keras_expander.tflite.export"]  # inside the module
    assert "keras_expander.pruning.prune" in graph["keras_expander.cli"]  # a function-level import
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    assert find_cycle(internal_graph()) is None


@pytest.mark.parametrize("stage", NUMPY_ONLY)
def test_numpy_only_stages_import_no_tensorflow(stage):
    modules = [name for name in MODULES if name == stage or name.startswith(stage + ".")]
    graph = internal_graph()
    reached, frontier = set(), list(modules)
    while frontier:  # everything these modules import, transitively
        name = frontier.pop()
        if name not in reached:
            reached.add(name)
            frontier.extend(graph[name])
    offending = {f"{name} imports {imported}" for name in reached for imported in imports_of(name)
                 if imported.split(".")[0] in TENSORFLOW}
    assert not offending, sorted(offending)


def test_no_module_is_named_like_a_keras_module():
    """A module named `backend` or `io_utils` reads as Keras' own (keras.backend, keras.utils.io_utils)."""
    assert not {name for name in MODULES if name.rsplit(".", 1)[-1] in ("backend", "io_utils", "utils")}
