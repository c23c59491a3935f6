"""The pipeline flow against a real (tiny) DVC repo: stage order, skip on rerun, markdown artifact, clear errors."""

import subprocess
import sys
import textwrap

import pytest

from ovt import dvc_driver as dvcrun


@pytest.fixture()
def tiny_repo(tmp_path):
    (tmp_path / "dvc.yaml").write_text(
        textwrap.dedent("""\
        stages:
          first:
            cmd: python -c "open('a.txt','w').write('A')"
            outs: [a.txt]
          second:
            cmd: python -c "open('b.txt','w').write(open('a.txt').read()+'B')"
            deps: [a.txt]
            outs: [b.txt]
        """)
    )
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    return tmp_path


def test_stage_order_and_repro_skip(tiny_repo):
    assert dvcrun.stage_order(tiny_repo / "dvc.yaml") == ["first", "second"]
    r1 = dvcrun.repro("first", cwd=tiny_repo, on_line=lambda _: None)
    assert r1.ran_stages == ["first"]
    r2 = dvcrun.repro("first", cwd=tiny_repo, on_line=lambda _: None)
    assert r2.ran_stages == [] and r2.skipped_stages == ["first"]


def test_failed_stage_raises_with_output(tiny_repo):
    (tiny_repo / "dvc.yaml").write_text("stages:\n  bad:\n    cmd: python -c \"raise SystemExit('boom-123')\"\n")
    with pytest.raises(dvcrun.DvcError, match="boom-123"):
        dvcrun.repro("bad", cwd=tiny_repo, on_line=lambda _: None)


def test_flow_runs_stages_in_order_then_skips(tiny_repo, prefect_harness):
    from flows.pipeline import pipeline

    out = pipeline(repo=str(tiny_repo), do_push=False, check_services=False, do_register=False, do_promote=False)
    assert [(r["stage"], r["ran"]) for r in out["stages"]] == [("first", True), ("second", True)]
    assert (tiny_repo / "b.txt").read_text() == "AB"
    again = pipeline(repo=str(tiny_repo), do_push=False, check_services=False, do_register=False, do_promote=False)
    assert [r["ran"] for r in again["stages"]] == [False, False]


def test_flow_rejects_unknown_stage(tiny_repo, prefect_harness):
    from flows.pipeline import pipeline

    with pytest.raises(ValueError, match="unknown stage"):
        pipeline(
            stages=["nope"],
            repo=str(tiny_repo),
            do_push=False,
            check_services=False,
            do_register=False,
            do_promote=False,
        )


def test_stages_run_on_this_interpreter_even_when_env_carries_its_own_path(tiny_repo):
    # Flows pass whole environments ({**os.environ, ...}); their PATH must not put another `python` first.
    (tiny_repo / "dvc.yaml").write_text(
        "stages:\n  which:\n    cmd: python -c \"import sys; open('py.txt','w').write(sys.executable)\"\n"
        "    outs: [py.txt]\n"
    )
    dvcrun.repro("which", cwd=tiny_repo, env={"PATH": "/usr/local/bin:/usr/bin:/bin"}, on_line=lambda _: None)
    assert (tiny_repo / "py.txt").read_text() == sys.executable


def test_flow_summary_feeds_the_pipeline_benchmark(tiny_repo, prefect_harness):
    # benchmarks/pipeline.py reads what `ovt run` prints (the flow summary as JSON): per-stage wall and CPU time
    import json

    from benchmarks.pipeline import parse_summary, record
    from flows.pipeline import pipeline

    first = pipeline(
        repo=str(tiny_repo), do_push=False, check_services=False, do_register=False, do_promote=False, run_cache=False
    )
    noop = pipeline(repo=str(tiny_repo), do_push=False, check_services=False, do_register=False, do_promote=False)
    parsed = parse_summary(json.dumps(first, indent=2))
    rec = record(
        parsed,
        12.5,
        3.0,
        parse_summary(json.dumps(noop)),
        1.5,
        {"date": "2026-01-01T00:00:00+00:00", "cpus": 2, "load_avg_1m": 0.1},
    )
    assert [s["stage"] for s in rec["stages"]] == ["first", "second"]
    assert all(s["ran"] and s["seconds"] > 0 and s["cpu_seconds"] > 0 for s in rec["stages"]), rec
    assert rec["noop_rerun_ran"] == [] and rec["noop_rerun_s"] == 1.5 and rec["total_s"] == 12.5
    assert rec["date"] == "2026-01-01T00:00:00+00:00" and rec["machine"]["cpus"] == 2


def test_noop_rerun_starts_no_dvc_repro(tiny_repo, prefect_harness, monkeypatch):
    # one `dvc status` answers for the whole pipeline: an up-to-date rerun starts no `dvc repro` process
    from flows.pipeline import pipeline

    flags = dict(repo=str(tiny_repo), do_push=False, check_services=False, do_register=False, do_promote=False)
    pipeline(**flags)
    started: list[str] = []
    real = dvcrun.repro
    monkeypatch.setattr(dvcrun, "repro", lambda stage, **kw: started.append(stage) or real(stage, **kw))
    again = pipeline(**flags)
    assert started == [] and [r["ran"] for r in again["stages"]] == [False, False]
    assert again["timings"]["dvc_status"] > 0
    # a changed upstream command: the first stage is stale, and the second (whose input it rewrites) reruns too,
    # although the status taken before the run could not know it yet
    (tiny_repo / "dvc.yaml").write_text((tiny_repo / "dvc.yaml").read_text().replace("write('A')", "write('Z')"))
    third = pipeline(**flags)
    assert started == ["first", "second"]
    assert [r["ran"] for r in third["stages"]] == [True, True]
    assert (tiny_repo / "b.txt").read_text() == "ZB"
    # only the downstream command changed: the first stage is not even handed to DVC
    started.clear()
    (tiny_repo / "dvc.yaml").write_text((tiny_repo / "dvc.yaml").read_text().replace("+'B'", "+'C'"))
    fourth = pipeline(**flags)
    assert started == ["second"] and [r["ran"] for r in fourth["stages"]] == [False, True]
    assert (tiny_repo / "b.txt").read_text() == "ZC"
