"""Turn pydantic validation errors into `file:line:column: field.path: message` problems."""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ValidationError

from crisisbot.config.secrets import annotation_at
from crisisbot.config.yamlpos import Located, PathKey
from crisisbot.errors import Problem

# pydantic's wording names Python types and regexes; a security manager needs the YAML's words
_MESSAGES = {
    "missing": "required field is missing",
    "extra_forbidden": "unknown key",
    "model_type": "expected a mapping of keys (key: value lines)",
    "model_attributes_type": "expected a mapping of keys (key: value lines)",
    "dict_type": "expected a mapping of keys (key: value lines)",
    "list_type": "expected a list (`- item` lines, or [a, b])",
    "tuple_type": "expected a list (`- item` lines, or [a, b])",
    "set_type": "expected a list (`- item` lines, or [a, b])",
    "int_parsing": "expected a whole number",
    "int_type": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected text",
    "time_parsing": "expected a time of day such as 08:00 or 18:30",
    "time_type": "expected a time of day such as 08:00 or 18:30",
    "datetime_parsing": "expected a date and time such as 2026-03-03T14:30",
    "date_parsing": "expected a date such as 2026-03-03",
}

# what each pattern of the schemas means, instead of the pattern itself
_PATTERNS = {
    r"^[A-Za-z0-9][A-Za-z0-9_.-]*$": "use letters, digits, '-', '_' and '.', starting with a letter or digit",
    r"^[a-z]{2}$": "expected a two-letter lowercase language code such as fr or en",
}
_EMAIL_HINT = "expected an email address such as name@example.org (ASCII letters, digits and . _ - + before the @)"


def _pattern_message(pattern: str) -> str:
    if pattern in _PATTERNS:
        return _PATTERNS[pattern]
    if "@" in pattern:
        return _EMAIL_HINT
    if pattern.startswith("^(") and "://" in pattern:
        schemes = re.findall(r"[a-z]+", pattern.split("://")[0])
        return f"expected a URL starting with {' or '.join(s + '://' for s in schemes)}"
    if pattern.startswith("^https?://"):
        return "expected a URL starting with http:// or https://"
    return "does not have the expected format (see the documentation of this field)"


def _choices(expected: str) -> list[str]:
    return re.findall(r"'([^']*)'", expected)


def _did_you_mean(value: Any, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(value), choices, n=1) if isinstance(value, str) else []
    return f"; did you mean '{close[0]}'?" if close else ""


def _fields_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """Keys allowed in the mapping at `loc` (pydantic's location, union tags included)."""
    if model is None:
        return []
    found = annotation_at(model, loc)
    if found is None:
        return []
    tp = found[0]
    members = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    names: list[str] = []
    for member in members:
        if isinstance(member, type) and issubclass(member, BaseModel):
            names += [info.alias or name for name, info in member.model_fields.items()]
    return names


def _message(err: dict[str, Any], model: type[BaseModel] | None, path: PathKey) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "extra_forbidden" and path:
        key = str(path[-1])
        hint = _did_you_mean(key, _fields_at(model, tuple(err["loc"][:-1])))
        return f"unknown key '{key}'{hint}"
    if kind == "union_tag_invalid":
        choices = _choices(ctx.get("expected_tags", ""))
        tag, field = ctx.get("tag"), str(ctx.get("discriminator", "")).strip("'")
        return f"unknown {field} '{tag}'{_did_you_mean(tag, choices)} (known: {', '.join(choices)})"
    if kind == "union_tag_not_found":
        return f"required field '{str(ctx.get('discriminator', '')).strip(chr(39))}' is missing"
    if kind in ("enum", "literal_error"):
        choices = _choices(ctx.get("expected", ""))
        value = err.get("input")
        shown = f"'{value}' is not one of" if isinstance(value, (str, int)) and not isinstance(value, bool) else "expected one of"
        return f"{shown} {', '.join(choices)}{_did_you_mean(value, choices)}"
    if kind == "string_pattern_mismatch":
        return _pattern_message(str(ctx.get("pattern", "")))
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        words = {"greater_than": "more than", "greater_than_equal": "at least",
                 "less_than": "less than", "less_than_equal": "at most"}
        bound = next(iter(ctx.values()), "")
        return f"must be {words[kind]} {bound}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length', 1)} item(s)"
    if kind == "too_long":
        return f"has too many items (at most {ctx.get('max_length')})"
    if kind == "string_too_long":
        return f"is too long (at most {ctx.get('max_length')} characters)"
    message = _MESSAGES.get(kind, err["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if message.startswith("Assertion failed, "):
        message = message[len("Assertion failed, "):]
    return message


def data_path(data: Any, loc: tuple[Any, ...]) -> PathKey:
    """Map a pydantic `loc` onto the YAML data, dropping union tags pydantic inserts."""
    path: list[str | int] = []
    node = data
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if isinstance(node, dict) and part in node:
            node = node[part]
            path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            path.append(part)
        elif last:
            path.append(part)
        # else: a discriminator tag or union member name, not a key in the file
    return tuple(path)


def problems_from(exc: ValidationError, doc: Located, prefix: PathKey = (),
                  model: type[BaseModel] | None = None) -> list[Problem]:
    out: list[Problem] = []
    seen: set[tuple[PathKey, str]] = set()
    root = _at(doc.data, prefix)
    for details in exc.errors(include_url=False):
        err = cast(dict[str, Any], details)  # read and trimmed as a plain dict below
        if err["type"] not in ("enum", "literal_error"):
            err.pop("input", None)  # only choices are echoed back: a value may be a secret
        path = prefix + data_path(root, tuple(err["loc"]))
        if err["type"] == "union_tag_invalid":
            path = path + (str((err.get("ctx") or {}).get("discriminator", "")).strip("'"),)
        message = _message(err, model, path)
        if (path, message) in seen:
            continue
        seen.add((path, message))
        out.append(doc.problem(path, message, at_key=err["type"] == "extra_forbidden"))
    return out


Model = TypeVar("Model", bound=BaseModel)


def validate_model(
    model: type[Model], doc: Located, prefix: PathKey = ()
) -> tuple[Model | None, list[Problem]]:
    data = _at(doc.data, prefix)
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, problems_from(exc, doc, prefix, model)


def _at(data: Any, path: PathKey) -> Any:
    for part in path:
        data = data[part]
    return data
