"""The parser's vocabulary: words, aliases and patterns (pure data and tiny helpers)."""
from __future__ import annotations

import re

from orchestra.intents import IntentKind

ENV_ALIASES = {
    "production": "production", "prod": "production", "prd": "production", "live": "production",
    "staging": "staging", "stg": "staging", "stage": "staging",
    "development": "development", "dev": "development",
}
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
TYPO_VERBS = ("deploy", "rollback", "cancel", "revert", "release")  # one typo away still counts
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
    "previous", "prior", "stable", "good", "known", "update", "box", "boxes", "servers", "cluster",
}
ENV_PREPOSITIONS = {"to", "in", "into", "on", "onto"}
REF_PREPOSITIONS = {"ref", "branch", "tag", "commit", "version", "sha", "at", "from"}
NEGATIONS = {"don't", "dont", "do not", "never", "not", "no", "shouldn't", "shouldnt", "won't",
             "wont", "can't", "cant", "cannot", "mustn't", "hold off", "wait until", "wait for",
             "didn't", "didnt", "doesn't", "doesnt", "isn't", "without"}
INJECTION = re.compile(
    r"\b(ignore|disregard|forget|override|bypass)\b.{0,40}\b(rules?|instructions?|polic(y|ies)|"
    r"prompt|guardrails?|safety|previous|above|approvals?)\b|\bsystem prompt\b|\byou are now\b", re.I)
SHELL = re.compile(r"`|\$\(|\$\{|;|&&|\|")  # in an action's text: refuse rather than guess
QUANTIFIERS = {"all", "every", "everything", "everyone", "each", "any"}
REF_WORDS = {"main", "master", "develop", "trunk", "head"}
SHA = re.compile(r"^[0-9a-f]{7,40}$")
RUN_ID = re.compile(r"^r-\d{8}-[0-9a-f]{6}$")
UNSAFE_CHARS = re.compile(r"[`$;|&<>(){}\\\"*?!~^:\[\]]")
WORD = re.compile(r"\S+")
MENTION = re.compile(r"<[@#!][^>]*>")
LINK = re.compile(r"<(?:https?|mailto):[^|>]*\|([^>]*)>|<(?:https?|mailto):([^>]*)>")
EDGE_PUNCT = ".,!?;:\"“”‘’()[]*_"

HELP_RE = re.compile(r"\b(help|commands?|usage|what can you do|how (do|can|should) (i|we|you))\b")
NOT_HELP_RE = re.compile(r"\b(why|status|deployed|running)\b")
EXPLAIN_RE = re.compile(r"\bwhat (happened|went wrong|broke|failed)\b|\broot cause\b|\bpost-?mortem\b|"
                        r"\bhow did\b|\bwhat caused\b|\bwhy\b")
HISTORY_RE = re.compile(
    r"\b(who|when) (deployed|shipped|released|rolled|last|approved)\b|\bhistory\b|\baudit\b|"
    r"\b(recent|last|previous|past) (\w+ )?(deploy|deploys|deployments|releases|runs|rollbacks)\b|"
    r"\b(list|show)( me)? (the )?(recent|last|past) |\blast (deployed|shipped|released)\b|"
    r"\bwhat did (we|you|i|they|\S+) (deploy|ship|release)\b|"
    r"\b(list|show)( me)?( all)?( the)? (deploys|deployments|releases|runs)\b")
STATUS_RE = re.compile(
    r"\bstatus\b|\bwhat'?s (deployed|running|live|up|out)\b|\bwhat is (deployed|running|live)\b|"
    r"\b(which|what) version\b|\bhow'?s\b|\bhow is\b|\bis \S+ (up|down|healthy|ok|broken)\b|"
    r"\b(show|list) (me )?(the )?(active|running|current)\b|\bwhat'?s (the )?(current|latest) version\b|"
    r"\bany (\w+ )?(deploys?|deployments|runs|rollouts) (running|active|going|in progress)\b|"
    r"\bwhat'?s (going on|happening)\b|\bwho('?s| is) deploying\b")
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
    """Slack markup out (mentions, links), curly apostrophes straightened, spaces collapsed."""
    text = LINK.sub(lambda m: m.group(1) or m.group(2) or "", text)
    text = MENTION.sub(" ", text).replace("’", "'")
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    """Words with edge punctuation removed, except where it would hide shell characters."""
    out = []
    for raw in WORD.findall(text):
        stripped = raw.strip(EDGE_PUNCT)
        token = stripped if not UNSAFE_CHARS.search(raw.strip(EDGE_PUNCT + "?!")) else raw
        if token.lower().endswith("'s") and len(token) > 2:
            token = token[:-2]
        if token:
            out.append(token)
    return out


def squash(word: str) -> str:
    return re.sub(r"[-_\s.]", "", word.lower().strip(EDGE_PUNCT))
