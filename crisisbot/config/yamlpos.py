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

# Bounds a hostile or broken file cannot push the loader past (issue 12: a "billion
# laughs" playbook took `validate` to 1.6 GB). Generous for real configurations:
# 10,000 sites fit in a few MB and need no alias at all.
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_VALUES = 2_000_000  # values built from one file, aliases expanded
MAX_ALIAS_VALUES = 100_000  # of which copies made by aliases (`*name`)
MAX_DEPTH = 64  # nesting of mappings/lists


# libyaml's parser (PyYAML's C binding) composes ~10x faster than the pure-Python one:
# a 10,000-site config.yaml validates in seconds (benchmarks/bench_scale.py)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _TooBig(Exception):
    def __init__(self, node: yaml.Node, message: str):
        super().__init__(message)
        self.node = node
        self.message = message


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
        self.built: set[int] = set()  # ids of nodes built once: building one again is an alias copy
        self.open: set[int] = set()  # nodes being built: meeting one again is a recursive alias
        self.values = 0
        self.alias_values = 0

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        # PyYAML's composer shares one node for an anchor and all its aliases; expanding
        # them is our job here, so this is where their cost and cycles are bounded.
        key = id(node)
        if key in self.open:
            raise _TooBig(node, "recursive alias: this anchor contains an alias to itself")
        self.values += 1
        if key in self.built:
            self.alias_values += 1
            if self.alias_values > MAX_ALIAS_VALUES:
                raise _TooBig(node, f"aliases expand to more than {MAX_ALIAS_VALUES:,} values "
                                    "(a 'billion laughs' document?); write the values out or use fewer aliases")
        if self.values > MAX_VALUES:
            raise _TooBig(node, f"more than {MAX_VALUES:,} values in one file; split it")
        if len(path) > MAX_DEPTH:
            raise _TooBig(node, f"nested more than {MAX_DEPTH} levels deep")
        self.built.add(key)
        if not isinstance(node, yaml.ScalarNode):
            self.open.add(key)
            try:
                return self._build(node, path)
            finally:
                self.open.discard(key)
        return self._build(node, path)

    def _build(self, node: yaml.Node, path: PathKey) -> Any:
        self.doc.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    merged = self.build(value_node, path)
                    for k, v in (merged.items() if isinstance(merged, dict) else []):
                        out.setdefault(k, v)
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    raise _TooBig(key_node, "a key must be plain text, not a list or mapping")
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
        if path.stat().st_size > MAX_FILE_BYTES:
            return doc, [Problem(name, 1, 1, "", f"file larger than {MAX_FILE_BYTES // (1024 * 1024)} MB; split it")]
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return doc, [Problem(name, 1, 1, "", f"cannot read file: {exc.strerror or exc}")]
    except UnicodeDecodeError as exc:
        return doc, [Problem(name, 1, 1, "", f"file is not UTF-8 text: {exc.reason}")]
    return load_yaml_text(text, name)


def _explain(problem: str, text: str, mark: Any) -> str:
    """PyYAML's parser words, translated into what to fix."""
    line = text.splitlines()[mark.line] if mark is not None and mark.line < len(text.splitlines()) else ""
    if "\t" in problem or line[: len(line) - len(line.lstrip())].count("\t"):
        return "tab character: indent with spaces, not tabs"
    if "exceeded maximum nesting depth" in problem:
        return f"nested more than {MAX_DEPTH} levels deep"
    if ("expected <block end>" in problem or "expected <block mapping start>" in problem
            or "did not find expected key" in problem):
        return ("bad indentation: this line is not aligned with the keys above it "
                "(keys of one mapping start in the same column; use spaces)")
    if "mapping values are not allowed" in problem:
        return ("unexpected ':' — quote a value that contains ': ', or check the indentation "
                "of this line against the one above")
    if "found unexpected end of stream" in problem:
        return "the file ends inside a quoted value or a [list]/{mapping}: close it"
    if "could not find expected ':'" in problem:
        return "a key without ':' (write `key: value`), or a quoted value that is not closed"
    if "found undefined alias" in problem:
        return f"{problem} (an alias `*name` needs an anchor `&name` above it)"
    return problem


def load_yaml_text(text: str, name: str) -> tuple[Located, list[Problem]]:
    doc = Located(name, None)
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = f"YAML syntax error: {_explain(exc.problem or exc.context or '', text, mark)}"
        return doc, [Problem(name, line, col, "", message)]
    except yaml.YAMLError as exc:
        return doc, [Problem(name, 1, 1, "", f"YAML error: {exc}")]
    except RecursionError:
        return doc, [Problem(name, 1, 1, "", f"nested more than {MAX_DEPTH} levels deep")]
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
    except _TooBig as exc:
        doc.data, doc.positions, doc.key_positions = None, {}, {}  # let the partial build go
        mark = exc.node.start_mark
        return doc, [Problem(name, mark.line + 1, mark.column + 1, "", exc.message)]
    return doc, builder.problems
