"""The daemon's alarm path: the garbage-collector policy is applied once started and after
each reload (crisisbot/gc_policy.py); a real incident during a drill at the same site is
named in the drill's timeline, and same-kind incidents are not even loaded for it."""

from __future__ import annotations

from crisisbot.config.bundle import load_bundle
from crisisbot.daemon import Daemon
from daemon_helpers import fire_manual, running_daemon


async def test_the_collector_is_settled_once_started_and_after_each_reload(workspace) -> None:
    calls: list[bool] = []
    daemon = Daemon(workspace.config_path, load_bundle(workspace.config_path), settle=calls.append)
    await daemon.start()
    try:
        assert calls == [False]
        playbook = workspace.root / "playbooks" / "panic.yaml"
        playbook.write_text(playbook.read_text().replace("priority: 10", "priority: 20"))
        assert await daemon.reload() is True
        assert calls == [False, True]
    finally:
        await daemon.stop()


async def test_a_real_incident_during_a_drill_is_noted_once_in_the_drill_timeline(workspace) -> None:
    async with running_daemon(workspace) as daemon:
        store = daemon.runtime.store
        await fire_manual(daemon, drill=True, label="Exercice")
        await fire_manual(daemon, label="Deuxième exercice", drill=True, zone="parking")
        drills = await store.active_incidents("paris-hq", drill=True)
        await fire_manual(daemon, label="Vrai")
        real = await store.active_incidents("paris-hq", drill=False)
        assert len(real) == 1 and all(i.drill for i in drills)
        noted = [e for e in await store.audit_entries() if e.kind == "drill.real_incident"]
        assert {e.incident_id for e in noted} == {d.id for d in drills}
        assert all(e.data["incident_id"] == real[0].id for e in noted)
        assert len(await store.active_incidents("paris-hq")) == len(drills) + 1
