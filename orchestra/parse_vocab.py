"""The parser's vocabulary: words, aliases and patterns, and how single words are resolved."""
from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from orchestra.intents import REF_PATTERN, IntentKind

ENV_ALIASES = {
    "production": "production", "prod": "production", "prd": "production", "live": "production",
    "staging": "staging", "stg": "staging", "stage": "staging",
    "development": "development", "dev": "development",
}
WEAK_ENVS = {"live"}  # "what's live on stg": an explicit environment word wins over this one
STRATEGY_ALIASES = {
    "blue-green": "blue-green", "bluegreen": "blue-green", "blue/green": "blue-green",
    "blue_green": "blue-green", "canary": "canary", "rolling": "rolling",
}
VERBS = {
    **dict.fromkeys(("deploy", "redeploy", "ship", "release", "push", "promote", "launch", "rollout"),
                    IntentKind.DEPLOY),
    **dict.fromkeys(("rollback", "revert", "undo", "downgrade"), IntentKind.ROLLBACK),
    **dict.fromkeys(("cancel", "abort", "stop", "halt", "kill"), IntentKind.CANCEL),
}
TYPO_VERBS = ("deploy", "rollback", "cancel", "revert", "release")  # one typo away: asked, not done
# Everyday verbs that only ask for something with a service right after them: "get payments onto
# staging", "put the worker on main in dev"; with "back" they roll back ("take backend back").
MOVE_VERBS = {"get", "bring", "put", "take", "move", "send"}
COMMANDS = {  # what a near miss of a command word suggests
    "deploy": "/deploy", "release": "/deploy", "rollback": "/rollback", "revert": "/rollback",
    "cancel": "/orchestra cancel", "status": "/orchestra status", "history": "/orchestra history",
    "help": "/orchestra help", "unpin": "/orchestra unpin", "drift": "/orchestra drift",
}
SLASH_KINDS = {
    "deploy": IntentKind.DEPLOY, "rollback": IntentKind.ROLLBACK, "status": IntentKind.STATUS,
    "history": IntentKind.HISTORY, "help": IntentKind.HELP, "explain": IntentKind.EXPLAIN,
    "cancel": IntentKind.CANCEL, "why": IntentKind.EXPLAIN, "unpin": IntentKind.UNPIN, "flaky": IntentKind.FLAKY,
    "drift": IntentKind.DRIFT,
}
# Words that may open a polite imperative before the verb ("please", "can you", "let's").
LEADING_FILLERS = {
    "please", "pls", "plz", "kindly", "hey", "hi", "ok", "okay", "so", "now", "can", "could", "would",
    "will", "you", "u", "go", "ahead", "and", "let's", "lets", "let", "us", "i", "we", "want", "wanna",
    "to", "need", "needs", "i'd", "we'd", "like", "orchestra", "bot", "quickly", "just", "then",
    "urgent", "urgently", "asap", "immediately", "yo", "sorry", "hello", "folks",
}
URGENCY = {"asap", "urgent", "urgently", "immediately", "quick", "quickly", "p0", "p1", "p2", "sev0", "sev1",
           "sev2", "sev-0", "sev-1", "sev-2"}  # "it's a p1" names no version
POLITENESS = {"please", "pls", "plz", "kindly", "thanks", "thank", "you", "thx", "ty", "cheers", "sorry"}
SLOT_FILLERS = {
    "the", "a", "an", "to", "in", "into", "on", "onto", "for", "at", "of", "with", "using", "via",
    "service", "app", "application", "please", "pls", "now", "right", "asap", "again", "back",
    "out", "env", "environment", "strategy", "deploy", "deployment", "rollout", "release", "and",
    "it", "my", "our", "version", "ref", "branch", "tag", "commit", "from", "is", "current", "latest",
    "forward", "up", "over", "me", "this", "that", "today", "thanks", "thx", "run", "job", "build",
    "last", "deploys", "deployed", "deploying", "rolled", "rolling", "roll", "did", "was", "were",
    "previous", "prior", "stable", "good", "known", "update", "box", "boxes", "servers", "cluster",
    "services", "apps", "both", "them", "as", "too", "also", "there", "plus", "well", "one",
    *URGENCY, *POLITENESS,
}
LIST_JOINERS = {"and", "plus", "the", "both", "as", "well", "also"}  # "frontend and backend", "frontend, backend"
ENV_PREPOSITIONS = {"to", "in", "into", "on", "onto"}
REF_PREPOSITIONS = {"ref", "branch", "tag", "commit", "version", "sha", "at", "from"}
NEGATIONS = {"don't", "dont", "do not", "never", "not", "no", "shouldn't", "shouldnt", "won't",
             "wont", "can't", "cant", "cannot", "mustn't", "hold off", "wait until", "wait for",
             "didn't", "didnt", "doesn't", "doesnt", "isn't", "without"}
INJECTION = re.compile(
    r"\b(ignore|disregard|forget|override|bypass)\b.{0,40}\b(rules?|instructions?|polic(y|ies)|"
    r"prompt|guardrails?|safety|previous|above|approvals?)\b|\bsystem prompt\b|\byou are now\b"
    r"|\bnew instructions\b|\binstructions from\b|\b(admin|developer|god) mode\b"
    r"|</?[a-z][\w-]*(\s[^>]*)?/?>", re.I)  # the last: markup such as a forged </untrusted-data> fence
SHELL = re.compile(r"`|\$\(|\$\{|;|&&|\|")  # in an action's text: refuse rather than guess
QUANTIFIERS = {"all", "every", "everything", "everyone", "each", "any"}
# A request for later or on a condition: not something to start now.
CONDITIONS = {"if", "unless", "until", "once", "after", "when", "whenever", "tomorrow", "tonight", "later"}
# Words that describe a deploy rather than ask for one: "deploy failed for frontend",
# "release notes for frontend are out", "push notifications on frontend are broken".
DESCRIPTIONS = {"is", "are", "was", "were", "went", "goes", "seems", "seemed", "looks", "looked", "failed",
                "fails", "worked", "works", "broke", "broken", "crashed", "stuck", "succeeded", "happened",
                "has", "had", "have", "been", "took", "ran", "passed", "notes", "notifications"}
REF_WORDS = {"main", "master", "develop", "trunk", "head"}
SHA = re.compile(r"^[0-9a-f]{7,40}$")
UNSAFE_CHARS = re.compile(r"[`$;|&<>(){}\\\"*?!~^:\[\]]")
WORD = re.compile(r"\S+")
MENTION = re.compile(r"<[@#!][^>]*>")
LINK = re.compile(r"<(?:https?|mailto):[^|>]*\|([^>]*)>|<(?:https?|mailto):([^>]*)>")
EDGE_PUNCT = ".,!?;:\"“”‘’()[]*_"
CLAUSE_END = ",.!?:;"  # "prod frontend is broken, roll it back": the action is the second clause
DASHES = {"-", "–", "—", "--"}
BACKTICKED = re.compile(r"`([^`\s]+)`")

HELP_RE = re.compile(r"\b(help|commands?|usage|what can you do|how (do|can|should) (i|we|you)|"
                     r"what can (i|we) (ask|say|type|do))\b|\bwhat (does|do|is) /\w+\b|\bhow does /\w+\b")
NOT_HELP_RE = re.compile(r"\b(why|status|deployed|running)\b")
EXPLAIN_RE = re.compile(r"\bwhat (happened|went wrong|broke|failed)\b|\broot cause\b|\bpost-?mortem\b|"
                        r"\bhow did\b|\bwhat caused\b|\bwhy\b|\bhow come\b|\bwhat'?s wrong\b|"
                        r"\bwhat (is|was) wrong\b|\bwhat made\b|\breason (for|why|behind)\b")
HISTORY_RE = re.compile(
    r"\b(who|when) (deployed|shipped|released|rolled|last|approved)\b|\bhistory\b|\baudit\b|"
    r"\b(recent|last|previous|past) (\w+ )?(deploy|deploys|deployments|releases|runs|rollbacks)\b|"
    r"\b(list|show)( me)? (the )?(recent|last|past) |\blast (deployed|shipped|released)\b|"
    r"\bwhat did (we|you|i|they|\S+) (deploy|ship|release)\b|"
    r"\b(list|show)( me)?( all)?( the)? (deploys|deployments|releases|runs)\b|"
    r"\b(what|everything|anything|things)( that| which)? (went|got|has gone|have gone)( out)? (to|into|on)\b|"
    r"\bwhat('?s| has| have) been (deployed|shipped|released|rolled back)\b|\bwhat changed\b|"
    r"\bwho (touched|changed|pushed|approved)\b|\bwhen (did|was) \S+ last\b|"
    r"\b(deploy|deployment|release|rollback) (log|logs|list)\b|\blast \d+ (deploys|deployments|releases|runs)\b")
STATUS_RE = re.compile(
    r"\bstatus\b|\bwhat'?s (deployed|running|live|up|out)\b|\bwhat is (currently |now )?(deployed|running|live)\b|"
    r"\bwhat'?s (currently|now) (deployed|running|live)\b|\bthe state of\b|"
    r"\b(which|what) version\b|\bhow'?s\b|\bhow is\b|\bis \S+ (up|down|healthy|ok|broken)\b|"
    r"\b(show|list) (me )?(the )?(active|running|current)\b|\bwhat'?s (the )?(current|latest) version\b|"
    r"\bany (\w+ )?(deploys?|deployments|runs|rollouts) (running|active|going|in progress)\b|"
    r"\bwhat'?s (going on|happening)\b|\bwho('?s| is) deploying\b|\bgoing on\b|\bin progress\b|"
    r"\bis (there|anything|anyone|somebody|someone) (\w+ )?(deploying|rolling|running)\b|"
    r"\bwhat'?s (on|in) (prod|production|staging|stg|stage|dev|development|live)\b|"
    r"\bwhere is \S+ at\b|\bhow are things\b|"
    r"^(is|are)\b.*\b(done|finished|complete|completed|over|live|up|down|healthy|ok|running|deployed|broken)\b")
QUESTION_STARTS = {"what", "what's", "whats", "which", "where"}


def distance(a: str, b: str) -> int:
    """Damerau-Levenshtein (optimal string alignment) distance."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def verb_kind(word: str) -> IntentKind | None:
    """The action a verb asks for, tolerating one typo in the long verbs (not inflections)."""
    if word in VERBS:
        return VERBS[word]
    if len(word) < 5 or any(word.startswith(v) for v in VERBS):
        return None  # "deploys", "deployed", "stopping": talk about an action, not a request
    close = [v for v in TYPO_VERBS if distance(word, v) == 1]
    return VERBS[close[0]] if len(close) == 1 else None


def env_of(word: str) -> str | None:
    """The canonical environment a word names: an alias, or a full name one or two typos away."""
    if word in ENV_ALIASES:
        return ENV_ALIASES[word]
    if len(word) < 6:
        return None
    close = [e for e in ("production", "staging", "development") if distance(word, e) <= (1 if e == "staging" else 2)]
    return close[0] if len(close) == 1 else None


def clean(text: str) -> str:
    """Slack markup out (mentions, links, &amp; escapes), curly apostrophes straightened, spaces collapsed."""
    text = LINK.sub(lambda m: m.group(1) or m.group(2) or "", text)
    text = MENTION.sub(" ", text).replace("’", "'")
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")  # Slack's escaping
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    """Words with edge punctuation removed, except where it would hide shell characters."""
    return words_and_clauses(text)[0]


def words_and_clauses(text: str) -> tuple[list[str], list[int]]:
    """:func:`tokens`, and the index of the token opening each clause after the first.

    A clause ends at , . ! ? : ; or a lone dash: "prod frontend is broken, roll it back".
    """
    out: list[str] = []
    starts: list[int] = []
    for raw in WORD.findall(text):
        if raw in DASHES:
            starts.append(len(out))
            continue
        stripped = raw.lstrip(EDGE_PUNCT.replace(".", "")).rstrip(EDGE_PUNCT)  # keep "../x" whole
        token = stripped if not UNSAFE_CHARS.search(raw.strip(EDGE_PUNCT + "?!")) else raw
        if token.lower().endswith("'s") and len(token) > 2:
            token = token[:-2]
        if token:
            out.append(token)
        if raw.rstrip("\"“”‘’)]*_")[-1:] in tuple(CLAUSE_END):
            starts.append(len(out))
    return out, sorted(set(s for s in starts if 0 < s < len(out)))


def closest_command(word: str) -> str | None:
    """The command a near miss names ("dpeloy", "stauts"), never an exact word or its inflection."""
    if len(word) < 4 or word in VERBS or word in COMMANDS or word.startswith(("un", "non")) \
            or any(word.startswith(c) for c in (*COMMANDS, *VERBS)):
        return None
    close = [c for c in COMMANDS if distance(word, c) <= (1 if len(c) <= 4 else 2)]
    return COMMANDS[close[0]] if len(close) == 1 or len({COMMANDS[c] for c in close}) == 1 else None


def squash(word: str) -> str:
    return re.sub(r"[-_\s.]", "", word.lower().strip(EDGE_PUNCT))


def resolve_service(word: str, services: Sequence[str]) -> str | None:
    """The known service ``word`` names: exact, ignoring case/-/_ , or one typo away."""
    key = squash(word)
    if not key:
        return None
    by_key = {squash(s): s for s in services}
    if key in by_key:
        return by_key[key]
    if key.endswith("s") and key[:-1] in by_key:
        return by_key[key[:-1]]
    if len(key) < 4 or key in ENV_ALIASES or key in STRATEGY_ALIASES or key in SLOT_FILLERS:
        return None
    close = difflib.get_close_matches(key, list(by_key), n=2, cutoff=0.8)
    if len(close) == 1 or (close and distance(key, close[0]) < distance(key, close[1])):
        return by_key[close[0]] if distance(key, close[0]) <= (1 if len(key) <= 5 else 2) else None
    return None


def service_at_ref(token: str, services: Sequence[str]) -> tuple[str, str]:
    """``frontend@v1.4.2`` or ``frontend:v1.4.2`` -> (``frontend``, ``v1.4.2``); else (token, "")."""
    for sep in ("@", ":"):
        name, found, ref = token.partition(sep)
        if found and resolve_service(name, services):
            return name, ref
    return token, ""


def by_prefix(word: str, services: Sequence[str]) -> str | None:
    """In a request, "api" names api-server when no other service starts like it."""
    if len(word) < 3 or word in SLOT_FILLERS or word in LEADING_FILLERS or env_of(word):
        return None
    matches = [s for s in services if s.lower().startswith(word)]
    return matches[0] if len(matches) == 1 else None


def unquote(text: str, services: Sequence[str]) -> str:
    """`frontend` and `v1.4.2` in backticks are formatting; anything else in backticks stays (and is refused)."""
    def plain(match: re.Match[str]) -> str:
        word = match.group(1)
        safe = REF_PATTERN.match(word) and (resolve_service(word, services) or env_of(word.lower())
                                           or word.lower() in STRATEGY_ALIASES or looks_like_ref(word))
        return word if safe else match.group(0)
    return BACKTICKED.sub(plain, text)


def strategy_of(word: str, following: list[str]) -> str | None:
    if word == "rolling" and following[:1] and following[0] in {"back", "out", "forward"}:
        return None
    if word in {"blue", "green"} and following[:1] in (["green"], ["blue"]):
        return "blue-green"
    return STRATEGY_ALIASES.get(word)


def looks_like_ref(token: str) -> bool:
    """hotfix-v2, v1.4.2, release/2026-11, 3f9c2ab, main; not "10" (as in "in 10 minutes")."""
    low = token.lower()
    if low in ENV_ALIASES or (low.isdigit() and not SHA.match(low)):
        return False
    return low in REF_WORDS or bool(SHA.match(low)) or any(c.isdigit() for c in low) \
        or any(c in low for c in "/.-_+")
