"""`${ENV_VAR}` and `${file:/path}` references in YAML values.

Secrets stay out of the files security managers edit and review; the resolved value
is only ever held in pydantic `SecretStr` fields, so it never reaches a log line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

from crisisbot.config.yamlpos import Located, PathKey
from crisisbot.errors import Problem

_REF = re.compile(r"\$\{(?:(file):)?([^}]+)\}")


def resolve_refs(
    doc: Located, base_dir: Path, env: Mapping[str, str] | None = None
) -> list[Problem]:
    """Replace references in place; unresolvable ones become problems naming the reference."""
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
        if isinstance(node, str) and "${" in node:
            return substitute(node, path)
        return node

    doc.data = walk(doc.data, ())
    return problems
