"""crisisbot/extras.py's table of import names agrees with pyproject.toml's extras and entry
points, so a missing extra is always named right (the subprocess proof: tests/test_extras.py)."""

from __future__ import annotations

import tomllib
from importlib.metadata import entry_points, packages_distributions, requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from crisisbot.extras import EXTRA_MODULES, extra_of, installed

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
INTEGRATIONS = {name for name in PROJECT["optional-dependencies"] if name not in ("all", "test")}


def test_every_integration_extra_is_in_the_table_and_in_all():
    assert set(EXTRA_MODULES) == INTEGRATIONS
    (everything,) = PROJECT["optional-dependencies"]["all"]
    assert Requirement(everything).extras == INTEGRATIONS


def test_each_extra_installs_the_modules_the_table_names_for_it():
    """In the dev environment (every extra installed): each listed module is provided by a
    package of that extra or one it pulls in, and each package of the extra by a listed module."""
    provided_by = packages_distributions()
    for extra, modules in EXTRA_MODULES.items():
        direct = {canonicalize_name(Requirement(r).name) for r in PROJECT["optional-dependencies"][extra]}
        for module in modules:
            assert module in provided_by, f"{module} ({extra}) is not installed by ./dev: a wrong name?"
        dists = {canonicalize_name(d) for m in modules for d in provided_by[m]}
        assert direct <= dists, f"extra {extra}: no import name listed for {direct - dists}"
        assert installed(extra)


def test_the_core_depends_on_no_package_of_an_extra():
    core = {canonicalize_name(Requirement(r).name) for r in requires("crisisbot") or [] if "extra ==" not in r}
    provided_by = packages_distributions()
    for extra, modules in EXTRA_MODULES.items():
        dists = {canonicalize_name(d) for m in modules for d in provided_by.get(m, [])}
        assert not core & dists, f"the core requires {core & dists}, which belong to the '{extra}' extra"


def test_plugins_name_only_known_extras():
    for group in ("crisisbot.triggers", "crisisbot.connectors"):
        for ep in entry_points(group=group):
            assert set(ep.extras) <= INTEGRATIONS, f"{ep.name} names an unknown extra {ep.extras}"


def test_a_missing_submodule_is_traced_to_its_extra():
    assert extra_of(ModuleNotFoundError("No module named 'kiota_abstractions.api_error'",
                                        name="kiota_abstractions.api_error")) == "teams"
    assert extra_of(ModuleNotFoundError("No module named 'cv2'", name="cv2")) == "blur"
    assert extra_of(ModuleNotFoundError("No module named 'requests'", name="requests")) is None
    assert extra_of(ImportError("cannot import name 'x'")) is None
