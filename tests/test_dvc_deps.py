"""dvc.yaml's `deps` cover every project file a stage runs, so a code change reruns exactly the stages it affects.

The files a stage runs are traced from its entry script through every `import` (tests/imports.py, AST only): a
module a stage imports but dvc.yaml does not list would let a change there go unnoticed by `dvc repro`.
"""

from __future__ import annotations

import pytest
import yaml

from tests.imports import ROOT, project_files

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
STAGES = DVC["stages"]


def _cmd_script(stage: str) -> str:
    cmd = STAGES[stage]["cmd"].split()
    assert cmd[:2] == ["python", "-m"], f"stage {stage}: cmd {STAGES[stage]['cmd']!r} is not `python -m stages.x`"
    return cmd[2].replace(".", "/") + ".py"


def _covered(rel: str, deps: list[str]) -> bool:
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_deps_cover_every_imported_project_file(stage):
    script = ROOT / _cmd_script(stage)
    assert script.is_file(), f"stage {stage}: {script} does not exist"
    deps = [str(d) for d in STAGES[stage].get("deps", [])]
    files = sorted(str(p.relative_to(ROOT)) for p in project_files(script))
    missing = [f for f in files if not _covered(f, deps)]
    assert not missing, f"stage {stage} runs these files but dvc.yaml does not list them in deps: {missing}"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_exist(stage):
    # A dep path that names no file (a renamed module) makes `dvc repro` fail on a fresh clone.
    code = [d for d in STAGES[stage].get("deps", []) if str(d).split("/")[0] in ("ovt", "stages", "flows")]
    missing = [d for d in code if not (ROOT / d).exists()]
    assert not missing, f"stage {stage}: deps name files that do not exist: {missing}"


def test_every_stage_script_is_a_stage():
    # An entry script without a dvc.yaml stage is dead code, or a stage run outside DVC's bookkeeping.
    scripts = {p.stem for p in (ROOT / "stages").glob("*.py") if p.stem != "__init__"}
    assert scripts == set(STAGES), (sorted(scripts - set(STAGES)), sorted(set(STAGES) - scripts))


def test_registration_is_not_a_dvc_stage():
    # `dvc exp run` must never create a model version or move an alias: registry side effects live in the flow.
    assert "register" not in STAGES
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text(encoding="utf-8"))
    assert "register" not in (lock.get("stages") or {})


def test_tracer_follows_lazy_and_relative_imports(tmp_path):
    # The tracer itself: imports inside functions and relative imports are followed, third-party ones are not.
    pkg = tmp_path / "ovt" / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / "ovt" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import numpy\nfrom . import b\n")
    (pkg / "b.py").write_text("def f():\n    from ovt.sub.c import g\n")
    (pkg / "c.py").write_text("g = 1\n")
    (tmp_path / "ovt" / "unused.py").write_text("")
    got = {str(p.relative_to(tmp_path)) for p in project_files(pkg / "a.py", tmp_path)}
    assert got == {"ovt/__init__.py", "ovt/sub/__init__.py", "ovt/sub/a.py", "ovt/sub/b.py", "ovt/sub/c.py"}


def test_tracer_leaves_out_type_checking_imports(tmp_path):
    # An import under `if TYPE_CHECKING:` only feeds the type checker: the stage never runs that module.
    pkg = tmp_path / "ovt"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ovt.heavy import X\nelse:\n    import ovt.b\n"
    )
    (pkg / "b.py").write_text("")
    (pkg / "heavy.py").write_text("X = 1\n")
    got = {str(p.relative_to(tmp_path)) for p in project_files(pkg / "a.py", tmp_path)}
    assert got == {"ovt/__init__.py", "ovt/a.py", "ovt/b.py"}
