"""Typed parameters of the register stage, the promotion gate and the scheduled deployment.

The `registry:` block of params.yaml (PARAMS_BLOCK; `register` would shadow pydantic's BaseModel.register). Defaults are the embedded default. Gate margins are absolute differences in the
units of `data/eval/metrics.json` (accuracies as fractions in [0, 1]: 0.01 = one percentage point).
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from ovt.params_base import StrictModel

PARAMS_BLOCK = "registry"
_ALIAS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class GateParams(StrictModel):
    """When a challenger replaces the champion (all three conditions must hold)."""

    # With ~66 held-out objects one object is ~1.5 pp of worst-view accuracy: a margin below that would promote
    # on noise, hence 0.01 by default for the two robustness metrics.
    worst_view_margin: float = Field(0.01, ge=0, description="challenger - champion must be >= this")
    off_canonical_margin: float = Field(0.0, ge=0, description="challenger - champion must be >= this")
    canonical_tolerance: float = Field(0.02, ge=0, description="champion - challenger must be <= this")
    # Numbers from different held-out evaluations (other objects, views or prompts) are not comparable; refuse to
    # promote on them rather than silently comparing apples with pears.
    require_same_eval: bool = True


class MetricKeys(StrictModel):
    """Where the gate's numbers live in metrics.json: dotted paths; `{variant}` is replaced by the variant name.

    The evaluate stage writes `{"<model>": {"<metric>": v, "<metric>_lo": lo, "<metric>_hi": hi}, ...}`
    (ovt/evaluate/report.py). A value stored as {"value", "lo", "hi"} also resolves to its "value".
    """

    worst_view: str = "{variant}.worst_view_acc"
    off_canonical: str = "{variant}.off_canonical_acc"
    canonical: str = "{variant}.canonical_acc"
    # Extra numbers copied onto the model version as tags (when present) for the registry UI; not gated.
    extra: list[str] = Field(
        default_factory=lambda: [
            "{variant}.mean_acc",
            "{variant}.canonical_gap",
            "{variant}.worst_view_acc_lo",
            "{variant}.worst_view_acc_hi",
            "{variant}.band_acc",
            "{variant}.search_worst_margin",
            "{variant}.search_median_renders",
            "n_objects",
        ]
    )


class RetryParams(StrictModel):
    """Exponential back-off for calls to the MLflow server and, through it, the S3 artifact store."""

    attempts: int = Field(4, ge=1)
    initial_delay_s: float = Field(1.0, ge=0)
    backoff: float = Field(2.0, ge=1)
    max_delay_s: float = Field(15.0, ge=0)
    # Per HTTP request; MLflow's own urllib3 retries are switched off during registration so this loop is the only
    # one (otherwise a dead S3 behind the MLflow proxy costs minutes of nested retries before anyone hears of it).
    request_timeout_s: float = Field(60.0, gt=0)


class ScheduleParams(StrictModel):
    """The scheduled Prefect deployment of the whole pipeline (flows/deploy.py)."""

    deployment_name: str = "nightly"
    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    interval_s: float | None = Field(None, gt=0, description="overrides cron when set (tests, demos)")
    push: bool = True

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, v: str) -> str:
        if len(v.split()) != 5:
            raise ValueError(f"cron must have 5 space-separated fields (min hour dom month dow), got {v!r}")
        return v


class RegisterParams(StrictModel):
    model_name: str = Field("ovt-clip-adapter", min_length=1)
    variant: str = Field("ovt", min_length=1, description="folder under models/ to register")
    experiment: str = "ovt-register"
    artifact_name: str = "ovt_pyfunc"
    challenger_alias: str = "challenger"
    champion_alias: str = "champion"
    # Embedded in the pyfunc as its default zero-shot prompt; callers may override it per request.
    prompt_template: str = "a 3D render of a {}."
    # Lineage: dvc.lock outputs whose md5 becomes a tag, by tag name. A path that is not itself a DVC out resolves
    # to the DVC out folder containing it. `{variant}` is replaced.
    lineage_paths: dict[str, str] = Field(
        default_factory=lambda: {
            "assets_manifest": "data/assets/manifest.jsonl",
            "render_shards": "data/renders/shards",
            "captions": "data/captions/shards",
            "train_outputs": "models/{variant}",
            "eval_metrics": "data/eval/metrics.json",
        }
    )
    # Blocks of params.yaml whose digest identifies the held-out evaluation protocol (with the held-out data hashes).
    eval_protocol_blocks: list[str] = Field(default_factory=lambda: ["evaluate"])
    eval_protocol_paths: list[str] = Field(default_factory=lambda: ["assets_manifest", "render_shards"])
    metrics: MetricKeys = Field(default_factory=MetricKeys)
    gate: GateParams = Field(default_factory=GateParams)
    retry: RetryParams = Field(default_factory=RetryParams)
    schedule: ScheduleParams = Field(default_factory=ScheduleParams)

    @field_validator("challenger_alias", "champion_alias")
    @classmethod
    def _alias_ok(cls, v: str) -> str:
        # MLflow rejects aliases like "v1"/"latest" and anything outside this pattern only at call time.
        if not _ALIAS_RE.match(v) or re.fullmatch(r"[vV]\d+", v) or v.lower() == "latest":
            raise ValueError(f"invalid MLflow alias {v!r} (letters, digits, _ and -; not 'latest' or 'v<N>')")
        return v

    @field_validator("prompt_template")
    @classmethod
    def _slot(cls, v: str) -> str:
        if v.count("{}") != 1:
            raise ValueError(f"prompt_template needs exactly one '{{}}' slot, got {v!r}")
        return v

    @model_validator(mode="after")
    def _check(self) -> RegisterParams:
        if self.challenger_alias == self.champion_alias:
            raise ValueError("challenger_alias and champion_alias must differ")
        missing = [k for k in self.eval_protocol_paths if k not in self.lineage_paths]
        if missing:
            raise ValueError(
                f"eval_protocol_paths {missing} are not keys of lineage_paths {sorted(self.lineage_paths)}"
            )
        return self
