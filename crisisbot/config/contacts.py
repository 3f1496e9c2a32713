"""Schema of `contacts/*.yaml`: people and the groups (committees, teams) they belong to."""

from __future__ import annotations

from pydantic import Field

from crisisbot.config.types import Identifier, Language, PlainText, Strict
from crisisbot.lifecycle.schema import DutySlot

Email = str  # checked by pattern below; a full RFC 5322 parser buys nothing here


class Person(Strict):
    name: PlainText
    email: str = Field(
        pattern=r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$",
        description="ASCII address (internationalized addresses need SMTPUTF8, not supported)",
    )
    phone: str | None = None
    language: Language | None = None
    roles: list[str] = Field(default_factory=list, description="e.g. manager, security, it")
    enabled: bool = Field(True, description="disabled people are kept but never contacted")
    external: bool | None = Field(
        None,
        description="outside the organization; default: decided by the email domain",
    )


class Group(Strict):
    name: PlainText
    description: str = ""
    members: list[Identifier] = Field(
        default_factory=list, description="person ids or other group ids"
    )
    site: Identifier | None = Field(None, description="time zone and holidays of the duty schedule")
    duty: list[DutySlot] = Field(default_factory=list, description="who is on duty when; else `members`")


class ContactsFile(Strict):
    people: dict[Identifier, Person] = Field(default_factory=dict)
    groups: dict[Identifier, Group] = Field(default_factory=dict)
