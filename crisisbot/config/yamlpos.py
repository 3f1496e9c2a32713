"""Load YAML while remembering where every value came from.

PyYAML discards positions once it builds Python objects, and ruamel's round-trip
types leak into the rest of the code; walking PyYAML's node tree ourselves keeps
plain dicts/lists and gives `file:line:column` for any field path (and lets us
refuse duplicate keys, which PyYAML silently overwrites).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from crisisbot.errors import Problem

PathKey = tuple[str | int, ...]


@dataclass
class Located:
    """A loaded document plus the position (1-based line, column) of each field path."""

    file: str
    data: Any
    positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)  # of values
    key_positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)  # of mapping keys

    def where(self, path: PathKey, at_key: bool = False) -> tuple[int, int]:
        """Position of `path` (its value, or its key), else of its nearest ancestor in the file."""
        if at_key and tuple(path) in self.key_positions:
            return self.key_positions[tuple(path)]
        p = tuple(path)
        while p:
            if p in self.positions:
                return self.positions[p]
            p = p[:-1]
        return self.positions.get((), (1, 1))

    def problem(self, path: PathKey, message: str, at_key: bool = False) -> Problem:
        line, col = self.where(path, at_key)
        return Problem(self.file, line, col, dotted(path), message)


def dotted(path: PathKey) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


class _Builder:
    def __init__(self, doc: Located):
        self.doc = doc
        self.problems: list[Problem] = []
        self.constructor = yaml.SafeLoader("")  # only used to turn scalars into Python values

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        self.doc.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    merged = self.build(value_node, path)
                    for k, v in (merged.items() if isinstance(merged, dict) else []):
                        out.setdefault(k, v)
                    continue
                key = self.constructor.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, bool)) or isinstance(key, bool):
                    key = str(key)
                child = path + (key,)
                if key in out:
                    line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                    self.problems.append(
                        Problem(self.doc.file, line, col, dotted(child), "duplicate key")
                    )
                self.doc.key_positions[child] = (
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                )
                out[key] = self.build(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        return self.constructor.construct_object(node, deep=True)


def load_yaml(path: Path, display_name: str | None = None) -> tuple[Located, list[Problem]]:
    """Parse one YAML file; syntax errors come back as problems, never as tracebacks."""
    name = display_name or str(path)
    doc = Located(name, None)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return doc, [Problem(name, 1, 1, "", f"cannot read file: {exc.strerror or exc}")]
    except UnicodeDecodeError as exc:
        return doc, [Problem(name, 1, 1, "", f"file is not UTF-8 text: {exc.reason}")]
    return load_yaml_text(text, name)


def load_yaml_text(text: str, name: str) -> tuple[Located, list[Problem]]:
    doc = Located(name, None)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = f"YAML syntax error: {exc.problem or exc.context}"
        return doc, [Problem(name, line, col, "", message)]
    except yaml.YAMLError as exc:
        return doc, [Problem(name, 1, 1, "", f"YAML error: {exc}")]
    if node is None:
        doc.data = {}
        return doc, []
    builder = _Builder(doc)
    try:
        doc.data = builder.build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return doc, [Problem(name, line, col, "", f"YAML error: {exc.problem}")]
    return doc, builder.problems
