"""Guards on the package's shape: imports run strictly downward, no cycles, honest __all__,
and no module or function so long that a newcomer cannot hold it in their head.

Every ``import`` statement counts, at module level or inside a function (a
function-level import dodges a cycle at run time but keeps the tangle), and importing
``a.b.c`` also imports the packages ``a.b`` and ``a``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import calibrate

ROOT = Path(calibrate.__file__).parent

#: The layer order, lowest first: a module may import modules of its own layer or below,
#: never above. Within a layer, imports must still form no cycle. Keys are module names
#: below ``calibrate``; a package name covers the package and all of its modules.
LAYERS = [
    ["version", "errors", "secrets"],
    ["checks", "io", "tomlfile", "formatting"],
    ["curves"],
    ["stats", "matching"],
    ["policy"],
    ["detection_choice"],
    ["thresholds"],
    ["bootstrap"],
    ["parts"],
    ["probability", "reliability", "score_meaning"],
    ["thresholds_file"],
    ["store", "manifest", "scores_table", "coco_results", "samples", "datasets", "pricing"],
    ["detectors"],
    ["scheduler", "runner", "ray_engine"],
    ["export", "check", "monitor", "report"],
    ["workflow"],
    ["study"],
    ["render"],
    ["cli_probability"],
    ["cli"],
]


def _all_modules() -> list[str]:
    names = ["calibrate"]
    for info in pkgutil.walk_packages([str(ROOT)], prefix="calibrate."):
        names.append(info.name)
    return sorted(names)


def _layer_key(module: str) -> str:
    """``calibrate.store.reads`` -> ``store``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _source(module: str) -> Path:
    rel = Path(*module.split(".")[1:])
    pkg = ROOT / rel / "__init__.py"
    return pkg if pkg.exists() else (ROOT / rel).with_suffix(".py")


def _imports(module: str, text: str | None = None) -> set[str]:
    """Every calibrate module that ``module`` imports anywhere in its text."""
    path = _source(module)
    tree = ast.parse(path.read_text(encoding="utf-8") if text is None else text)
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = {a.name for a in node.names
                          if target.startswith("calibrate") and _source(f"{target}.{a.name}").exists()}
            # "from calibrate.export import viam" imports a module; "from calibrate import
            # stats" is not a use of the facade, "from calibrate import Policy" is.
            found.update(f"{target}.{n}" for n in submodules)
            if target != "calibrate" or len(submodules) < len(node.names):
                found.add(target)
    out = set()
    for name in found:
        if not (name == "calibrate" or name.startswith("calibrate.")):
            continue
        parts = name.split(".")
        # importing a.b.c runs a.b's __init__ too (but not calibrate's facade: see below)
        for i in range(2, len(parts) + 1):
            out.add(".".join(parts[:i]))
        if name == "calibrate":
            out.add("calibrate")
    out.discard(module)
    return out


MODULES = _all_modules()
GRAPH = {m: _imports(m) for m in MODULES}


def test_every_module_has_a_layer():
    missing = sorted({_layer_key(m) for m in MODULES if m != "calibrate"} - set(RANK))
    assert not missing, f"add these to LAYERS in {__file__}: {missing}"


def test_no_module_imports_the_package_facade():
    # calibrate/__init__ re-exports the API; a module importing it (e.g. for
    # __version__) pulls in everything above itself. Use calibrate.version.
    offenders = sorted(m for m, deps in GRAPH.items() if m != "calibrate" and "calibrate" in deps)
    assert not offenders


def test_imports_run_strictly_downward():
    bad = []
    for m, deps in GRAPH.items():
        if m == "calibrate":
            continue
        for d in deps:
            if d == "calibrate" or _layer_key(d) == _layer_key(m):
                continue
            if RANK[_layer_key(d)] > RANK[_layer_key(m)]:
                bad.append(f"{m} imports {d}")
    assert not bad, "imports against the layer order:\n" + "\n".join(sorted(bad))


def test_no_import_cycle():
    graph = {m: {d for d in deps if d != "calibrate"} for m, deps in GRAPH.items()
             if m != "calibrate"}
    # A package imports its own modules from __init__ by design (the facade); that edge
    # pair is not a cycle of concepts, so a module importing its own package is skipped.
    for m in graph:
        graph[m] = {d for d in graph[m] if not m.startswith(d + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for d in sorted(graph.get(node, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_guard_sees_function_level_and_relative_imports():
    """The guard itself must be able to fail: hidden imports are found."""
    assert "calibrate.cli" not in _imports("calibrate.curves")
    hidden = "def _x():\n    from calibrate.cli import app\n"
    assert "calibrate.cli" in _imports("calibrate.curves", hidden)
    relative = "def _x():\n    from ..report import html\n"
    found = _imports("calibrate.export.viam", relative)
    assert {"calibrate.report", "calibrate.report.html"} <= found


@pytest.mark.parametrize("module", MODULES)
def test_all_lists_exactly_the_public_names(module):
    mod = importlib.import_module(module)
    exported = getattr(mod, "__all__", None)
    assert exported is not None, f"{module} has no __all__"
    missing = [n for n in exported if not hasattr(mod, n)]
    assert not missing, f"{module}.__all__ names what it does not have: {missing}"
    defined = {
        name for name, obj in vars(mod).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and getattr(obj, "__module__", None) == module
    }
    unlisted = sorted(defined - set(exported))
    assert not unlisted, f"{module} defines public {unlisted} but leaves them out of __all__"
    assert len(exported) == len(set(exported)), f"{module}.__all__ lists a name twice"


def _functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


@pytest.mark.parametrize("module", MODULES)
def test_modules_and_functions_stay_small(module):
    path = _source(module)
    text = path.read_text(encoding="utf-8")
    n_lines = len(text.splitlines())
    assert n_lines <= 1200, f"{path} has {n_lines} lines"
    long = [
        f"{f.name} ({f.end_lineno - f.lineno + 1} lines)"
        for f in _functions(ast.parse(text)) if f.end_lineno - f.lineno + 1 > 120
    ]
    assert not long, f"{path}: functions over 120 lines: {long}"
