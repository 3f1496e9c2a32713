"""The supervision alarm every polled or listening input raises (triggers/base.py):
one helper, each input keeping the counter names its users see in `crisisbot status`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from crisisbot.models import Alarm, EventKind, Severity
from triggers.base import Trigger


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.alarms: list[Alarm] = []

    async def submit(self, alarm: Alarm, nonce: Any = None) -> str:
        if self.fail:
            raise OSError("disk full")
        self.alarms.append(alarm)
        return alarm.id

    def known_site(self, site: str) -> bool:
        return True


class NoOptions(BaseModel):
    pass


class Input(Trigger):
    Config = NoOptions

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def test_fault_then_restore_are_stored_and_counted_under_the_inputs_own_names() -> None:
    sink = Sink()
    trigger = Input("gate", NoOptions(), sink)
    trigger.stats = {"faults": 0, "restores": 0, "submit_errors": 0}
    common = {"site": "paris", "input": "plc-1", "what": "plc-1", "errors": "submit_errors", "raw": "x"}
    assert await trigger.submit_link_alarm(EventKind.input_fault, label="silent", details={"unit": 1},
                                           counted="faults", **common)
    assert await trigger.submit_link_alarm(EventKind.restore, label="back", details={"unit": 1},
                                           counted="restores", **common)
    fault, restore = sink.alarms
    assert (fault.kind, fault.severity, fault.details) == (EventKind.input_fault, Severity.major, {"unit": 1})
    assert (restore.kind, restore.severity) == (EventKind.restore, Severity.info)
    assert restore.details == {"unit": 1, "restores": "input_fault"}
    assert (fault.source, fault.site, fault.input) == ("gate", "paris", "plc-1")
    assert trigger.stats == {"faults": 1, "restores": 1, "submit_errors": 0}


async def test_a_refused_supervision_alarm_is_counted_and_reported_not_raised(caplog: Any) -> None:
    trigger = Input("panel", NoOptions(), Sink(fail=True))
    trigger.stats = {"alarms": 0, "store_errors": 0}
    stored = await trigger.submit_link_alarm(EventKind.input_fault, site="lyon", input="1234", label="silent",
                                             details={}, raw="x", what="account 1234", errors="store_errors",
                                             counted="alarms")
    assert stored is False
    assert trigger.stats == {"alarms": 0, "store_errors": 1}
    assert "could not store the supervision alarm of account 1234" in caplog.text
