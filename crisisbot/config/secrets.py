"""`${ENV_VAR}` and `${file:/path}` references in YAML values — in secret fields only.

Secrets stay out of the files security managers edit and review. A reference is
resolved only where the schema declares a secret (a pydantic `SecretStr` field, so
the value never reaches a log line, a template or a dump) or in a short allow-list
of deployment fields (hosts, URLs, account names). Anywhere else — a contact's
name, a label, a subject — it is a validation error: otherwise
`name: "${WEBHOOK_SECRET} / ${file:/etc/shadow}"` would mail both to the committee.
"""

from __future__ import annotations

import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, Union

from pydantic import BaseModel, SecretStr

from crisisbot.config.yamlpos import Located, PathKey
from crisisbot.errors import Problem

_REF = re.compile(r"\$\{(?:(file):)?([^}]+)\}")

# Not secrets, but what a deployment legitimately keeps outside the reviewed files
# (e.g. the same config on a staging and a production host).
ALLOWED_FIELDS = frozenset({"host", "url", "base_url", "public_url", "username", "tenant_id", "client_id"})

NOT_HERE = ("secret references (${…}) are only resolved in secret fields (passwords, keys, tokens) "
            "and in host/URL/account fields; write this value directly")

Policy = Callable[[PathKey], bool | None]
"""Whether a reference may be resolved at this path: True yes, False no (a problem),
None: unknown here (e.g. an unknown plugin type, reported elsewhere) — left as is."""


def never(path: PathKey) -> bool:
    return False


def has_ref(value: str) -> bool:
    return _REF.search(value) is not None


def resolve_refs(
    doc: Located, base_dir: Path, env: Mapping[str, str] | None = None, allowed: Policy = never
) -> list[Problem]:
    """Replace references in place where `allowed`; every other one becomes a problem."""
    env = os.environ if env is None else env
    problems: list[Problem] = []

    def substitute(value: str, path: PathKey) -> str:
        def one(match: re.Match[str]) -> str:
            is_file, name = match.group(1), match.group(2).strip()
            if is_file:
                target = Path(name) if Path(name).is_absolute() else base_dir / name
                try:
                    return target.read_text(encoding="utf-8").strip()
                except OSError as exc:
                    problems.append(
                        doc.problem(path, f"cannot read secret file {target}: {exc.strerror}")
                    )
                    return ""
            if name not in env:
                problems.append(
                    doc.problem(path, f"environment variable {name} is not set")
                )
                return ""
            return env[name]

        return _REF.sub(one, value)

    def walk(node: Any, path: PathKey) -> Any:
        if isinstance(node, dict):
            for key in list(node):
                node[key] = walk(node[key], path + (key,))
            return node
        if isinstance(node, list):
            return [walk(item, path + (i,)) for i, item in enumerate(node)]
        if isinstance(node, str) and has_ref(node):
            verdict = allowed(path)
            if verdict:
                return substitute(node, path)
            if verdict is False:
                problems.append(doc.problem(path, NOT_HERE))
        return node

    doc.data = walk(doc.data, ())
    return problems


def model_policy(root: type[BaseModel], plugin_model: Callable[[PathKey], tuple[type[BaseModel], PathKey] | None]) -> Policy:
    """A policy reading the schema: `plugin_model(path)` names the plugin `Config` model
    that owns a path (triggers, connectors, cameras) and the path inside it, or None."""

    def allowed(path: PathKey) -> bool | None:
        owner = plugin_model(path)
        if owner is None:
            model, inner = root, path
        else:
            model, inner = owner
            if model is None:
                return None
        found = annotation_at(model, inner)
        if found is None:
            return False
        annotation, name = found
        return _is_secret(annotation) or name in ALLOWED_FIELDS

    return allowed


def _strip(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _is_secret(tp: Any) -> bool:
    tp = _strip(tp)
    if _is_union(tp):
        return any(_is_secret(arg) for arg in typing.get_args(tp))
    return isinstance(tp, type) and issubclass(tp, SecretStr)


def annotation_at(tp: Any, path: PathKey, name: str = "") -> tuple[Any, str] | None:
    """The type annotation (and field name) a field path leads to in a pydantic model;
    a path element naming a union member's tag (pydantic's `loc` has them) selects it."""
    tp = _strip(tp)
    if not path:
        return tp, name
    if _is_union(tp):
        for arg in typing.get_args(tp):
            if arg is not type(None) and (found := annotation_at(arg, path, name)) is not None:
                return found
        for arg in typing.get_args(tp):
            if _tagged(arg, path[0]):
                return annotation_at(arg, path[1:], name)
        return None
    head, rest = path[0], path[1:]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for field_name, info in tp.model_fields.items():
            if head in (field_name, info.alias):
                return annotation_at(info.annotation, rest, field_name)
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is dict and len(args) == 2:
        return annotation_at(args[1], rest, name)
    if origin in (list, tuple, set, frozenset) and args and isinstance(head, int):
        return annotation_at(args[0], rest, name)
    return None


def _tagged(model: Any, tag: Any) -> bool:
    """Whether a union member is the one pydantic names `tag` (a Literal field's value)."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return False
    return any(typing.get_origin(_strip(info.annotation)) is typing.Literal and tag in typing.get_args(_strip(info.annotation))
               for info in model.model_fields.values())
