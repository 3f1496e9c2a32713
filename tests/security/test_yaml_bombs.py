"""YAML that would exhaust memory or the stack (issue 12): a clean `file:line:col` error,
bounded memory, and a running daemon keeps its last good configuration."""

from __future__ import annotations

import subprocess
import sys

from daemon_helpers import running_daemon

LAUGHS = """\
id: bomb
name: Billion laughs
match: {kinds: [panic]}
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
steps: [{action: email, to: [*i], template: committee_alert}]
"""

RECURSIVE = "id: loop\nname: Loop\nsteps: &s [{action: email, to: *s, template: x}]\n"

PEAK_RSS = """\
import resource, sys
from crisisbot.cli import main
code = main(["-c", sys.argv[1], "validate"])
print("maxrss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def validate_in_child(ws) -> tuple[int, str, int]:
    """Run `validate` in a fresh process and read its own peak RSS (kB)."""
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, str(ws.config_path)],
                          capture_output=True, text=True, timeout=120)
    rss = int(done.stderr.rsplit("maxrss_kb", 1)[1].split()[0])
    return done.returncode, done.stderr, rss


def test_billion_laughs_is_refused_with_bounded_memory(workspace):
    code, _, baseline = validate_in_child(workspace)  # the shipped configuration, same process kind
    assert code == 0
    workspace.write("playbooks/bomb.yaml", LAUGHS)
    code, err, peak = validate_in_child(workspace)
    assert code == 1
    assert "playbooks/bomb.yaml:" in err and "aliases expand to more than 100,000 values" in err
    assert "Traceback" not in err
    assert peak - baseline < 64 * 1024, f"validate grew by {(peak - baseline) // 1024} MB"


def test_recursive_alias_and_deep_nesting_are_clean_errors(workspace, capsys):
    from crisisbot.cli import main

    workspace.write("playbooks/loop.yaml", RECURSIVE)
    workspace.write("contacts/deep.yaml", "people: " + "[" * 5000 + "]" * 5000 + "\n")
    workspace.write("playbooks/key.yaml", "id: k\n? [a, b]\n: x\n")
    code = main(["-c", str(workspace.config_path), "validate"])
    err = capsys.readouterr().err
    assert code == 1
    assert "playbooks/loop.yaml:3:8: recursive alias: this anchor contains an alias to itself" in err
    assert "contacts/deep.yaml:" in err and "nested more than 64 levels deep" in err
    assert "playbooks/key.yaml:2:3: a key must be plain text" in err
    assert "RecursionError" not in err and "Traceback" not in err


def test_oversized_file_is_refused_before_parsing(workspace, capsys):
    from crisisbot.cli import main

    workspace.write("contacts/huge.yaml", "# " + "x" * (17 * 1024 * 1024) + "\n")
    code = main(["-c", str(workspace.config_path), "validate"])
    assert code == 1 and "contacts/huge.yaml:1:1: file larger than 16 MB; split it" in capsys.readouterr().err


async def test_hot_reload_of_a_bomb_keeps_the_last_good_configuration(workspace, caplog):
    async with running_daemon(workspace) as daemon:
        good = daemon.runtime.bundle
        workspace.write("playbooks/panic.yaml", LAUGHS)
        assert await daemon.reload() is False
        workspace.write("playbooks/panic.yaml", RECURSIVE)
        assert await daemon.reload() is False
        assert daemon.runtime.bundle is good and good.playbook("panic") is not None
        kinds = [e.kind for e in await daemon.runtime.store.audit_entries()]
    assert kinds.count("config.rejected") == 2
    assert "aliases expand to more than" in caplog.text and "recursive alias" in caplog.text
