"""Every error class crisisbot raises on purpose lives in crisisbot/errors.py under CrisisbotError.

A static scan (no imports: plugins pull in OpenCV, PyAV, msgraph), so a new exception class
defined elsewhere fails here with the file and line to move it from.
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import crisisbot.errors as errors
from crisisbot.errors import CrisisbotError

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("crisisbot", "triggers", "connectors")
BUILTIN_ERRORS = {name for name, value in vars(builtins).items()
                  if isinstance(value, type) and issubclass(value, BaseException)}
PROJECT_ERRORS = {name for name, value in vars(errors).items()
                  if isinstance(value, type) and issubclass(value, BaseException)}


def _base_name(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def _is_exception(bases: list[ast.expr]) -> bool:
    names = {_base_name(b) for b in bases}
    return bool(names & (BUILTIN_ERRORS | PROJECT_ERRORS)) or any(n.endswith(("Error", "Exception")) for n in names)


def test_every_public_error_class_is_defined_in_errors_module():
    strays = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "crisisbot" / "errors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                # private control-flow exceptions never leave their module: they may stay there
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_") and _is_exception(node.bases):
                    strays.append(f"{path.relative_to(ROOT)}:{node.lineno}: class {node.name}")
    assert not strays, "move these into crisisbot/errors.py (re-export from the old module):\n" + "\n".join(strays)


def test_every_error_class_derives_from_crisisbot_error():
    outside = [name for name, value in vars(errors).items()
               if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == errors.__name__
               and not issubclass(value, CrisisbotError)]
    assert outside == []


def test_old_import_paths_still_work():
    """Plugins written against the old places keep importing them."""
    from connectors.graph_client import CredentialRefused
    from crisisbot.lifecycle.context import IncidentNotFound
    from crisisbot.steps.base import StepFailed
    from crisisbot.store.errors import StoreDamaged
    from crisisbot.web.throttle import Refused

    assert StepFailed is errors.StepFailed and IncidentNotFound is errors.IncidentNotFound
    assert StoreDamaged is errors.StoreDamaged and CredentialRefused is errors.CredentialRefused
    assert Refused is errors.LoginThrottled
    assert issubclass(errors.IncidentNotFound, LookupError)  # callers catching the builtin still do
