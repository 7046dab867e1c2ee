"""The deterministic intent parser: text in, typed :class:`Parsed` out.

Pure: no Slack, Redis or network. It understands the slash commands
(``/deploy``, ``/rollback``, ``/orchestra ...``) and everyday phrasings: "to/on/in
<env>", "with/using <strategy>", several services ("frontend and backend"),
politeness and urgency words, the service named before the verb ("prod frontend
is broken, roll it back"). Safety rules: negations, prompt-injection phrasing,
shell characters, "all/every" quantifiers, requests for later ("after QA signs
off"), unknown services, unknown environments and unsafe refs never become a
deploy, rollback or cancel; an action verb only counts when it opens a clause (an
imperative) and what follows asks rather than describes, so "great job on the
deploy" and "deploy failed for frontend" are chit-chat. An action the rules had
to guess (a verb one typo away, or no verb: "frontend to staging please") is
asked about before it is done.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from orchestra.intents import Intent, IntentKind
from orchestra.parse_slots import Slots, free_slots, slash_slots
from orchestra.parse_vocab import (
    COMMANDS,
    CONDITIONS,
    DESCRIPTIONS,
    ENV_ALIASES,
    EXPLAIN_RE,
    HELP_RE,
    HISTORY_RE,
    INJECTION,
    LEADING_FILLERS,
    MOVE_VERBS,
    NEGATIONS,
    NOT_HELP_RE,
    QUANTIFIERS,
    QUESTION_STARTS,
    SHELL,
    SLASH_KINDS,
    STATUS_RE,
    STRATEGY_ALIASES,
    UNSAFE_CHARS,
    VERBS,
    clean,
    closest_command,
    resolve_service,
    service_at_ref,
    tokens,
    unquote,
    verb_kind,
    words_and_clauses,
)

__all__ = ["ENV_ALIASES", "NEGATIONS", "UNSAFE_CHARS", "Parsed", "parse", "resolve_service"]

ACTIONS = (IntentKind.DEPLOY, IntentKind.ROLLBACK, IntentKind.CANCEL, IntentKind.UNPIN)
INJECTED = "that reads like an instruction to ignore the rules; I only take plain requests"
NEGATED = "that sounds like a request *not* to act, so I did nothing"
SHELLISH = "that message contains shell characters (` $( ; | &&); write the request in plain words"
LATER = "that sounds like a request for later or on a condition; I only start things now, so ask me when it's time"


@dataclass(frozen=True)
class Parsed:
    """What the parser made of a text: the intent, and when it refused, why (user-facing).

    An action (deploy, rollback, cancel) with a ``problem`` must not be carried out. ``suggestion``
    is the closest command (e.g. "`/deploy frontend`") to show the user, never to act on.
    """

    intent: Intent
    problem: str | None = None
    run_id: str | None = None
    understood: bool = True  # False: the rules did not recognise the sentence at all
    needs_confirmation: bool = False  # an action guessed (by a model or the rules): ask before doing it
    suggestion: str | None = None

    def contract(self) -> dict[str, str | None]:
        return self.intent.contract()


@dataclass(frozen=True)
class _Verb:
    """An action verb: what it asks for, where it stands, where its clause starts."""

    kind: IntentKind
    at: int
    start: int
    guessed: bool = False  # one typo away, or no verb at all: ask before acting
    move: bool = False  # "get/put/bring/take", or no verb: only with a named service (and env, to deploy)


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
            return _result(IntentKind.HELP, Slots(), raw)
        command, args = args[0].lower(), args[1:]
    kind = SLASH_KINDS.get(command)
    if kind is None:
        suggestion = _suggest([command], tokens(" ".join(args)), services)
        hint = f"did you mean {suggestion}?" if suggestion else "try `/orchestra help`"
        return _refused(raw, f"unknown command `{command}`; {hint}", suggestion=suggestion)
    if kind is IntentKind.EXPLAIN:
        return _result(kind, free_slots(tokens(" ".join(args)), services), raw)
    return _result(kind, slash_slots(args, services), raw, services)


def _parse_free(text: str, services: Sequence[str], raw: str) -> Parsed:
    low = text.lower()
    toks, starts = words_and_clauses(text)
    words = [t.lower() for t in toks]
    if not words:
        return _refused(raw, None, understood=False)
    if INJECTION.search(low):
        return _refused(raw, INJECTED)
    shellish = bool(SHELL.search(text))
    for verb in _verbs(words, starts):
        if (parsed := _parse_action(verb, toks, words, starts, services, raw, shellish=shellish)) is not None:
            return parsed
    head = _skip_fillers(words)
    kind = _question_kind(low, words, head)
    if kind is not None:  # help names nothing ("what does /rollback do?" has no ref)
        return _result(kind, Slots() if kind is IntentKind.HELP else free_slots(toks, services), raw)
    if "?" not in text and head < len(words) and resolve_service(service_at_ref(toks[head], services)[0], services):
        verbless = _Verb(IntentKind.DEPLOY, head - 1, 0, guessed=True, move=True)  # "frontend to staging please"
        if (parsed := _parse_action(verbless, toks, words, starts, services, raw, shellish=shellish)) is not None:
            return parsed
    return _refused(raw, None, understood=False, suggestion=_suggest(words, toks, services))


def _verbs(words: list[str], starts: list[int]) -> Iterator[_Verb]:
    """The action verb opening each clause, first clause first."""
    for start in (0, *starts):
        head = _skip_fillers(words, start)
        if head < len(words) - 1 and words[head] in STRATEGY_ALIASES:  # "canary deploy frontend"
            head += 1
        if head < len(words) and (verb := _action_verb(words, head, start)) is not None:
            yield verb


def _action_verb(words: list[str], head: int, start: int) -> _Verb | None:
    first, rest = words[head], words[head + 1:]
    if rest[:1] and rest[0] in {"history", "log", "logs", "status", "state", "list"}:
        return None
    if first in {"roll", "rolling"}:
        if rest[:1] in (["out"], ["forward"]):
            return _Verb(IntentKind.DEPLOY, head, start)
        return _Verb(IntentKind.ROLLBACK, head, start) if "back" in rest[:4] else None
    if first == "back" and head > start and words[head - 1] == "go":  # "go back to the previous release"
        return _Verb(IntentKind.ROLLBACK, head, start)
    if first in MOVE_VERBS:  # "get payments onto staging", "take backend back to ..."
        return _Verb(IntentKind.ROLLBACK if "back" in rest[:4] else IntentKind.DEPLOY, head, start, move=True)
    kind = verb_kind(first)
    return _Verb(kind, head, start, guessed=first not in VERBS) if kind is not None else None


def _parse_action(verb: _Verb, toks: list[str], words: list[str], starts: list[int], services: Sequence[str],
                  raw: str, *, shellish: bool) -> Parsed | None:
    """The action ``verb`` asks for, a refusal, or None when the clause describes rather than asks."""
    end = next((s for s in starts if s > verb.at), len(words))
    if any(w in DESCRIPTIONS for w in words[verb.at + 1:end]):
        return None  # "deploy failed for frontend", "release notes for frontend are out"
    joined = " " + " ".join(words) + " "
    if any(f" {n} " in joined for n in NEGATIONS):
        return _refused(raw, NEGATED)
    if shellish:
        return _refused(raw, SHELLISH)
    kind, asked = verb.kind, words[verb.start:]  # "all good, ship frontend": the context is not the request
    if any(w in QUANTIFIERS for w in asked):
        example = _command(kind, Slots(services=list(services[:1]) or ["SERVICE"]))
        return _refused(raw, f"name the services, e.g. `{example}`; I never act on all of them at once")
    if any(w in CONDITIONS for w in asked) or _conditional_context(words, starts, verb.start):
        return _refused(raw, LATER)
    slots = free_slots(toks[verb.at + 1:], services, strict=True)
    if slots.strategy is None:  # "canary deploy frontend"
        slots.strategy = next((STRATEGY_ALIASES[w] for w in words[verb.start:verb.at] if w in STRATEGY_ALIASES),
                              None)
    if verb.start > 0:
        context = free_slots(toks[:verb.start], services)
        if not (context.services or context.env or all(w in LEADING_FILLERS for w in words[:verb.start])):
            return None  # "the user is verified, ship backend": only a scene about the service may come first
        _use_context(slots, context, kind)
    if verb.move and (not slots.services or slots.unknown or (kind is IntentKind.DEPLOY and slots.env is None)):
        return None  # "get me the status of frontend" asks no move
    return _result(kind, slots, raw, services, guessed=verb.guessed)


def _conditional_context(words: list[str], starts: list[int], until: int) -> bool:
    """A clause before the verb opens with a condition: "if it's broken, roll it back", not "broke after"."""
    heads = (_skip_fillers(words, s) for s in (0, *starts) if s < until)
    return any(h < len(words) and words[h] in CONDITIONS for h in heads)


def _use_context(slots: Slots, context: Slots, kind: IntentKind) -> None:
    """What the clauses before the verb say: "prod frontend is broken, roll it back"."""
    if not slots.services and context.services and context.problem is None:
        slots.services, slots.env = context.services, slots.env or context.env
    elif slots.services and context.env and slots.env is None:  # "staging looks good, deploy frontend"
        slots.complain(f"which environment? e.g. `{_command(kind, slots)} {context.env}`")


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


def _result(kind: IntentKind, slots: Slots, raw: str, services: Sequence[str] = (), *,
            guessed: bool = False) -> Parsed:
    if slots.problem and kind in ACTIONS:
        return _refused(raw, slots.problem)
    if kind in ACTIONS and not slots.services and not (kind is IntentKind.CANCEL and slots.run_id):
        if len(services) != 1:  # "ship it!" is chit-chat as often as a request: ask, do nothing
            return _refused(raw, _which_service(kind, services))
        slots.services = [services[0]]
    several = slots.services if len(slots.services) > 1 else []
    if guessed and (several or slots.run_id):  # a confirmation carries one service and no run id: say it
        command = f"`{_command(kind, slots)}`"
        return _refused(raw, f"did you mean {command}?", suggestion=command)
    intent = Intent(kind=kind, service=slots.services[0] if slots.services else None, services=several,
                    ref=slots.ref, env=slots.env, strategy=slots.strategy, no_wait=slots.no_wait, text=raw)
    return Parsed(intent, problem=slots.problem, run_id=slots.run_id, needs_confirmation=guessed,
                  suggestion=f"`{_command(kind, slots)}`" if guessed else None)


def _refused(raw: str, problem: str | None, *, understood: bool = True, suggestion: str | None = None) -> Parsed:
    return Parsed(Intent(kind=IntentKind.UNKNOWN, text=raw), problem=problem, understood=understood,
                  suggestion=suggestion)


def _command(kind: IntentKind, slots: Slots) -> str:
    """The slash command asking for what ``slots`` name, e.g. ``/deploy frontend, backend v1.2 production``."""
    command = COMMANDS.get(kind.value, f"/orchestra {kind.value}")
    strategy = f"--strategy {slots.strategy}" if slots.strategy else None
    no_wait = "--no-wait" if slots.no_wait else None
    parts = (command, ", ".join(slots.services), slots.run_id, slots.ref, slots.env, strategy, no_wait)
    return " ".join(p for p in parts if p)


def _suggest(words: list[str], toks: list[str], services: Sequence[str]) -> str | None:
    """The closest command to a text the rules did not understand: a near miss of a command word."""
    command = next((c for w in words if (c := closest_command(w)) is not None), None)
    if command is None:
        return None
    if command == COMMANDS["help"]:
        return f"`{command}`"
    slots = free_slots(toks, services)
    return "`" + " ".join(p for p in (command, ", ".join(slots.services), slots.env) if p) + "`"


def _which_service(kind: IntentKind, services: Sequence[str]) -> str:
    known = ", ".join(f"`{s}`" for s in services) or "none configured"
    example = services[0] if services else "SERVICE"
    command = COMMANDS.get(kind.value, f"/{kind.value}")
    also = " or a run id" if kind is IntentKind.CANCEL else ""
    return f"which service{also}? e.g. `{command} {example}`; known services: {known}"


def _skip_fillers(words: list[str], start: int = 0) -> int:
    i = start
    while i < len(words) and (words[i] in LEADING_FILLERS or words[i].startswith("@")):
        i += 1
    return i
