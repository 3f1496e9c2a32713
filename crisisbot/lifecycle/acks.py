"""Acknowledgements: the playbook's rule ("one member", "two including a manager") that
stops the escalation once satisfied. The personal links people acknowledge with are
the notify service's (crisisbot.notify.links)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from crisisbot.errors import IncidentClosed, IncidentNotFound
from crisisbot.store.records import AckRecord
from crisisbot.lifecycle.schema import AckRule, StopsOnAcks
from crisisbot.models import IncidentStatus
from crisisbot.notify.links import ACK, CANCEL, STAND_DOWN  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from crisisbot.config.bundle import Bundle
    from crisisbot.config.playbook import Playbook
    from crisisbot.runtime import Runtime

log = logging.getLogger(__name__)

RESPONSES = ("on_it", "joining")
CLOSED = (IncidentStatus.resolved, IncidentStatus.false_alarm, IncidentStatus.cancelled)


def rule_of(playbook: "Playbook | None") -> AckRule:
    """The playbook's acknowledgement rule: on its escalate step, else 'one person'."""
    for step in playbook.steps if playbook else []:
        if isinstance(step, StopsOnAcks):
            return step.until
    return AckRule()


def satisfied(rule: AckRule, acks: list[AckRecord], bundle: "Bundle") -> bool:
    people = {a.person_id for a in acks}
    if len(people) < rule.count:
        return False
    for role, needed in rule.roles.items():
        have = sum(1 for p in people if p in bundle.people and role in bundle.people[p].roles)
        if have < needed:
            return False
    return True


@dataclass(slots=True)
class AckOutcome:
    new: bool
    satisfied: bool
    person_name: str


async def acknowledge(runtime: "Runtime", incident_id: str, person_id: str, response: str, via: str) -> AckOutcome:
    """Record once; when the rule becomes satisfied, stop the escalation (timers cancelled)."""
    store, bundle = runtime.store, runtime.bundle
    incident = await store.get_incident(incident_id)
    if incident is None:
        raise IncidentNotFound(f"no incident '{incident_id}'")
    if incident.status in CLOSED:
        raise IncidentClosed(f"incident {incident_id} is already {incident.status.value}")
    person = bundle.people.get(person_id)
    name = person.name if person else person_id
    at = runtime.clock.now()
    delay = (at - incident.opened_at).total_seconds()
    new = await store.add_ack(
        AckRecord(incident.id, person_id, response, via, at),
        {"person": person_id, "name": name, "response": response, "via": via,
         "roles": list(person.roles) if person else [], "at": at.isoformat(), "after_seconds": round(delay, 1)},
    )
    rule = rule_of(bundle.playbook(incident.playbook))
    done = satisfied(rule, await store.get_acks(incident.id), bundle)
    if done and await store.set_incident_status(incident.id, IncidentStatus.acknowledged,
                                                 "acknowledgement rule met", only_from=IncidentStatus.open):
        log.info("incident %s acknowledged", incident.id)
    if new and done:
        cancelled = await store.cancel_timers(incident.id, "escalate.")
        if cancelled or not incident.data.get("ack_rule_met"):
            await store.update_incident_data(incident.id, {"ack_rule_met": at.isoformat()})
            await store.audit("escalation.stopped", incident.id,
                              {"reason": "acknowledgement rule satisfied", "count": rule.count,
                               "roles": rule.roles, "timers_cancelled": cancelled})
            log.info("incident %s: acknowledgement rule met; %d escalation timer(s) cancelled", incident.id, cancelled)
    return AckOutcome(new, done, name)
