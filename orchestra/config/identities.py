"""One person, one identity: the ``identities:`` map links a person's Slack user ids and GitHub logins.

Users appear as Slack ids (``U0ALICE``), as ``github:<login>`` for GitHub, or by the person's name
in the map. Two of them are the same person when they are written the same or the map links them,
so someone who pushed a commit as ``github:alice`` cannot approve its deploy as ``U0ALICE`` in Slack.
"""
from __future__ import annotations

import re
from typing import Any

from pydantic import Field, RootModel, field_validator, model_validator

from orchestra.config.environments import StrictModel

_SLACK_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_GITHUB_LOGIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")
GITHUB_PREFIX = "github:"


class Person(StrictModel):
    """The accounts of one person: Slack user ids and GitHub logins (one or a list of each)."""

    slack: list[str] = Field(default_factory=list)
    github: list[str] = Field(default_factory=list)

    @field_validator("slack", "github", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("slack")
    @classmethod
    def _slack_ids(cls, ids: list[str]) -> list[str]:
        for user_id in ids:
            if not _SLACK_ID.match(user_id):
                raise ValueError(f"`{user_id}` is not a Slack user id; copy it from the person's Slack profile "
                                 "(\u22ee > Copy member ID), e.g. U04ABCDEF")
        return ids

    @field_validator("github")
    @classmethod
    def _github_logins(cls, logins: list[str]) -> list[str]:
        for login in logins:
            if not _GITHUB_LOGIN.match(login.removeprefix(GITHUB_PREFIX)):
                raise ValueError(f"`{login}` is not a GitHub login (letters, digits and '-', at most 39)")
        return [login.removeprefix(GITHUB_PREFIX) for login in logins]


class Identities(RootModel[dict[str, Person]]):
    """``person name -> Person``; an account may belong to one person only."""

    root: dict[str, Person] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_owner_per_account(self) -> Identities:
        owners: dict[str, str] = {}
        for name, person in self.root.items():
            for account in [*person.slack, *(GITHUB_PREFIX + g for g in person.github)]:
                key = account.lower()
                if key in owners and owners[key] != name:
                    raise ValueError(f"`{account}` is listed for both `{owners[key]}` and `{name}`; "
                                     "an account belongs to one person")
                owners[key] = name
        return self

    def person_of(self, user: str) -> str | None:
        """The name of the person ``user`` is, if the map knows them."""
        key = _plain(user)
        for name, person in self.root.items():
            if key == name.lower() or key in {s.lower() for s in person.slack} \
                    or key in {GITHUB_PREFIX + g.lower() for g in person.github}:
                return name
        return None

    def same_person(self, a: str, b: str) -> bool:
        """Are ``a`` and ``b`` one person (the same account, or two accounts the map links)?"""
        if _plain(a) == _plain(b):
            return True
        person = self.person_of(a)
        return person is not None and person == self.person_of(b)


def _plain(user: str) -> str:
    return user.strip().lstrip("@").lower()
