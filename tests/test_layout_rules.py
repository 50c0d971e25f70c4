"""Rules of the pack's layout that the code's own syntax shows, checked without importing it: the pack's own
imports at the top of modules, and short signatures.

No function of the library or the nodes takes more than ten parameters: what belongs together travels as one
small dataclass (a `Job`, its `FaceChoice` and `MemoryOptions`, `Hooks`, `Tiling`, `FaceCrops`, ...). Read from
the syntax, nothing imported. A V3 node's `execute` classmethod is exempt: ComfyUI passes it one keyword per declared input.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "latentsync"
MAX_LOCAL_IMPORTS = 4  # imports of the pack's own modules inside function bodies, per library module


def _module_name(path: Path) -> list[str]:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _target(path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The absolute module names an import statement names (a relative one resolved against `path`)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not node.level:
        return [node.module or ""]
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path)[:-1]
    base = package[:len(package) - (node.level - 1)]
    return [".".join(base + ([node.module] if node.module else []))]


def local_own_imports(path: Path) -> list[int]:
    """Line numbers of the statements inside function bodies that import a module of `latentsync` (each statement
    counted once, however deeply the functions nest)."""
    lines = set()
    for function in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and any(
                        name == "latentsync" or name.startswith("latentsync.") for name in _target(path, node)):
                    lines.add(node.lineno)
    return sorted(lines)


def test_local_import_counter_resolves_relative_imports():
    assert _target(LIBRARY / "sample" / "vram.py", ast.parse("from ..unet import model").body[0]) == ["latentsync.unet"]
    assert _target(LIBRARY / "run" / "__init__.py", ast.parse("from .pipeline import x").body[0]) == [
        "latentsync.run.pipeline"]
    assert _target(LIBRARY / "cli" / "main.py", ast.parse("import torch").body[0]) == ["torch"]


def test_library_modules_import_the_pack_at_the_top():
    """A library module imports the pack's own modules at its top, where a reader sees what it depends on; an
    import inside a function is for a cycle or an optional dependency's laziness, so a few at most per module."""
    over = {}
    for path in sorted(LIBRARY.rglob("*.py")):
        lines = local_own_imports(path)
        if len(lines) > MAX_LOCAL_IMPORTS:
            over[str(path.relative_to(REPO))] = lines
    assert not over, f"more than {MAX_LOCAL_IMPORTS} function-local imports of the pack (lines): {over}"


# ------------------------------------------------------------------------------------ short signatures
MAX_PARAMETERS = 10


def parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """Positional and keyword-only parameters, without self/cls, *args and **kwargs."""
    args = function.args
    names = [arg.arg for arg in args.posonlyargs + args.args + args.kwonlyargs]
    return [name for name in names if name not in ("self", "cls")]


def _is_node_execute(function: ast.FunctionDef, parent: ast.AST) -> bool:
    decorators = {getattr(d, "id", getattr(d, "attr", None)) for d in function.decorator_list}
    return isinstance(parent, ast.ClassDef) and function.name == "execute" and "classmethod" in decorators


def long_signatures(path: Path) -> dict[str, int]:
    """`"PATH NAME": parameter count` of the functions in `path` over the limit."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = {}
    for parent in ast.walk(tree):
        for function in ast.iter_child_nodes(parent):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            count = len(parameters(function))
            if count > MAX_PARAMETERS and not _is_node_execute(function, parent):
                found[f"{path.relative_to(REPO).as_posix()} {function.name}"] = count
    return found


def test_the_counter_skips_self_and_star_parameters_and_node_execute():
    source = ("def f(self, a, b, /, c, *args, d, e, **kwargs): pass\n"
              "class Node:\n    @classmethod\n    def execute(cls, " + ", ".join(f"p{i}" for i in range(12)) +
              "): pass\n")
    tree = ast.parse(source)
    assert parameters(tree.body[0]) == ["a", "b", "c", "d", "e"]
    assert _is_node_execute(tree.body[1].body[0], tree.body[1])
    assert not _is_node_execute(tree.body[0], tree)


def test_no_function_takes_more_than_ten_parameters():
    found = {name: count for root in ("latentsync", "nodes") for path in sorted((REPO / root).rglob("*.py"))
             for name, count in long_signatures(path).items()}
    over = [f"{name} takes {count}" for name, count in found.items()]
    assert not over, "group the parameters that belong together into a dataclass:\n" + "\n".join(over)
