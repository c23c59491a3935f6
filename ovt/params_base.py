"""Base class and error formatting for typed parameters (each stage's block of params.yaml).

Every block is a frozen pydantic model that forbids unknown keys, so a typo in params.yaml fails at stage start
with one message naming the key and what is allowed, instead of silently falling back to a default.
"""

from __future__ import annotations

import types
import typing
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

_UNIONS = (typing.Union, types.UnionType)

# Head-noun labels whose literal word is a poor prompt (a "plug" render is a wall socket; "female" is a person
# model). One vocabulary for every stage that turns a label into a prompt (bootstrap trains on it, evaluate scores
# with it), so a change moves both: params.yaml `base.prompt_words`.
PROMPT_WORDS: dict[str, str] = {
    "female": "woman",
    "male": "man",
    "plug": "wall power outlet",
    "switch": "wall light switch",
}


@cache
def _is_bool_annotation(ann: Any) -> bool:
    """`bool`, or an Optional/Union of bool and None only."""
    if ann is bool:
        return True
    if typing.get_origin(ann) in _UNIONS:
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        return bool(args) and all(a is bool for a in args)
    return False


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    # Pydantic's lax mode turns "yes", "off", "0", 1 ... into booleans: a quoted "no" in params.yaml, or a number
    # typed where a switch was meant, would silently pick a side. Switches take only YAML true/false.
    @field_validator("*", mode="before")
    @classmethod
    def _strict_bool(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) or value is None or info.field_name is None:
            return value
        field = cls.model_fields.get(info.field_name)
        # pydantic types FieldInfo.annotation as a type form, which mypy does not count as Hashable (it is)
        if field is not None and _is_bool_annotation(field.annotation):  # type: ignore[arg-type]
            raise PydanticCustomError("strict_bool", "must be true or false (a YAML boolean, not a string or number)")
        return value


class ParamsError(ValueError):
    """params.yaml is wrong; the message names every bad key (dotted path) and what is allowed there."""


def _allowed_keys(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """Walk `loc` (minus the offending last key) through nested models to list the keys allowed there."""
    cur: Any = model
    for part in loc[:-1]:
        if cur is None or not (isinstance(cur, type) and issubclass(cur, BaseModel)):
            return []
        field = cur.model_fields.get(str(part))
        if field is None:
            return []
        cur = field.annotation
        # unwrap Optional[Model] / Model | None
        args = getattr(cur, "__args__", None)
        if args:
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            cur = models[0] if models else None
    if isinstance(cur, type) and issubclass(cur, BaseModel):
        return sorted(cur.model_fields)
    return []


def format_validation_error(
    err: ValidationError, model: type[BaseModel] | None = None, source: str = "params.yaml", prefix: str = ""
) -> str:
    lines = [f"{source}: {err.error_count()} invalid parameter(s):"]
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in ((prefix,) if prefix else ()) + loc)
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            hint = f" (allowed keys: {', '.join(allowed)})" if allowed else ""
            lines.append(f"  {key}: unknown key{hint}")
        elif e["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        else:
            got = e.get("input")
            got_s = f" (got {got!r})" if not isinstance(got, dict) else ""
            lines.append(f"  {key}: {e['msg']}{got_s}")
    return "\n".join(lines)


def validate_block(model: type[StrictModel], data: Any, name: str = "", source: str = "params.yaml") -> StrictModel:
    """Validate one block; raise ParamsError with every problem named by its dotted key."""
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as err:
        raise ParamsError(format_validation_error(err, model, source, prefix=name)) from None
