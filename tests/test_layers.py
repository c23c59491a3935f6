"""Layers point down: cli/ -> flows/ -> ovt/ (and stages/ -> ovt/). The library never imports the layers above it,
and the library and flows never change this process's environment (settings travel as arguments / env dicts)."""

from __future__ import annotations

import ast

import pytest

from tests.imports import ROOT, imported_modules

LAYERS = {"ovt": {"flows", "stages", "cli"}, "stages": {"flows", "cli"}, "flows": {"cli", "stages"}}


def _files(package: str):
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_no_import_points_up(package):
    bad = []
    for path in _files(package):
        for mod in imported_modules(path):
            if mod.split(".")[0] in LAYERS[package]:
                bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert not bad, "\n".join(bad)


def _environ_writes(path):
    """Calls and assignments that change os.environ (update/setdefault/pop/clear/[k] = v/del)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        target = None
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("update", "setdefault", "pop", "clear", "popitem", "__setitem__")
        ):
            target = node.func.value
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            target = next((t.value for t in targets if isinstance(t, ast.Subscript)), None)
        if target is not None and ast.unparse(target) in ("os.environ", "environ"):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_cli_never_changes_its_own_environment():
    found = [hit for path in _files("cli") for hit in _environ_writes(path)]
    assert not found, f"the CLI passes env dicts to child processes instead of changing os.environ: {found}"


# Writes that configure a process's own environment at its start, not a caller's: each is the main function of the
# process it changes.
ENVIRON_WRITES_ALLOWED = {
    # `stage_main` is the main of every DVC stage process (stages/<name>.py): the offline default is that process's.
    "ovt/entry.py",
    # `_serve` runs only as the target of a spawned render worker process: LP_NUM_THREADS is that child's.
    "ovt/render/worker.py",
}


def _putenv_calls(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.putenv", "os.unsetenv", "putenv")
    ]


@pytest.mark.parametrize("package", ["ovt", "flows"])
def test_library_and_flows_never_change_the_process_environment(package):
    found = [
        hit
        for path in _files(package)
        if str(path.relative_to(ROOT)) not in ENVIRON_WRITES_ALLOWED
        for hit in _environ_writes(path) + _putenv_calls(path)
    ]
    assert not found, f"settings travel as arguments or as a child process's env dict, not os.environ: {found}"


def test_allowed_environ_writes_are_still_there():
    # an allow-list entry whose write is gone would silently allow a new one
    for rel in sorted(ENVIRON_WRITES_ALLOWED):
        assert _environ_writes(ROOT / rel), rel


def test_environ_check_sees_a_write(tmp_path):
    # the check above can fail: a file that updates os.environ is reported
    f = ROOT / "cli" / "_probe_tmp.py"
    try:
        f.write_text("import os\nos.environ['X'] = '1'\nos.environ.update({})\n")
        assert len(_environ_writes(f)) == 2
    finally:
        f.unlink()


def test_deploy_module_has_no_cli_and_no_process_management():
    src = (ROOT / "flows" / "deploy.py").read_text(encoding="utf-8")
    mods = imported_modules(ROOT / "flows" / "deploy.py")
    assert "typer" not in mods and "ovt.services.process" not in mods, mods
    assert "ManagedProcess" not in src and "Typer(" not in src


def test_cli_service_names_are_the_services():
    # the CLI spells the names out to start fast; they must stay the services package's names
    from cli.app import SERVICE_NAMES
    from ovt.services.definitions import SERVICE_NAMES as DEFINED

    assert tuple(SERVICE_NAMES) == tuple(DEFINED)
