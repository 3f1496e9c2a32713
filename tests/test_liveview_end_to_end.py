"""The daemon end to end: committee emails carry personal live-view links served by the
daemon's web server; external people's link shows blurred images; every view is audited."""

from __future__ import annotations

import email
import email.policy
import re
from urllib.parse import urljoin

import httpx

from conftest import free_port
from daemon_helpers import fire_manual, running_daemon


def read_outbox(ws, person: str) -> email.message.EmailMessage:
    (path,) = (ws.root / "var" / "outbox").glob(f"*_convocation_{person}.eml")
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


async def test_personal_liveview_links_in_emails_are_served_and_audited(workspace):
    port = free_port()

    def change(data):
        data["web"] = {"enabled": True, "host": "127.0.0.1", "port": port}
    workspace.edit_config(change)
    contacts = workspace.root / "contacts" / "committee.yaml"
    contacts.write_text(contacts.read_text().replace("members: [alice, chloe, david, securite]",
                                                     "members: [alice, chloe, david, securite, liaison]"))
    async with running_daemon(workspace) as daemon:
        incident = await fire_manual(daemon)
        links = {}
        for person in ("alice", "liaison"):
            text = read_outbox(workspace, person).get_body(("plain",)).get_content()
            links[person] = re.search(rf"http://127\.0\.0\.1:{port}/live/\S+", text).group(0)
        async with httpx.AsyncClient() as client:
            page = await client.get(links["alice"])
            original = await client.get(urljoin(links["alice"], re.search(r'<img src="([^"]+)"', page.text).group(1)))
            external_page = await client.get(links["liaison"])
            blurred = await client.get(urljoin(links["liaison"],
                                               re.search(r'<img src="([^"]+)"', external_page.text).group(1)))
            tampered = await client.get(links["alice"][:-3] + "xyz")
        audit = [e.kind for e in await daemon.runtime.store.audit_entries(incident.id)]
    assert page.status_code == 200 and original.headers["content-type"] == "image/jpeg"
    assert original.content[:2] == b"\xff\xd8"
    assert blurred.status_code == 200 and blurred.content != original.content  # re-encoded for outsiders
    assert tampered.status_code == 403
    assert audit.count("liveview.viewed") == 2 and "liveview.image" in audit
