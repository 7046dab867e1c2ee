"""The slots of a request (services, ref, environment, strategy, run id) picked out of its words.

Pure, like the parser. Free text is read word by word around the verb; a slash command's
arguments are positional (the service first, then the ref) and take the same prepositions:
``/deploy frontend hotfix-v2 to prod with canary``, ``/deploy frontend, backend staging``.
Several services are one list ("frontend and backend", "frontend, backend"); anything that
would need two requests (two environments, two versions, services apart) becomes a problem.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from orchestra.ids import RUN_ID
from orchestra.intents import REF_PATTERN
from orchestra.parse_vocab import (
    ENV_ALIASES,
    ENV_PREPOSITIONS,
    LEADING_FILLERS,
    LIST_JOINERS,
    POLITENESS,
    REF_PREPOSITIONS,
    SLOT_FILLERS,
    STRATEGY_ALIASES,
    UNSAFE_CHARS,
    URGENCY,
    WEAK_ENVS,
    by_prefix,
    env_of,
    looks_like_ref,
    resolve_service,
    service_at_ref,
    squash,
    strategy_of,
)

STRATEGY_PREPOSITIONS = {"with", "using", "via", "as"}
# Skipped between a slash command's arguments; a ref preposition before one still makes it the
# ref ("/deploy frontend branch update").
SLASH_FILLERS = {"the", "a", "an", "service", "services", "env", "environment", "strategy", "both", "previous",
                 "prior", "last", "release", "deploy", "deployment", "rollout", "update", *POLITENESS, *URGENCY}
SEVERAL = ("name several services together (`frontend and backend to staging`); for different environments "
           "or versions, send one request each")


@dataclass
class Slots:
    """What a request names; ``problem`` (user-facing) when it cannot be carried out as one request."""

    services: list[str] = field(default_factory=list)
    ref: str | None = None
    env: str | None = None
    strategy: str | None = None
    run_id: str | None = None
    problem: str | None = None
    unknown: list[str] = field(default_factory=list)  # words that are neither a slot nor a filler
    weak_env: bool = False  # the environment came from "live", which an explicit one overrides
    no_wait: bool = False  # `--no-wait`: refuse rather than queue behind a deploy holding the lock

    def complain(self, problem: str) -> None:
        self.problem = self.problem or problem


def free_slots(toks: list[str], services: Sequence[str], *, strict: bool = False) -> Slots:
    """Services, env, strategy and ref out of free text; ``strict`` (an action) also names what is wrong."""
    slots = Slots()
    words = [t.lower() for t in toks]
    candidates: list[int] = []
    last, i = -1, 0  # last: where the previous service was named
    while i < len(words):
        word, prev, following = words[i], (words[i - 1] if i else ""), words[i + 1:i + 2]
        name, at_ref = service_at_ref(toks[i], services)
        pair = resolve_service(name + following[0], services) if following else None
        step = 1
        if pair and squash(pair) == squash(name + following[0]):  # "api server"
            last, step = _add_service(slots, pair, words, last, i) + 1, 2
        elif (env := env_of(word)) and prev not in REF_PREPOSITIONS:
            _set_env(slots, env, word in WEAK_ENVS, strict)
        elif strategy := strategy_of(word, following):
            _set_strategy(slots, strategy, strict)
            step = 2 if word in {"blue", "green"} else 1
        elif RUN_ID.fullmatch(word):
            slots.run_id = word
        elif svc := resolve_service(name, services) or (by_prefix(word, services) if strict else None):
            last = _add_service(slots, svc, words, last, i)
            if at_ref:
                set_ref(slots, at_ref, strict)
        elif word not in SLOT_FILLERS and word not in LEADING_FILLERS and word not in ENV_ALIASES:
            candidates.append(i)
        i += step
    _fill_ref_and_unknown(slots, toks, words, candidates, services, strict)
    return slots


def _add_service(slots: Slots, service: str, words: list[str], last: int, at: int) -> int:
    """Add a service named at ``at``; one named apart from the list before it is a problem."""
    if service not in slots.services:
        if slots.services and any(w not in LIST_JOINERS for w in words[last + 1:at]):
            slots.complain(SEVERAL)  # "deploy frontend to prod and backend to staging"
        slots.services.append(service)
    return at


def _set_env(slots: Slots, env: str, weak: bool, strict: bool) -> None:
    if slots.env is None or (slots.weak_env and not weak):
        slots.env, slots.weak_env = env, weak
    elif strict and env != slots.env and not weak:
        slots.complain(f"two environments ({slots.env} and {env}); send one request per environment")


def _set_strategy(slots: Slots, strategy: str, strict: bool) -> None:
    if slots.strategy is None:
        slots.strategy = strategy
    elif strict and strategy != slots.strategy:
        slots.complain(f"two strategies ({slots.strategy} and {strategy}); pick one")


def _fill_ref_and_unknown(slots: Slots, toks: list[str], words: list[str], candidates: list[int],
                          services: Sequence[str], strict: bool) -> None:
    for i in candidates:
        token, prev = toks[i], (words[i - 1] if i else "")
        if looks_like_ref(token) or prev in REF_PREPOSITIONS or (strict and UNSAFE_CHARS.search(token)):
            set_ref(slots, token, strict)
            continue
        if token.isdigit():  # "in 10 minutes": not a ref, not an environment, not a service
            continue
        slots.unknown.append(token)
        if strict and prev in ENV_PREPOSITIONS and slots.env is None \
                and (slots.services or resolve_service(token, services) is None and i > 0):
            slots.complain(f"I don't know an environment called `{token}`; use production (prod), staging (stg) "
                           "or development (dev)")
        elif strict and not slots.services and slots.problem is None:
            slots.problem = unknown_service(token, services)


def set_ref(slots: Slots, token: str, strict: bool = True) -> None:
    """Take ``token`` as the ref, or say why it cannot be one; a second valid one is a problem in a request.

    Once the ref is set, words that could not be one are noise ("v1.2.3 to staging > /dev/null").
    """
    valid = not UNSAFE_CHARS.search(token) and bool(REF_PATTERN.match(token)) \
        and any(c.isalnum() for c in token) and not token.startswith("/")
    if slots.ref is None and not valid:
        slots.complain(f"`{token}` is not a valid git ref (letters, digits and . _ / @ + - only, no `..`)")
    elif slots.ref is None:
        slots.ref = token
    elif strict and valid and token != slots.ref:  # "roll back frontend from v1.3 to v1.2"
        slots.complain(f"two versions (`{slots.ref}` and `{token}`); send one request per version")


def unknown_service(name: str, services: Sequence[str]) -> str:
    known = ", ".join(f"`{s}`" for s in services) or "none configured"
    return f"I don't know a service called `{name}`; known services: {known}"


def slash_slots(args: list[str], services: Sequence[str]) -> Slots:
    """A slash command's arguments: flags, env and strategy anywhere, then service(s) and ref in order."""
    slots = Slots()
    rest: list[tuple[str, str]] = []  # (word, the preposition before it: sep, env, strategy, ref or "")
    words, prep, i = _slash_words(args), "", 0
    while i < len(words):
        arg, low, following = words[i], words[i].lower(), [w.lower() for w in words[i + 1:i + 2]]
        i += 1
        if low == "--no-wait":
            slots.no_wait = True
            continue
        if low.startswith(("--strategy", "--env")):
            value = low.split("=", 1)[1] if "=" in low else (words[i].lower() if i < len(words) else "")
            i += "=" not in low
            _flag(slots, low.startswith("--env"), value)
        elif prep != "ref" and low in ENV_ALIASES:
            _set_env(slots, ENV_ALIASES[low], low in WEAK_ENVS, True)
        elif prep != "ref" and (strategy := strategy_of(low, following)):
            _set_strategy(slots, strategy, True)
            i += low in {"blue", "green"}
        elif RUN_ID.fullmatch(low):
            slots.run_id = low
        elif low in {",", "and", "plus"} | ENV_PREPOSITIONS | STRATEGY_PREPOSITIONS | REF_PREPOSITIONS:
            prep = _preposition(low)
            continue
        elif prep != "ref" and low in SLASH_FILLERS:  # "to the moon": the preposition still counts
            continue
        else:
            rest.append((arg, prep))
        prep = ""
    _positional(slots, rest, services)
    return slots


def _slash_words(args: list[str]) -> list[str]:
    """Commas apart ("frontend,backend"), and a trailing . ! ? off a word that is safe without it."""
    out = []
    for arg in args:
        for part in re.split(r"(,)", arg):
            bare = part if part.endswith("..") else part.rstrip(".!?")
            if part:
                out.append(bare if bare and not UNSAFE_CHARS.search(bare) else part)
    return out


def _preposition(word: str) -> str:
    if word in ENV_PREPOSITIONS:
        return "env"
    if word in STRATEGY_PREPOSITIONS:
        return "strategy"
    return "ref" if word in REF_PREPOSITIONS else "sep"


def _positional(slots: Slots, rest: list[tuple[str, str]], services: Sequence[str]) -> None:
    if not rest:
        return
    name, at_ref = service_at_ref(rest[0][0], services)
    first = resolve_service(name, services) or by_prefix(name.lower(), services)
    if first is None:
        slots.complain(unknown_service(name, services))
    else:
        slots.services.append(first)
    refs = [at_ref] if at_ref else []
    exact = {squash(s): s for s in services}
    for word, prep in rest[1:]:
        name, at_ref = service_at_ref(word, services)
        also = resolve_service(name, services) if prep == "sep" else exact.get(squash(name))
        if also and prep in {"sep", ""} and (refs or at_ref):  # "/deploy frontend v1 and backend"
            slots.complain(SEVERAL)
        elif also and prep in {"sep", ""}:  # "/deploy frontend, backend"
            slots.services += [] if also in slots.services else [also]
        elif prep == "sep":  # "/deploy frontend, inventory": a list of services, not a ref
            slots.complain(unknown_service(name, services))
        elif prep == "env" and not looks_like_ref(word):
            slots.complain(f"I don't know an environment called `{word}`; use production, staging or development")
        elif prep == "strategy":
            slots.complain(f"unknown strategy `{word}`; use blue-green, canary or rolling")
        elif word not in refs:
            refs.append(word)
    if refs:
        set_ref(slots, refs[0])
    if len(refs) > 1:
        slots.complain(f"unexpected words: `{' '.join(refs[1:])}`")


def _flag(slots: Slots, is_env: bool, value: str) -> None:
    if is_env:
        slots.env = ENV_ALIASES.get(value)
        if slots.env is None:
            slots.complain(f"unknown environment `{value}`; use production, staging or development")
        return
    slots.strategy = STRATEGY_ALIASES.get(value)
    if slots.strategy is None:
        slots.complain(f"unknown strategy `{value}`; use blue-green, canary or rolling")
