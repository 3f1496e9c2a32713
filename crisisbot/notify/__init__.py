"""The notify service: a message to people over an ordered list of channels.

    request.py   what a caller asks (incident context, step id, people, template, channels…)
    render.py    one message per person: language, personal links, images, drill marking
    keys.py      idempotency key (incident, step, person) and the Message-ID from it
    links.py     personal signed links (acknowledge, stand down, live view)
    channels.py  the ways to reach a person, tried in order (mail connectors today)
    service.py   Notify.send: idempotency, group commit of verdicts, hand-over, shortfall rule
    spool.py     background retries of what missed its deadline, across restarts
    shortfall.py the `require` rule's open shortfalls (GET /health, delivery.rule_met)

Steps and the lifecycle both send through it; it imports neither.
"""

from crisisbot.notify.keys import delivery_key, message_id, required
from crisisbot.notify.request import MessageContext, Request
from crisisbot.notify.service import Notify, notify_of
from crisisbot.notify.shortfall import SHORTFALL_KEY, Shortfall

__all__ = ["MessageContext", "Notify", "Request", "SHORTFALL_KEY", "Shortfall", "delivery_key", "message_id",
           "notify_of", "required"]
