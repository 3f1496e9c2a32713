"""The locked dependency set (issue 12): requirements.lock pins, with hashes, every
dependency pyproject.toml names, within its range, and is what the tests run on."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^ \\]+)")


def locked() -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes)."""
    pins: dict[str, tuple[str, int]] = {}
    current = None
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if (m := PIN.match(line)) is not None:
            current = canonicalize_name(m[1])
            pins[current] = (m[2], 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            pins[current] = (pins[current][0], pins[current][1] + 1)
    return pins


def declared() -> list[Requirement]:
    """The core and every extra (`all` only names the others)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return [r for r in map(Requirement, project["dependencies"] + extras) if canonicalize_name(r.name) != "crisisbot"]


def test_every_declared_dependency_is_pinned_with_hashes_within_its_range():
    pins = locked()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is in pyproject.toml but not in requirements.lock: run ./dev lock"
        pinned, hashes = pins[name]
        assert requirement.specifier.contains(pinned, prereleases=True), \
            f"requirements.lock pins {name}=={pinned}, outside pyproject's '{requirement.specifier}': run ./dev lock"
        assert hashes >= 1, f"{name} has no hash in requirements.lock"
    assert all(count >= 1 for _, count in pins.values())


def test_tests_run_on_the_locked_versions():
    mismatched = []
    for name, (pinned, _) in locked().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            mismatched.append(f"{name}: not installed (locked {pinned})")
            continue
        if canonicalize_name(installed) != canonicalize_name(pinned) and installed != pinned:
            mismatched.append(f"{name}: {installed} installed, {pinned} locked")
    assert not mismatched, "the environment differs from requirements.lock (./dev reinstalls from it): " + "; ".join(mismatched)
