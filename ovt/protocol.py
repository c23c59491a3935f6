"""The evaluation protocol: which runs a pipeline trains and what each run may see.

Objects carry `split` ∈ {train, validation, test} and, for test objects, a `fold` (acquire stage). A *run* is one
training of the base and every variant:
- `fold<f>`: test fold f is held out; the other test folds and the train split train; validation selects.
- `final`: the deployable model: everything but validation trains (its test estimate is the folds' pooled one).
Every labelled non-validation object is tested exactly once over the k fold runs, so the headline compares models
on all of them, paired; the validation objects are never trained on and never reported as test.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ovt.params_base import StrictModel

TRAIN, VALIDATION, TEST = "train", "validation", "test"
FINAL = "final"


class ProtocolParams(StrictModel):
    folds: list[int] = Field(default_factory=lambda: [0, 1, 2],
                             description="test folds this pipeline trains and tests (subset of 0..k-1)")
    final: bool = Field(True, description="also train the deployable run on every non-validation object")
    # test: the once-per-run report on the test folds; validation: what sweeps and every modelling choice read
    evaluate_on: Literal["test", "validation"] = "test"

    @field_validator("folds")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or any(f < 0 for f in v):
            raise ValueError(f"folds must be distinct non-negative fold numbers, got {v}")
        return sorted(v)

    def runs(self) -> list[str]:
        """Run names in training order: the folds, then `final`."""
        return [fold_run(f) for f in self.folds] + ([FINAL] if self.final else [])


def fold_run(fold: int) -> str:
    return f"fold{fold}"


def run_fold(run: str) -> int | None:
    """The test fold of a run name (`fold2` -> 2); None for `final`."""
    if run == FINAL:
        return None
    if not run.startswith("fold") or not run[4:].isdigit():
        raise ValueError(f"not a run name: {run!r} (fold<k> or {FINAL!r})")
    return int(run[4:])


def role(row: dict, run: str) -> str:
    """An object's role in `run`: train | validation | test. Rows may be acquire- or render-manifest rows."""
    split = row.get("split")
    if split == VALIDATION:
        return VALIDATION
    if split == TEST:
        fold = run_fold(run)
        return TEST if fold is not None and row.get("fold") == fold else TRAIN
    if split == TRAIN:
        return TRAIN
    raise ValueError(f"object {row.get('asset_id', row.get('key'))!r} has split {split!r}; expected one of "
                     f"{TRAIN}, {VALIDATION}, {TEST} (re-run the acquire stage)")
