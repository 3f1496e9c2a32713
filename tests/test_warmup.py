"""Deferred imports (issue 14): what only the alarm path needs is not imported before
"crisisbot ready", and is imported in the background right after it."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crisisbot.warmup import warm_up
from lifecycle_helpers import ROOT, Workspace

CHILD = """
import asyncio, json, sys
from pathlib import Path
from crisisbot.config.bundle import load_bundle
from crisisbot.warmup import deferred_imports, warm_up
bundle = load_bundle(Path(sys.argv[1]))
wanted = deferred_imports(bundle)
before = [name for name in wanted if name in sys.modules]
asyncio.run(warm_up(wanted))
print(json.dumps({"wanted": wanted, "before": before, "after": [name for name in wanted if name in sys.modules]}))
"""


def test_validated_configuration_leaves_deferred_modules_to_the_warm_up(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    for kind in ("playbooks", "contacts"):  # a duty roster (public holidays) among them
        for path in (ROOT / "examples" / "lifecycle" / kind).glob("*.yaml"):
            shutil.copy(path, tmp_path / kind / path.name)
    ws.edit_config(lambda d: d["triggers"].update(panel={
        "type": "sia-dc09", "host": "127.0.0.1", "port": 0,
        "accounts": [{"account": "1234", "site": "paris-hq", "zones": {"3": "accueil"}}]}))
    run = subprocess.run([sys.executable, "-c", CHILD, str(ws.config_path)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert {"pysiaalarm.data.data", "icalendar", "holidays"} <= set(out["wanted"])  # DC-09, Jitsi, duty roster
    assert out["before"] == []  # validating (the start's part) imported none of them
    assert out["after"] == out["wanted"]


async def test_a_failed_deferred_import_is_logged_and_the_others_go_on(caplog: pytest.LogCaptureFixture) -> None:
    sys.modules.pop("colorsys", None)
    with caplog.at_level(logging.WARNING, logger="crisisbot.warmup"):
        await warm_up(["crisisbot_no_such_module", "colorsys"])
    assert "colorsys" in sys.modules
    assert "deferred import of crisisbot_no_such_module failed" in caplog.text
