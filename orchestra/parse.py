"""The deterministic intent parser: text in, typed :class:`Parsed` out.

Pure: no Slack, Redis or network. It understands the slash commands
(``/deploy``, ``/rollback``, ``/orchestra ...``) and common plain-language
phrasings. Safety rules, in order: negations, prompt-injection phrasing,
"all/every" quantifiers, unknown services and unsafe refs never become a
deploy, rollback or cancel; an action verb only counts when it opens the
sentence (an imperative), so "great job on the deploy" is chit-chat.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from orchestra.intents import REF_PATTERN, Intent, IntentKind

ENV_ALIASES = {
    "production": "production", "prod": "production", "prd": "production", "live": "production",
    "staging": "staging", "stg": "staging", "stage": "staging", "stging": "staging",
    "development": "development", "dev": "development",
}
STRATEGY_ALIASES = {
    "blue-green": "blue-green", "bluegreen": "blue-green", "blue/green": "blue-green",
    "blue_green": "blue-green", "canary": "canary", "rolling": "rolling",
}
ACTIONS = (IntentKind.DEPLOY, IntentKind.ROLLBACK, IntentKind.CANCEL)
DEPLOY_VERBS = {"deploy", "redeploy", "ship", "release", "push", "promote", "launch", "rollout"}
ROLLBACK_VERBS = {"rollback", "revert", "undo", "downgrade"}
CANCEL_VERBS = {"cancel", "abort", "stop", "halt", "kill"}
SLASH_KINDS = {
    "deploy": IntentKind.DEPLOY, "rollback": IntentKind.ROLLBACK, "status": IntentKind.STATUS,
    "history": IntentKind.HISTORY, "help": IntentKind.HELP, "explain": IntentKind.EXPLAIN,
    "cancel": IntentKind.CANCEL, "why": IntentKind.EXPLAIN,
}
# Words that may open a polite imperative before the verb ("please", "can you", "let's").
LEADING_FILLERS = {
    "please", "pls", "plz", "kindly", "hey", "hi", "ok", "okay", "so", "now", "can", "could", "would",
    "will", "you", "u", "go", "ahead", "and", "let's", "lets", "let", "us", "i", "we", "want", "wanna",
    "to", "need", "needs", "i'd", "we'd", "like", "orchestra", "bot", "quickly", "just", "then",
}
SLOT_FILLERS = {
    "the", "a", "an", "to", "in", "into", "on", "onto", "for", "at", "of", "with", "using", "via",
    "service", "app", "application", "please", "pls", "now", "right", "asap", "again", "back",
    "out", "env", "environment", "strategy", "deploy", "deployment", "rollout", "release", "and",
    "it", "my", "our", "version", "ref", "branch", "tag", "commit", "from", "is", "current", "latest",
    "forward", "up", "over", "me", "this", "that", "today", "thanks", "thx", "run", "job", "build",
    "last", "deploys", "deployed", "deploying", "rolled", "rolling", "roll", "did", "was", "were",
}
NEGATIONS = {"don't", "dont", "do not", "never", "not", "no", "shouldn't", "shouldnt", "won't",
             "wont", "can't", "cant", "cannot", "mustn't", "hold off", "wait until", "wait for",
             "didn't", "didnt", "doesn't", "doesnt", "isn't", "without"}
INJECTION = re.compile(
    r"\b(ignore|disregard|forget|override|bypass)\b.{0,40}\b(rules?|instructions?|polic(y|ies)|"
    r"prompt|guardrails?|safety|previous|above|approvals?)\b|\bsystem prompt\b|\byou are now\b",
    re.I)
QUANTIFIERS = {"all", "every", "everything", "everyone", "each", "any"}
REF_WORDS = {"main", "master", "develop", "trunk", "head"}
SHA = re.compile(r"^[0-9a-f]{7,40}$")
RUN_ID = re.compile(r"^r-\d{8}-[0-9a-f]{6}$")
UNSAFE_CHARS = re.compile(r"[`$;|&<>(){}\\\"*?!~^:\[\]]")
WORD = re.compile(r"\S+")
MENTION = re.compile(r"<[@#!][^>]*>")
LINK = re.compile(r"<(?:https?|mailto):[^|>]*\|([^>]*)>|<(?:https?|mailto):([^>]*)>")
EDGE_PUNCT = ".,!?;:\"“”‘’()[]*_"


@dataclass(frozen=True)
class Parsed:
    """What the parser made of a text: the intent, and when it refused, why (user-facing)."""

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
    clean = _clean(text)
    if clean.startswith("/"):
        return _parse_slash(clean, services, text)
    return _parse_free(clean, services, text)


def resolve_service(word: str, services: Sequence[str]) -> str | None:
    """The known service ``word`` names: exact, ignoring case/-/_ , or one typo away."""
    key = _squash(word)
    if not key:
        return None
    by_key = {_squash(s): s for s in services}
    if key in by_key:
        return by_key[key]
    if key.endswith("s") and key[:-1] in by_key:
        return by_key[key[:-1]]
    if len(key) < 4 or key in ENV_ALIASES or key in STRATEGY_ALIASES or key in SLOT_FILLERS:
        return None
    close = difflib.get_close_matches(key, list(by_key), n=2, cutoff=0.8)
    if len(close) == 1 or (close and _distance(key, close[0]) < _distance(key, close[1])):
        return by_key[close[0]] if _distance(key, close[0]) <= (1 if len(key) <= 5 else 2) else None
    return None


def _parse_slash(clean: str, services: Sequence[str], raw: str) -> Parsed:
    words = clean.split()
    command = words[0][1:].lower()
    args = words[1:]
    if command == "orchestra":
        if not args:
            return _result(IntentKind.HELP, _Slots(), raw)
        command, args = args[0].lower(), args[1:]
    kind = SLASH_KINDS.get(command)
    if kind is None:
        return _refused(raw, f"unknown command `{command}`; try `/orchestra help`")
    if kind is IntentKind.EXPLAIN:
        slots = _free_slots(_tokens(" ".join(args)), services)
        return _result(kind, slots, raw)
    slots = _slash_slots(args, services)
    return _result(kind, slots, raw, services)


def _slash_slots(args: list[str], services: Sequence[str]) -> _Slots:
    slots = _Slots()
    rest: list[str] = []
    it = iter(args)
    for arg in it:
        low = arg.lower()
        if low.startswith("--strategy"):
            value = low.split("=", 1)[1] if "=" in low else next(it, "")
            slots.strategy = STRATEGY_ALIASES.get(value)
            if slots.strategy is None:
                slots.problem = f"unknown strategy `{value}`; use blue-green, canary or rolling"
        elif low.startswith("--env"):
            value = low.split("=", 1)[1] if "=" in low else next(it, "")
            slots.env = _env_or_problem(value, slots)
        elif low in ENV_ALIASES and slots.env is None:
            slots.env = ENV_ALIASES[low]
        elif low in STRATEGY_ALIASES and slots.strategy is None:
            slots.strategy = STRATEGY_ALIASES[low]
        elif RUN_ID.match(low):
            slots.run_id = low
        else:
            rest.append(arg)
    if rest:
        name, _, at_ref = rest[0].partition("@")
        slots.service = resolve_service(name, services)
        if slots.service is None:
            slots.problem = slots.problem or _unknown_service(name, services)
        refs = ([at_ref] if at_ref else []) + rest[1:2]
        if refs:
            _set_ref(slots, refs[0])
        if len(rest) > 2 or (at_ref and len(rest) > 1):
            slots.problem = slots.problem or f"unexpected words: `{' '.join(rest[2:] or rest[1:])}`"
    return slots


def _parse_free(clean: str, services: Sequence[str], raw: str) -> Parsed:
    low = clean.lower()
    tokens = _tokens(clean)
    words = [t.lower() for t in tokens]
    if not words:
        return _refused(raw, None, understood=False)
    if INJECTION.search(low):
        return _refused(raw, "that reads like an instruction to ignore the rules; I only take plain requests")
    head = _skip_fillers(words)
    verb = _action_verb(words, head)
    if verb is not None:
        return _parse_action(verb, tokens, words, head, services, raw)
    kind = _question_kind(low, words, head)
    if kind is None:
        return _refused(raw, None, understood=False)
    return _result(kind, _free_slots(tokens, services), raw)


def _parse_action(kind: IntentKind, tokens: list[str], words: list[str], head: int,
                  services: Sequence[str], raw: str) -> Parsed:
    joined = " " + " ".join(words) + " "
    if any(f" {n} " in joined for n in NEGATIONS):
        return _refused(raw, "that sounds like a request *not* to act, so I did nothing")
    if any(w in QUANTIFIERS for w in words):
        return _refused(raw, f"I {kind.value} one service at a time; name it, e.g. `/{kind.value} frontend`")
    slots = _free_slots(tokens[head + 1:], services, strict=True)
    return _result(kind, slots, raw, services)


def _action_verb(words: list[str], head: int) -> IntentKind | None:
    if head >= len(words):
        return None
    first = words[head]
    rest = words[head + 1:]
    if rest[:1] and rest[0] in {"history", "log", "logs", "status", "state", "list"}:
        return None
    if first in {"roll", "rolling"}:
        if rest[:1] == ["out"] or rest[:1] == ["forward"]:
            return IntentKind.DEPLOY
        return IntentKind.ROLLBACK if "back" in rest[:4] else None
    if first in DEPLOY_VERBS:
        return IntentKind.DEPLOY
    if first in ROLLBACK_VERBS:
        return IntentKind.ROLLBACK
    if first in CANCEL_VERBS:
        return IntentKind.CANCEL
    return None


def _question_kind(low: str, words: list[str], head: int) -> IntentKind | None:
    first = words[head] if head < len(words) else ""
    if re.search(r"\b(help|commands?|usage|what can you do|how do i use)\b", low) and not re.search(
            r"\b(why|status|deployed|running)\b", low):
        return IntentKind.HELP
    if first in {"why", "explain"} or re.search(
            r"\bwhat (happened|went wrong|broke|failed)\b|\broot cause\b|\bpost-?mortem\b", low):
        return IntentKind.EXPLAIN
    if re.search(r"\b(who|when) (deployed|shipped|released|rolled|last)\b|\bhistory\b|"
                 r"\b(recent|last|previous|past) (\w+ )?(deploy|deploys|deployments|releases|runs)\b|"
                 r"\b(list|show)( me)? (the )?(recent|last|past) ", low):
        return IntentKind.HISTORY
    if first in {"status", "state"} or re.search(
            r"\bstatus\b|\bwhat'?s (deployed|running|live|up|out)\b|\bwhat is (deployed|running|live)\b|"
            r"\bwhich version\b|\bwhat version\b|\bhow'?s\b|\bhow is\b|\bis \S+ (up|down|healthy|ok)\b|"
            r"\b(show|list) (me )?(the )?(active|running|current)\b", low):
        return IntentKind.STATUS
    return None


def _free_slots(tokens: list[str], services: Sequence[str], *, strict: bool = False) -> _Slots:
    """Pick service, env, strategy and ref out of free text."""
    slots = _Slots()
    words = [t.lower() for t in tokens]
    candidates: list[int] = []
    skip: set[int] = set()
    for i, word in enumerate(words):
        prev = words[i - 1] if i else ""
        name, _, at_ref = tokens[i].partition("@")
        pair = resolve_service(name + words[i + 1], services) if i + 1 < len(words) else None
        if pair and slots.service is None and _squash(pair) == _squash(name + words[i + 1]):
            slots.service = pair
            skip.add(i + 1)
        elif i in skip:
            continue
        elif word in ENV_ALIASES and slots.env is None and not _is_ref_position(prev):
            slots.env = ENV_ALIASES[word]
        elif _strategy(word, words[i + 1:i + 2]) and slots.strategy is None:
            slots.strategy = _strategy(word, words[i + 1:i + 2])
        elif RUN_ID.match(word):
            slots.run_id = word
        elif svc := resolve_service(name, services):
            if slots.service not in (None, svc):
                slots.problem = slots.problem or "one service at a time, please: send one request per service"
            slots.service = slots.service or svc
            if at_ref:
                _set_ref(slots, at_ref)
        elif word not in SLOT_FILLERS and word not in LEADING_FILLERS and word not in ENV_ALIASES:
            candidates.append(i)
    _fill_ref_and_unknown(slots, tokens, words, candidates, services, strict)
    return slots


def _fill_ref_and_unknown(slots: _Slots, tokens: list[str], words: list[str], candidates: list[int],
                          services: Sequence[str], strict: bool) -> None:
    for i in candidates:
        token, prev = tokens[i], (words[i - 1] if i else "")
        if slots.ref is None and (_looks_like_ref(token) or _is_ref_position(prev)
                                  or (strict and UNSAFE_CHARS.search(token))):
            _set_ref(slots, token)
        elif strict and slots.service is None and slots.problem is None and not _looks_like_ref(token):
            slots.problem = _unknown_service(token, services)
            return


def _set_ref(slots: _Slots, token: str) -> None:
    if UNSAFE_CHARS.search(token) or not REF_PATTERN.match(token):
        slots.problem = slots.problem or (
            f"`{token}` is not a valid git ref (letters, digits and . _ / @ + - only, no `..`)")
    else:
        slots.ref = token


def _result(kind: IntentKind, slots: _Slots, raw: str, services: Sequence[str] = ()) -> Parsed:
    if kind in ACTIONS and slots.service is None and not (kind is IntentKind.CANCEL and slots.run_id):
        if len(services) == 1 and not slots.problem:
            slots.service = services[0]
        else:
            slots.problem = slots.problem or _which_service(kind, services)
    if slots.problem and kind in ACTIONS:
        return _refused(raw, slots.problem)
    intent = Intent(kind=kind, service=slots.service, ref=slots.ref, env=slots.env,
                    strategy=slots.strategy, text=raw)
    return Parsed(intent, problem=slots.problem, run_id=slots.run_id)


def _refused(raw: str, problem: str | None, *, understood: bool = True) -> Parsed:
    return Parsed(Intent(kind=IntentKind.UNKNOWN, text=raw), problem=problem, understood=understood)


def _env_or_problem(value: str, slots: _Slots) -> str | None:
    env = ENV_ALIASES.get(value)
    if env is None:
        slots.problem = f"unknown environment `{value}`; use production, staging or development"
    return env


def _strategy(word: str, following: list[str]) -> str | None:
    if word == "rolling" and following[:1] and following[0] in {"back", "out", "forward"}:
        return None
    if word in {"blue", "green"} and following[:1] in (["green"], ["blue"]):
        return "blue-green"
    return STRATEGY_ALIASES.get(word)


def _looks_like_ref(token: str) -> bool:
    low = token.lower()
    return (low in REF_WORDS or bool(SHA.match(low)) or any(c.isdigit() for c in low)
            or any(c in low for c in "/.-_+")) and low not in ENV_ALIASES


def _is_ref_position(prev: str) -> bool:
    return prev in {"ref", "branch", "tag", "commit", "version", "sha", "at", "from"}


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
    while i < len(words) and words[i] in LEADING_FILLERS:
        i += 1
    return i


def _clean(text: str) -> str:
    text = LINK.sub(lambda m: m.group(1) or m.group(2) or "", text)
    text = MENTION.sub(" ", text).replace("’", "'")
    return " ".join(text.split())


def _tokens(text: str) -> list[str]:
    out = []
    for raw in WORD.findall(text):
        token = raw.strip(EDGE_PUNCT) if not UNSAFE_CHARS.search(raw.strip(EDGE_PUNCT + "?!")) else raw
        if token.lower().endswith("'s") and len(token) > 2:
            token = token[:-2]
        if token:
            out.append(token)
    return out


def _squash(word: str) -> str:
    return re.sub(r"[-_\s.]", "", word.lower().strip(EDGE_PUNCT))


def _distance(a: str, b: str) -> int:
    """Damerau-Levenshtein (optimal string alignment) distance."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]
