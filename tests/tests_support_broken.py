"""Test-only meeting connectors standing for a provider that is down or hangs."""

from __future__ import annotations

import asyncio
from typing import Literal

from connectors.base import MeetingProvider, MeetingRequest
from crisisbot.config.types import Strict
from crisisbot.errors import TransientError
from crisisbot.models import Meeting


class BrokenConfig(Strict):
    type: Literal["broken-meeting", "hanging-meeting"]


class BrokenMeeting(MeetingProvider):
    Config = BrokenConfig

    async def open_meeting(self, request: MeetingRequest) -> Meeting:
        raise TransientError("service unavailable (503)")


class HangingMeeting(MeetingProvider):
    Config = BrokenConfig

    async def open_meeting(self, request: MeetingRequest) -> Meeting:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")
