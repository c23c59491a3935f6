"""The gate on stubbed metrics, against a real (sqlite) MLflow registry: both outcomes, first champion, idempotence."""

import json

import pytest

from ovt.registry.config import GateParams
from ovt.registry.promote import ALREADY, FIRST, NO_CHALLENGER, PROMOTED, REJECTED, evaluate_gate, promote
from ovt.registry.retry import RegistryError

GATE = GateParams(worst_view_margin=0.01, off_canonical_margin=0.0, canonical_tolerance=0.02)
CHAMP = {"worst_view": 0.20, "off_canonical": 0.60, "canonical": 0.70}


@pytest.mark.parametrize(
    "chal, passed, reason",
    [
        ({"worst_view": 0.25, "off_canonical": 0.62, "canonical": 0.69}, True, None),
        ({"worst_view": 0.205, "off_canonical": 0.62, "canonical": 0.70}, False, "worst-view"),
        ({"worst_view": 0.25, "off_canonical": 0.59, "canonical": 0.70}, False, "off-canonical"),
        ({"worst_view": 0.25, "off_canonical": 0.62, "canonical": 0.67}, False, "canonical accuracy dropped"),
        ({"worst_view": 0.21, "off_canonical": 0.60, "canonical": 0.68}, True, None),  # exactly at the boundaries
    ],
)
def test_gate_rules(chal, passed, reason):
    res = evaluate_gate(chal, CHAMP, GATE)
    assert res.passed is passed
    if reason:
        assert any(reason in r for r in res.reasons)


def test_gate_refuses_different_heldout_evaluations():
    res = evaluate_gate({"worst_view": 0.9, "off_canonical": 0.9, "canonical": 0.9}, CHAMP, GATE, same_eval=False)
    assert not res.passed and "different held-out" in res.reasons[0]
    assert evaluate_gate(
        {"worst_view": 0.9, "off_canonical": 0.9, "canonical": 0.9},
        CHAMP,
        GATE.model_copy(update={"require_same_eval": False}),
        same_eval=False,
    ).passed


def _add_version(client, cfg, metrics, protocol="p1"):
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(cfg.model_name)
    except MlflowException:
        pass
    tags = {f"ovt.metric.{k}": repr(v) for k, v in metrics.items()}
    tags.update({"ovt.eval_protocol": protocol, "ovt.state": "complete"})
    mv = client.create_model_version(cfg.model_name, source="file:///nowhere", tags=tags)
    client.set_registered_model_alias(cfg.model_name, cfg.challenger_alias, mv.version)
    return str(mv.version)


def _snapshot(client, cfg):
    vs = client.search_model_versions(f"name = '{cfg.model_name}'")
    rm = client.get_registered_model(cfg.model_name)
    return {str(v.version): dict(v.tags) for v in vs}, dict(rm.aliases)


@pytest.fixture
def client(mlflow_store):
    from mlflow import MlflowClient

    return MlflowClient()


def test_no_challenger_does_nothing(client, cfg):
    assert promote(cfg, client).action == NO_CHALLENGER


def test_first_version_becomes_champion_then_idempotent(client, cfg):
    v1 = _add_version(client, cfg, CHAMP)
    d = promote(cfg, client)
    assert (d.action, d.champion_after) == (FIRST, v1)
    assert str(client.get_model_version_by_alias(cfg.model_name, "champion").version) == v1
    assert client.get_model_version(cfg.model_name, v1).tags["ovt.gate.decision"] == FIRST
    before = _snapshot(client, cfg)
    again = promote(cfg, client)
    assert again.action == ALREADY and again.changed == []
    assert _snapshot(client, cfg) == before


def test_better_challenger_is_promoted_and_both_versions_tagged(client, cfg):
    v1 = _add_version(client, cfg, CHAMP)
    promote(cfg, client)
    v2 = _add_version(client, cfg, {"worst_view": 0.30, "off_canonical": 0.65, "canonical": 0.69})
    d = promote(cfg, client)
    assert (d.action, d.champion_before, d.champion_after) == (PROMOTED, v1, v2)
    assert str(client.get_model_version_by_alias(cfg.model_name, "champion").version) == v2
    chal_tags = client.get_model_version(cfg.model_name, v2).tags
    old_tags = client.get_model_version(cfg.model_name, v1).tags
    detail = json.loads(chal_tags["ovt.gate.detail"])
    assert chal_tags["ovt.gate.decision"] == PROMOTED
    assert detail["checks"]["worst_view"]["delta"] == pytest.approx(0.10)
    assert json.loads(old_tags[f"ovt.gate.vs_v{v2}"]) == detail
    before = _snapshot(client, cfg)
    assert promote(cfg, client).changed == []
    assert _snapshot(client, cfg) == before


def test_worse_challenger_is_rejected_champion_stays_and_rerun_changes_nothing(client, cfg):
    v1 = _add_version(client, cfg, CHAMP)
    promote(cfg, client)
    v2 = _add_version(client, cfg, {"worst_view": 0.30, "off_canonical": 0.65, "canonical": 0.60})
    d = promote(cfg, client)
    assert (d.action, d.champion_after) == (REJECTED, v1)
    assert "canonical accuracy dropped" in d.gate.reasons[0]
    assert str(client.get_model_version_by_alias(cfg.model_name, "champion").version) == v1
    assert str(client.get_model_version_by_alias(cfg.model_name, "challenger").version) == v2
    assert client.get_model_version(cfg.model_name, v2).tags["ovt.gate.decision"] == REJECTED
    assert f"ovt.gate.vs_v{v2}" in client.get_model_version(cfg.model_name, v1).tags
    before = _snapshot(client, cfg)
    again = promote(cfg, client)
    assert again.action == REJECTED and again.changed == []
    assert _snapshot(client, cfg) == before


def test_half_registered_challenger_is_refused(client, cfg):
    _add_version(client, cfg, CHAMP)
    v = client.get_model_version_by_alias(cfg.model_name, "challenger").version
    client.set_model_version_tag(cfg.model_name, v, "ovt.state", "registering")
    with pytest.raises(RegistryError, match="half-registered"):
        promote(cfg, client)


def test_version_without_metric_tags_is_a_clear_error(client, cfg):
    _add_version(client, cfg, CHAMP)
    promote(cfg, client)
    client.create_model_version(cfg.model_name, source="file:///x", tags={})
    client.set_registered_model_alias(cfg.model_name, "challenger", "2")
    with pytest.raises(RegistryError, match="no tag ovt.metric.worst_view"):
        promote(cfg, client)
