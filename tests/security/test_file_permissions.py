"""The data directory is private: 0700, every file in it 0600, wider modes reported at start."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from daemon_helpers import SECRET


def crisisbot(ws, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CRISISBOT_TEST_WEBHOOK_SECRET": SECRET}
    return subprocess.run([sys.executable, "-m", "crisisbot", "-c", str(ws.config_path), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def modes(root: Path) -> dict[str, str]:
    found = {}
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISSOCK(mode):
            found[str(path.relative_to(root.parent))] = stat.filemode(mode)
    return found


def test_store_outbox_and_keys_are_readable_by_the_daemon_user_only(workspace):
    previous = os.umask(0o022)  # what a default login shell or service manager gives the daemon
    try:
        result = crisisbot(workspace, "trigger", "--local", "--site", "paris-hq", "--label", "Panique")
    finally:
        os.umask(previous)
    assert result.returncode == 0, result.stderr
    var = workspace.root / "var"
    assert list((var / "outbox").glob("*.eml")), "the outbox holds the committee emails"
    found = modes(var)
    assert found.pop("var") == "drwx------"
    wide = {name: mode for name, mode in found.items() if mode not in ("-rw-------", "drwx------")}
    assert not wide, wide
    assert {"var/crisisbot.db", "var/secret.key", "var/crisisbot.lock"} <= set(found)


def test_wider_modes_left_by_an_older_version_are_reported_with_the_fix(workspace):
    var = workspace.root / "var"
    var.mkdir(mode=0o755)
    var.chmod(0o755)
    (var / "secret.key").write_bytes(os.urandom(32))
    (var / "secret.key").chmod(0o644)
    result = crisisbot(workspace, "trigger", "--local", "--site", "paris-hq", "--label", "Panique")
    assert result.returncode == 0, result.stderr
    assert "readable by other local users" in result.stderr
    assert "var/secret.key (-rw-r--r--)" in result.stderr and f"chmod -R go-rwx {var}" in result.stderr
    assert (var / "secret.key").stat().st_mode & 0o777 == 0o644  # reported, not changed behind the operator's back
