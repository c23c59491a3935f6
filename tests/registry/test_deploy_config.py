"""prefect.yaml and the flows' static shape: entrypoints resolve, one run at a time, schedule matches params."""

from pathlib import Path

import yaml

from ovt.registry.config import RegisterParams, ScheduleParams

REPO = Path(__file__).resolve().parents[2]


def _doc():
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


def test_prefect_yaml_deployments_are_valid_and_serial():
    from prefect.flows import load_flow_from_entrypoint

    doc = _doc()
    steps = [next(iter(s)) for s in doc.get("pull") or []]
    assert steps == ["prefect.deployments.steps.set_working_directory"]  # and no git_clone
    assert "git_clone" not in (REPO / "prefect.yaml").read_text().split("# No git_clone")[1].split("\n", 1)[1]
    names = {}
    for dep in doc["deployments"]:
        path, func = dep["entrypoint"].split(":")
        assert (REPO / path).is_file()
        flow = load_flow_from_entrypoint(str(REPO / path) + ":" + func)
        names[dep["name"]] = flow.name
        limit = dep["concurrency_limit"]
        assert (limit["limit"] if isinstance(limit, dict) else limit) == 1
        # every parameter the yaml passes is one the flow accepts
        assert set(dep.get("parameters") or {}) <= set(flow.parameters.properties)
    assert names == {"nightly": "ovt-scheduled-pipeline", "promote": "ovt-promote"}


def test_prefect_yaml_schedule_matches_params_default():
    sched = next(d for d in _doc()["deployments"] if d["name"] == "nightly")["schedules"][0]
    default = RegisterParams().schedule
    assert (sched["cron"], sched["timezone"]) == (default.cron, default.timezone)
    assert ScheduleParams().deployment_name == "nightly"


def test_deployment_objects_build_with_concurrency_limit_one():
    from prefect.schedules import Cron

    from flows.deploy import scheduled_pipeline

    dep = scheduled_pipeline.to_deployment(name="t", schedules=[Cron("0 2 * * *", timezone="UTC")], concurrency_limit=1)
    assert dep.concurrency_limit == 1 and dep.schedules[0].schedule.cron == "0 2 * * *"
