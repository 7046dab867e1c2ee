"""The deterministic intent parser: text in, typed :class:`Parsed` out.

Pure: no Slack, Redis or network. It understands the slash commands
(``/deploy``, ``/rollback``, ``/orchestra ...``) and common plain-language
phrasings. Safety rules: negations, prompt-injection phrasing, shell
characters, "all/every" quantifiers, unknown services, unknown environments
and unsafe refs never become a deploy, rollback or cancel; an action verb
only counts when it opens the sentence (an imperative), so "great job on the
deploy" is chit-chat.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestra.intents import REF_PATTERN, Intent, IntentKind
from orchestra.parse_vocab import (
    ENV_ALIASES,
    ENV_PREPOSITIONS,
    EXPLAIN_RE,
    HELP_RE,
    HISTORY_RE,
    INJECTION,
    LEADING_FILLERS,
    NEGATIONS,
    NOT_HELP_RE,
    QUANTIFIERS,
    QUESTION_STARTS,
    REF_PREPOSITIONS,
    RUN_ID,
    SHELL,
    SLASH_KINDS,
    SLOT_FILLERS,
    STATUS_RE,
    STRATEGY_ALIASES,
    UNSAFE_CHARS,
    by_prefix,
    clean,
    env_of,
    looks_like_ref,
    resolve_service,
    service_at_ref,
    squash,
    strategy_of,
    tokens,
    unquote,
    verb_kind,
)

__all__ = ["ENV_ALIASES", "NEGATIONS", "UNSAFE_CHARS", "Parsed", "parse", "resolve_service"]

ACTIONS = (IntentKind.DEPLOY, IntentKind.ROLLBACK, IntentKind.CANCEL)
INJECTED = "that reads like an instruction to ignore the rules; I only take plain requests"
NEGATED = "that sounds like a request *not* to act, so I did nothing"
SHELLISH = "that message contains shell characters (` $( ; | &&); write the request in plain words"


@dataclass(frozen=True)
class Parsed:
    """What the parser made of a text: the intent, and when it refused, why (user-facing).

    An action (deploy, rollback, cancel) with a ``problem`` must not be carried out.
    """

    intent: Intent
    problem: str | None = None
    run_id: str | None = None
    understood: bool = True  # False: the rules did not recognise the sentence at all
    needs_confirmation: bool = False  # an action guessed by a model: ask the user before doing it

    def contract(self) -> dict[str, str | None]:
        return self.intent.contract()


@dataclass
class _Slots:
    service: str | None = None
    ref: str | None = None
    env: str | None = None
    strategy: str | None = None
    run_id: str | None = None
    problem: str | None = None


def parse(text: str, services: Sequence[str]) -> Parsed:
    """Turn one chat message or slash command into a :class:`Parsed` intent."""
    text_clean = unquote(clean(text), services)
    if text_clean.startswith("/"):
        return _parse_slash(text_clean, services, text)
    return _parse_free(text_clean, services, text)


def _parse_slash(text: str, services: Sequence[str], raw: str) -> Parsed:
    words = text.split()
    command, args = words[0][1:].lower(), words[1:]
    if command == "orchestra":
        if not args:
            return _result(IntentKind.HELP, _Slots(), raw)
        command, args = args[0].lower(), args[1:]
    kind = SLASH_KINDS.get(command)
    if kind is None:
        return _refused(raw, f"unknown command `{command}`; try `/orchestra help`")
    if kind is IntentKind.EXPLAIN:
        return _result(kind, _free_slots(tokens(" ".join(args)), services), raw)
    return _result(kind, _slash_slots(args, services), raw, services)


def _slash_slots(args: list[str], services: Sequence[str]) -> _Slots:
    slots = _Slots()
    rest: list[str] = []
    it = iter(args)
    for arg in it:
        low = arg.lower()
        if low.startswith(("--strategy", "--env")):
            value = low.split("=", 1)[1] if "=" in low else next(it, "")
            _flag(slots, low.startswith("--env"), value)
        elif low in ENV_ALIASES and slots.env is None:
            slots.env = ENV_ALIASES[low]
        elif low in STRATEGY_ALIASES and slots.strategy is None:
            slots.strategy = STRATEGY_ALIASES[low]
        elif RUN_ID.match(low):
            slots.run_id = low
        else:
            rest.append(arg)
    if rest:
        name, at_ref = service_at_ref(rest[0], services)
        slots.service = resolve_service(name, services) or by_prefix(name.lower(), services)
        if slots.service is None:
            slots.problem = slots.problem or _unknown_service(name, services)
        refs = ([at_ref] if at_ref else []) + rest[1:2]
        if refs:
            _set_ref(slots, refs[0])
        if len(rest) > 2 or (at_ref and len(rest) > 1):
            slots.problem = slots.problem or f"unexpected words: `{' '.join(rest[2:] or rest[1:])}`"
    return slots


def _flag(slots: _Slots, is_env: bool, value: str) -> None:
    if is_env:
        slots.env = ENV_ALIASES.get(value)
        if slots.env is None:
            slots.problem = f"unknown environment `{value}`; use production, staging or development"
        return
    slots.strategy = STRATEGY_ALIASES.get(value)
    if slots.strategy is None:
        slots.problem = f"unknown strategy `{value}`; use blue-green, canary or rolling"


def _parse_free(text: str, services: Sequence[str], raw: str) -> Parsed:
    low = text.lower()
    toks = tokens(text)
    words = [t.lower() for t in toks]
    if not words:
        return _refused(raw, None, understood=False)
    if INJECTION.search(low):
        return _refused(raw, INJECTED)
    head = _skip_fillers(words)
    verb, at = _action_verb(words, head)
    if verb is not None:
        return _parse_action(verb, toks, words, at, services, raw, shellish=bool(SHELL.search(text)))
    kind = _question_kind(low, words, head)
    if kind is None:
        return _refused(raw, None, understood=False)
    return _result(kind, _free_slots(toks, services), raw)


def _parse_action(kind: IntentKind, toks: list[str], words: list[str], at: int, services: Sequence[str],
                  raw: str, *, shellish: bool) -> Parsed:
    joined = " " + " ".join(words) + " "
    if any(f" {n} " in joined for n in NEGATIONS):
        return _refused(raw, NEGATED)
    if shellish:
        return _refused(raw, SHELLISH)
    if any(w in QUANTIFIERS for w in words):
        return _refused(raw, f"I {kind.value} one service at a time; name it, e.g. `/{kind.value} frontend`")
    slots = _free_slots(toks[at + 1:], services, strict=True)
    if slots.strategy is None:  # "canary deploy frontend"
        slots.strategy = next((STRATEGY_ALIASES[w] for w in words[:at] if w in STRATEGY_ALIASES), None)
    return _result(kind, slots, raw, services)


def _action_verb(words: list[str], head: int) -> tuple[IntentKind | None, int]:
    """The action the sentence opens with, and the index of its verb."""
    if head < len(words) - 1 and words[head] in STRATEGY_ALIASES:
        head += 1
    if head >= len(words):
        return None, head
    first, rest = words[head], words[head + 1:]
    if rest[:1] and rest[0] in {"history", "log", "logs", "status", "state", "list"}:
        return None, head
    if first in {"roll", "rolling"}:
        if rest[:1] in (["out"], ["forward"]):
            return IntentKind.DEPLOY, head
        return (IntentKind.ROLLBACK if "back" in rest[:4] else None), head
    return verb_kind(first), head


def _question_kind(low: str, words: list[str], head: int) -> IntentKind | None:
    first = words[head] if head < len(words) else ""
    if HELP_RE.search(low) and not NOT_HELP_RE.search(low):
        return IntentKind.HELP
    if first in {"why", "explain"} or EXPLAIN_RE.search(low):
        return IntentKind.EXPLAIN
    if HISTORY_RE.search(low):
        return IntentKind.HISTORY
    if first in {"status", "state"} or STATUS_RE.search(low) or (first in QUESTION_STARTS and "version" in words):
        return IntentKind.STATUS
    return None


def _free_slots(toks: list[str], services: Sequence[str], *, strict: bool = False) -> _Slots:
    """Pick service, env, strategy and ref out of free text."""
    slots = _Slots()
    words = [t.lower() for t in toks]
    candidates: list[int] = []
    skip: set[int] = set()
    for i, word in enumerate(words):
        if i in skip:
            continue
        prev, following = (words[i - 1] if i else ""), words[i + 1:i + 2]
        name, at_ref = service_at_ref(toks[i], services)
        pair = resolve_service(name + following[0], services) if following else None
        if pair and slots.service is None and squash(pair) == squash(name + following[0]):
            slots.service = pair  # "api server"
            skip.add(i + 1)
        elif env_of(word) and slots.env is None and prev not in REF_PREPOSITIONS:
            slots.env = env_of(word)
        elif strategy_of(word, following) and slots.strategy is None:
            slots.strategy = strategy_of(word, following)
        elif RUN_ID.match(word):
            slots.run_id = word
        elif svc := resolve_service(name, services) or (by_prefix(word, services) if strict else None):
            _set_service(slots, svc, at_ref)
        elif word not in SLOT_FILLERS and word not in LEADING_FILLERS and word not in ENV_ALIASES:
            candidates.append(i)
    _fill_ref_and_unknown(slots, toks, words, candidates, services, strict)
    return slots


def _set_service(slots: _Slots, service: str, at_ref: str) -> None:
    if slots.service not in (None, service):
        slots.problem = slots.problem or "one service at a time, please: send one request per service"
    slots.service = slots.service or service
    if at_ref:
        _set_ref(slots, at_ref)


def _fill_ref_and_unknown(slots: _Slots, toks: list[str], words: list[str], candidates: list[int],
                          services: Sequence[str], strict: bool) -> None:
    for i in candidates:
        token, prev = toks[i], (words[i - 1] if i else "")
        if slots.ref is None and (looks_like_ref(token) or prev in REF_PREPOSITIONS
                                  or (strict and UNSAFE_CHARS.search(token))):
            _set_ref(slots, token)
        elif token.isdigit():  # "in 10 minutes": not a ref, not an environment, not a service
            continue
        elif strict and prev in ENV_PREPOSITIONS and slots.env is None and not looks_like_ref(token) \
                and (slots.service is not None or resolve_service(token, services) is None and i > 0):
            slots.problem = slots.problem or (
                f"I don't know an environment called `{token}`; use production (prod), staging (stg) "
                "or development (dev)")
        elif strict and slots.service is None and slots.problem is None and not looks_like_ref(token):
            slots.problem = _unknown_service(token, services)


def _set_ref(slots: _Slots, token: str) -> None:
    if UNSAFE_CHARS.search(token) or not REF_PATTERN.match(token) or not any(c.isalnum() for c in token):
        slots.problem = slots.problem or (
            f"`{token}` is not a valid git ref (letters, digits and . _ / @ + - only, no `..`)")
    else:
        slots.ref = token


def _result(kind: IntentKind, slots: _Slots, raw: str, services: Sequence[str] = ()) -> Parsed:
    if slots.problem and kind in ACTIONS:
        return _refused(raw, slots.problem)
    if kind in ACTIONS and slots.service is None and not (kind is IntentKind.CANCEL and slots.run_id):
        if len(services) != 1:  # "ship it!" is chit-chat as often as a request: ask, do nothing
            return _refused(raw, _which_service(kind, services))
        slots.service = services[0]
    intent = Intent(kind=kind, service=slots.service, ref=slots.ref, env=slots.env,
                    strategy=slots.strategy, text=raw)
    return Parsed(intent, problem=slots.problem, run_id=slots.run_id)


def _refused(raw: str, problem: str | None, *, understood: bool = True) -> Parsed:
    return Parsed(Intent(kind=IntentKind.UNKNOWN, text=raw), problem=problem, understood=understood)


def _which_service(kind: IntentKind, services: Sequence[str]) -> str:
    known = ", ".join(f"`{s}`" for s in services) or "none configured"
    example = services[0] if services else "SERVICE"
    command = "/orchestra cancel" if kind is IntentKind.CANCEL else f"/{kind.value}"
    also = " or a run id" if kind is IntentKind.CANCEL else ""
    return f"which service{also}? e.g. `{command} {example}`; known services: {known}"


def _unknown_service(name: str, services: Sequence[str]) -> str:
    known = ", ".join(f"`{s}`" for s in services) or "none configured"
    return f"I don't know a service called `{name}`; known services: {known}"


def _skip_fillers(words: list[str]) -> int:
    i = 0
    while i < len(words) and (words[i] in LEADING_FILLERS or words[i].startswith("@")):
        i += 1
    return i
