"""Which project files a Python file runs: its imports, followed transitively through the repository (AST only,
nothing is executed). Imports inside functions count too: a lazily imported module still runs in that stage.
Imports under `if TYPE_CHECKING:` never run; the run-time trace (`project_files`) leaves them out."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("ovt", "flows", "stages", "cli")


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """`ovt.render.gl` -> ovt/render/gl.py (or the package's __init__.py); None outside the project."""
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _module_of(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes inside `if TYPE_CHECKING:` / `if typing.TYPE_CHECKING:` bodies (read by type checkers only)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out


def imported_modules(path: Path, root: Path = ROOT, *, runtime_only: bool = False) -> set[str]:
    """Every module name an `import` / `from … import` in `path` may load (absolute and relative imports);
    `runtime_only` leaves out the imports under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = _module_of(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    skip = _type_checking_only(tree) if runtime_only else set()
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            out.add(mod)
            # `from pkg import name` loads pkg/name.py when `name` is a submodule
            out.update(f"{mod}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            out.add(node.args[0].value)
    return out


def project_files(start: Path, root: Path = ROOT) -> set[Path]:
    """`start` and every project file it imports, transitively, with the parent packages' __init__.py files."""
    seen: set[Path] = set()
    todo = [start.resolve()]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for mod in imported_modules(path, root, runtime_only=True):
            parts = mod.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__, then c
                f = module_file(".".join(parts[:i]), root)
                if f is not None and f.resolve() not in seen:
                    todo.append(f.resolve())
    return seen
