"""Optional extras (issue 13): a site that only takes webhooks and emails through SMTP
installs the core; using an integration whose extra is missing is a `validate` error that
names the extra to install, never a traceback at the alarm.

"Missing" is real for the process under test: a `sitecustomize` in a subprocess blocks
the extras' packages (`sys.modules[name] = None`: `import name` then fails as if the
package were not installed), so nothing in this test process is patched. The install
size of a real core-only venv is measured by hand (docs/operations.md#install).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from crisisbot.extras import EXTRA_MODULES

ROOT = Path(__file__).resolve().parent.parent


def run_without(tmp_path: Path, extras: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python ARGS` with the packages of `extras` not importable."""
    blocked = sorted({module for extra in extras for module in EXTRA_MODULES[extra]})
    site = tmp_path / "blocker"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
           "CRISISBOT_TEST_WEBHOOK_SECRET": "s3cret-for-tests-only-0123456789"}
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def validate_without(workspace, tmp_path: Path, extras: list[str]) -> subprocess.CompletedProcess[str]:
    return run_without(tmp_path, extras, "-m", "crisisbot", "-c", str(workspace.config_path), "validate")


def smtp_and_webhook(workspace) -> None:
    """The minimal site: a webhook in, SMTP out, no cameras."""
    workspace.use_smtp(2525)

    def change(data: dict) -> None:
        data["triggers"]["hook"] = {"type": "webhook", "host": "127.0.0.1", "port": 0,
                                    "secret": "${CRISISBOT_TEST_WEBHOOK_SECRET}"}
        data["sites"]["paris-hq"]["cameras"] = {}
        for zone in data["sites"]["paris-hq"]["zones"].values():
            zone["cameras"] = []
    workspace.edit_config(change)


def test_the_core_imports_and_validates_a_smtp_and_webhook_site_without_any_extra(workspace, tmp_path):
    smtp_and_webhook(workspace)
    result = validate_without(workspace, tmp_path, list(EXTRA_MODULES))
    assert result.returncode == 0, result.stdout + result.stderr
    # and every module of the core imports (the daemon, the console, the store, the steps)
    walk = ("import importlib, pkgutil, crisisbot\n"
            "for m in pkgutil.walk_packages(crisisbot.__path__, 'crisisbot.'):\n"
            "    if not m.name.endswith('__main__'):\n"
            "        importlib.import_module(m.name)\n"
            "import triggers.webhook, connectors.smtp, connectors.outbox, connectors.jitsi, connectors.camera_http\n")
    result = run_without(tmp_path, list(EXTRA_MODULES), "-c", walk)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("section", "kind", "name", "extra"), [
    ("connectors", "connector", "teams", "teams"),
    ("connectors", "connector", "graph-mail", "teams"),
    ("connectors", "connector", "modbus-coil", "modbus"),
    ("triggers", "trigger", "modbus", "modbus"),
    ("triggers", "trigger", "sia-dc09", "sia"),
    ("triggers", "trigger", "mqtt", "mqtt"),
])
def test_a_plugin_whose_extra_is_missing_is_a_validate_error_naming_the_extra(
        workspace, tmp_path, section, kind, name, extra):
    workspace.edit_config(lambda d: d.setdefault(section, {}).__setitem__("it", {"type": name}))
    result = validate_without(workspace, tmp_path, [extra])
    assert result.returncode == 1
    lines = [line for line in result.stdout.splitlines() + result.stderr.splitlines() if f"{section}.it.type" in line]
    assert lines, result.stdout + result.stderr
    assert lines[0].startswith("config.yaml:") and lines[0].split(":")[1].isdigit()  # file:line:col
    assert f"{kind} '{name}' needs the '{extra}' extra: pip install 'crisisbot[{extra}]'" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("camera", "extra"), [({"type": "onvif-camera"}, "cameras"), ({"type": "rtsp-camera"}, "rtsp")])
def test_a_camera_whose_extra_is_missing_is_a_validate_error(workspace, tmp_path, camera, extra):
    workspace.edit_config(lambda d: d["sites"]["paris-hq"]["cameras"].__setitem__("hall", camera))
    result = validate_without(workspace, tmp_path, [extra])
    assert result.returncode == 1
    assert (f"sites.paris-hq.cameras.hall.type: connector '{camera['type']}' needs the '{extra}' extra: "
            f"pip install 'crisisbot[{extra}]'") in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_cameras_for_external_people_need_the_blur_extra(workspace, tmp_path):
    """The shipped contacts have an external liaison officer: their snapshots are blurred."""
    result = validate_without(workspace, tmp_path, ["blur"])
    assert result.returncode == 1
    assert "sites.paris-hq.cameras: blurring faces in the snapshots sent to external people " \
           "needs the 'blur' extra: pip install 'crisisbot[blur]'" in result.stdout + result.stderr
    # without external people, a site with cameras needs no OpenCV
    workspace.edit_config(lambda d: d["organization"].__setitem__("domains", []))
    assert validate_without(workspace, tmp_path, ["blur"]).returncode == 0


def test_check_teams_without_the_teams_extra_says_what_to_install(workspace, tmp_path):
    result = run_without(tmp_path, ["teams"], "-m", "crisisbot", "-c", str(workspace.config_path), "check", "teams")
    assert result.returncode != 0
    assert "check 'teams' needs the 'teams' extra: pip install 'crisisbot[teams]'" in result.stderr
    assert "Traceback" not in result.stderr
