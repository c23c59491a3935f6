"""The promotion gate: does the `challenger` version beat the `champion` on the same held-out evaluation?

Passing needs all of (margins/tolerance in params, metrics read from each version's `ovt.metric.*` tags, which the
register step copied from that version's metrics.json):
  worst-view accuracy     challenger - champion >= gate.worst_view_margin
  off-canonical accuracy  challenger - champion >= gate.off_canonical_margin
  canonical accuracy      champion - challenger <= gate.canonical_tolerance
and, with gate.require_same_eval, both versions scored on the same held-out protocol (`ovt.eval_protocol` tag).

Only a pass moves `champion`. The decision and its numbers are written as tags on both versions: on the challenger
`ovt.gate.decision` / `ovt.gate.detail`, on the champion `ovt.gate.vs_v<challenger>`. Tags hold no timestamps and
are written only when they differ, so running the gate twice changes nothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from ovt.io import canonical_json
from ovt.registry.config import GateParams, RegisterParams
from ovt.registry.retry import (
    RegistryError,
    is_transient,
    warn_if_nested_retries,
    with_retries,
)

log = logging.getLogger(__name__)

GATE_METRICS = ("worst_view", "off_canonical", "canonical")
DECISION_TAG = "ovt.gate.decision"
DETAIL_TAG = "ovt.gate.detail"

# Actions
FIRST = "first-champion"  # no champion existed: the challenger becomes champion
PROMOTED = "promoted"  # gate passed: champion moved to the challenger
REJECTED = "rejected"  # gate failed: champion unchanged
ALREADY = "already-champion"  # challenger is the champion: nothing to decide
NO_CHALLENGER = "no-challenger"  # nothing registered yet


@dataclass
class GateResult:
    passed: bool
    checks: dict[str, dict[str, float | bool]]
    reasons: list[str]


@dataclass
class Decision:
    action: str
    name: str
    challenger: str | None
    champion_before: str | None
    champion_after: str | None
    gate: GateResult | None = None
    changed: list[str] = field(default_factory=list)  # what this call wrote (empty on a repeat run)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_gate(
    challenger: dict[str, float], champion: dict[str, float], gate: GateParams, same_eval: bool = True
) -> GateResult:
    """Pure decision on two metric dicts (keys: worst_view, off_canonical, canonical)."""
    for who, m in (("challenger", challenger), ("champion", champion)):
        missing = [k for k in GATE_METRICS if k not in m]
        if missing:
            raise RegistryError(f"{who} lacks gate metric(s) {missing} (has {sorted(m)})")
    # Rounded so that a difference exactly at a margin (0.21 - 0.20 vs 0.01) is not lost to float noise.
    d = {k: round(challenger[k] - champion[k], 9) for k in GATE_METRICS}
    checks = {
        "worst_view": {
            "challenger": challenger["worst_view"],
            "champion": champion["worst_view"],
            "delta": d["worst_view"],
            "required": gate.worst_view_margin,
            "ok": d["worst_view"] >= gate.worst_view_margin,
        },
        "off_canonical": {
            "challenger": challenger["off_canonical"],
            "champion": champion["off_canonical"],
            "delta": d["off_canonical"],
            "required": gate.off_canonical_margin,
            "ok": d["off_canonical"] >= gate.off_canonical_margin,
        },
        "canonical": {
            "challenger": challenger["canonical"],
            "champion": champion["canonical"],
            "delta": d["canonical"],
            "required": -gate.canonical_tolerance,
            "ok": d["canonical"] >= -gate.canonical_tolerance,
        },
    }
    # Round for stable tags: float noise in the 1e-12 place must not make a repeat run "change" a tag.
    for c in checks.values():
        for k in ("challenger", "champion", "delta", "required"):
            c[k] = round(float(c[k]), 6)
    reasons = []
    if not checks["worst_view"]["ok"]:
        reasons.append(f"worst-view accuracy improved by {d['worst_view']:+.4f} < margin {gate.worst_view_margin}")
    if not checks["off_canonical"]["ok"]:
        reasons.append(
            f"off-canonical accuracy improved by {d['off_canonical']:+.4f} < margin {gate.off_canonical_margin}"
        )
    if not checks["canonical"]["ok"]:
        reasons.append(f"canonical accuracy dropped by {-d['canonical']:.4f} > tolerance {gate.canonical_tolerance}")
    if gate.require_same_eval and not same_eval:
        reasons.append("the two versions were scored on different held-out evaluations (ovt.eval_protocol differs)")
    return GateResult(passed=not reasons, checks=checks, reasons=reasons)


def version_metrics(mv: Any) -> dict[str, float]:
    tags = mv.tags or {}
    out = {}
    for k in GATE_METRICS:
        raw = tags.get(f"ovt.metric.{k}")
        if raw is None:
            raise RegistryError(
                f"model version {mv.name} v{mv.version} has no tag ovt.metric.{k}: it was not "
                f"registered by ovt.registry (or its registration is incomplete)"
            )
        out[k] = float(raw)
    return out


def _alias_version(client: Any, name: str, alias: str, cfg: RegisterParams) -> Any | None:
    from mlflow.exceptions import MlflowException

    def _get() -> Any | None:
        try:
            return client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return None
            raise

    return with_retries(_get, cfg.retry, f"get alias {alias}")


def _set_tag(client: Any, cfg: RegisterParams, mv: Any, key: str, value: str, changed: list[str]) -> None:
    if (mv.tags or {}).get(key) == value:
        return
    with_retries(
        lambda: client.set_model_version_tag(cfg.model_name, mv.version, key, value),
        cfg.retry,
        f"tag v{mv.version} {key}",
    )
    changed.append(f"v{mv.version}:{key}")


def promote(cfg: RegisterParams, client: Any | None = None, *, tracking_uri: str | None = None) -> Decision:
    """Run the gate against the registry at `tracking_uri` (default: MLflow's configured URI) or `client`."""
    warn_if_nested_retries(cfg.retry)
    client = client or _client(tracking_uri)
    try:
        return _promote(cfg, client)
    except RegistryError:
        raise
    except Exception as exc:
        if is_transient(exc):
            raise RegistryError(
                f"promotion gate could not reach MLflow at {client.tracking_uri} "
                f"({type(exc).__name__}: {str(exc)[:300]}); nothing was changed "
                f"after the failing call: rerun when the server is back"
            ) from exc
        raise


def _client(tracking_uri: str | None = None) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _promote(cfg: RegisterParams, client: Any) -> Decision:
    name = cfg.model_name
    chal = _alias_version(client, name, cfg.challenger_alias, cfg)
    champ = _alias_version(client, name, cfg.champion_alias, cfg)
    if chal is None:
        return Decision(NO_CHALLENGER, name, None, champ and str(champ.version), champ and str(champ.version))
    if (chal.tags or {}).get("ovt.state", "complete") != "complete":
        raise RegistryError(
            f"{name} v{chal.version} ({cfg.challenger_alias}) is half-registered "
            f"(ovt.state={chal.tags.get('ovt.state')}): rerun the register stage first"
        )
    changed: list[str] = []
    if champ is None:
        with_retries(
            lambda: client.set_registered_model_alias(name, cfg.champion_alias, chal.version),
            cfg.retry,
            "set champion alias",
        )
        changed.append(f"alias:{cfg.champion_alias}->v{chal.version}")
        _set_tag(client, cfg, chal, DECISION_TAG, FIRST, changed)
        _set_tag(
            client,
            cfg,
            chal,
            DETAIL_TAG,
            canonical_json({"decision": FIRST, "vs": None, "metrics": version_metrics(chal)}),
            changed,
        )
        log.info("%s v%s is the first champion", name, chal.version)
        return Decision(FIRST, name, str(chal.version), None, str(chal.version), None, changed)
    if str(champ.version) == str(chal.version):
        return Decision(ALREADY, name, str(chal.version), str(champ.version), str(champ.version))

    same_eval = (chal.tags or {}).get("ovt.eval_protocol") == (champ.tags or {}).get("ovt.eval_protocol")
    result = evaluate_gate(version_metrics(chal), version_metrics(champ), cfg.gate, same_eval)
    action = PROMOTED if result.passed else REJECTED
    detail = canonical_json(
        {
            "decision": action,
            "challenger": str(chal.version),
            "champion": str(champ.version),
            "checks": result.checks,
            "reasons": result.reasons,
            "gate": cfg.gate.model_dump(mode="json"),
        }
    )
    # Tags first, alias last: if the alias move fails, the decision is recorded and a rerun finishes the move.
    _set_tag(client, cfg, chal, DECISION_TAG, action, changed)
    _set_tag(client, cfg, chal, DETAIL_TAG, detail, changed)
    _set_tag(client, cfg, champ, f"ovt.gate.vs_v{chal.version}", detail, changed)
    if result.passed:
        with_retries(
            lambda: client.set_registered_model_alias(name, cfg.champion_alias, chal.version),
            cfg.retry,
            "move champion alias",
        )
        changed.append(f"alias:{cfg.champion_alias}->v{chal.version}")
    log.info(
        "gate %s for %s v%s vs v%s: %s",
        action,
        name,
        chal.version,
        champ.version,
        "; ".join(result.reasons) or json.dumps(result.checks),
    )
    return Decision(
        action,
        name,
        str(chal.version),
        str(champ.version),
        str(chal.version if result.passed else champ.version),
        result,
        changed,
    )
