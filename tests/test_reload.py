"""Hot reload: a valid change is taken; an invalid one is refused and the last good
configuration keeps running."""

from __future__ import annotations

from daemon_helpers import running_daemon


async def test_invalid_reload_keeps_last_good_config_and_valid_one_applies(workspace, caplog):
    async with running_daemon(workspace) as daemon:
        good = daemon.runtime.bundle
        playbook = workspace.root / "playbooks" / "panic.yaml"
        original = playbook.read_text()
        playbook.write_text(original.replace("template: committee_alert", "template: missing"))
        assert await daemon.reload() is False
        assert daemon.runtime.bundle is good
        assert "reload refused, keeping the last good configuration" in caplog.text
        assert "playbooks/panic.yaml:" in caplog.text and "unknown template 'missing'" in caplog.text

        playbook.write_text(original.replace("priority: 10", "priority: 20"))
        assert await daemon.reload() is True
        assert daemon.runtime.bundle.playbook("panic").priority == 20
        kinds = [e.kind for e in await daemon.runtime.store.audit_entries()]
    assert kinds.count("config.loaded") == 2 and "config.rejected" in kinds


async def test_reload_that_cannot_start_an_input_restores_the_previous_ones(workspace, monkeypatch):
    import socket

    import httpx

    from conftest import free_port
    from daemon_helpers import enable_webhook

    port = free_port()
    enable_webhook(workspace, port=port)
    async with running_daemon(workspace, monkeypatch) as daemon:
        with socket.socket() as squatter:  # another program holds the new port
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            taken = squatter.getsockname()[1]
            workspace.edit_config(lambda d: d["triggers"]["hook"].update({"port": taken}))
            assert await daemon.reload() is False
        async with httpx.AsyncClient() as client:
            health = await client.get(f"http://127.0.0.1:{port}/health")
        kinds = [e.kind for e in await daemon.runtime.store.audit_entries()]
        connectors = set(daemon.runtime.connectors)
    assert health.status_code == 200  # the previous webhook listens again
    assert "config.rejected" in kinds and connectors == {"outbox", "jitsi"}
