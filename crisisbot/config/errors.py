"""Turn pydantic validation errors into `file:line:column: field.path: message` problems."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from crisisbot.config.yamlpos import Located, PathKey
from crisisbot.errors import Problem

_MESSAGES = {
    "missing": "required field is missing",
    "extra_forbidden": "unknown key",
}


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


def problems_from(exc: ValidationError, doc: Located, prefix: PathKey = ()) -> list[Problem]:
    out: list[Problem] = []
    seen: set[tuple[PathKey, str]] = set()
    root = _at(doc.data, prefix)
    for err in exc.errors(include_url=False, include_input=False):
        path = prefix + data_path(root, tuple(err["loc"]))
        message = _MESSAGES.get(err["type"], err["msg"])
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if err["type"] == "extra_forbidden" and path:
            message = f"unknown key '{path[-1]}'"
        if (path, message) in seen:
            continue
        seen.add((path, message))
        out.append(doc.problem(path, message, at_key=err["type"] == "extra_forbidden"))
    return out


def validate_model(
    model: type[BaseModel], doc: Located, prefix: PathKey = ()
) -> tuple[BaseModel | None, list[Problem]]:
    data = _at(doc.data, prefix)
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, problems_from(exc, doc, prefix)


def _at(data: Any, path: PathKey) -> Any:
    for part in path:
        data = data[part]
    return data
