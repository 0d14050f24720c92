"""How typed parameters show in the Prefect UI's run forms. Pydantic only: no Prefect, no torch.

The UI draws a form from each deployment's parameter schema. An optional field (`int | None`)
becomes a JSON-schema `anyOf [integer, null]`, which the UI draws as a type toggle ("Property is
type None") before the value can be typed. Here an empty field already means "the default rule"
(the reference's value, torch's setting, ...), so a form shows the plain type instead:

- `PLAIN_OPTIONALS`: a model's `model_config`; every `X | None` field of it shows as `X`, its
  default left to the parameter's default object (the server then still accepts an empty value);
- `Text` / `FilePath`: a flow parameter a person may leave empty (""); Python callers may still
  pass None, and a `Path` for a file;
- `Hidden[T]`: a parameter or field for Python callers only, never in a form.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema

Hidden = SkipJsonSchema


def _is_null(option: dict[str, Any]) -> bool:
    return option.get("type") == "null"


def plain_optional(prop: dict[str, Any]) -> None:
    """`anyOf [X, null]` -> X in place, without its default: the form takes the value from the
    parameter's default object, and the server, seeing no default, still accepts an empty one."""
    options = prop.get("anyOf")
    if options and len(options) == 2 and any(map(_is_null, options)):
        (kept,) = [o for o in options if not _is_null(o)]
        del prop["anyOf"]
        prop.update(kept)
        prop.pop("default", None)


def plain_optionals(schema: dict[str, Any], cls: type | None = None) -> None:
    """A model's json_schema_extra: every optional field of `schema` shows as its plain type."""
    for prop in schema.get("properties", {}).values():
        plain_optional(prop)


PLAIN_OPTIONALS = ConfigDict(json_schema_extra=plain_optionals)


def _text(value: Any) -> Any:
    """None (not given) -> ""; a Path -> its text."""
    if value is None:
        return ""
    return str(value) if isinstance(value, Path) else value


Text = Annotated[str, BeforeValidator(_text)]
FilePath = Annotated[str, BeforeValidator(_text), WithJsonSchema({"type": "string", "format": "path"})]


def given(value: str | Path | None) -> str | None:
    """A form's optional text or path as the code reads it: None when left empty."""
    if value is None:
        return None
    text = str(value)
    return text if text.strip() else None


__all__ = ["PLAIN_OPTIONALS", "FilePath", "Hidden", "Text", "given", "plain_optional", "plain_optionals"]
