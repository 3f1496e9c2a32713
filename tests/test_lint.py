"""Pyflakes-level checks (unused imports, undefined names, syntax) over the whole tree, and the import layers."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_undefined_names_or_unused_imports():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is a test dependency: pip install -e '.[test]'"
    result = subprocess.run([ruff, "check", "--select", "F,E9", "--no-cache", "crisisbot", "connectors", "triggers",
                             "benchmarks", "tests"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_layers_of_docs_architecture_hold():
    """The import contracts of pyproject.toml ([tool.importlinter], pictured in docs/architecture.md)."""
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert lint_imports, "import-linter is a test dependency: pip install -e '.[test]'"
    result = subprocess.run([lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shipped_code_type_checks():
    """mypy over crisisbot/, triggers/ and connectors/ ([tool.mypy] in pyproject.toml)."""
    result = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--no-error-summary"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_concrete_plugin_is_in_the_core_contracts():
    """A new trigger or connector module must be added to its 'core imports no concrete …' contract."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    forbidden = {m for c in contracts if c["source_modules"] == ["crisisbot"] for m in c["forbidden_modules"]}
    shared = {"__init__", "base", "state"}
    modules = {f"{package}.{path.stem}" for package in ("triggers", "connectors")
               for path in (ROOT / package).glob("*.py") if path.stem not in shared}
    assert modules - forbidden == set()
