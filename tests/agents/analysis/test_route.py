"""The risk route: a table of changes, policies and asks against the path chosen, the `risk:` section's
refusals, a branch that tries to soften its own path, and the stages that read the chosen values."""
from __future__ import annotations

from pathlib import Path

import pytest
from redis import Redis

from agents.analysis.risk import classify_risk
from agents.analysis.route import NOTHING_TO_DO, DeployPath, decide, duration, record
from agents.chatops.answers import answer
from agents.context import AgentContext
from agents.deploy.stage import plan_for
from agents.observability.policy import policy_for
from orchestra.config import parse_config
from orchestra.config.risk_policy import RiskPath, RiskPolicy
from orchestra.config.trusted import TrustedPolicy, parse_policy
from orchestra.errors import ConfigError, StageFailed
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.settings import Settings
from orchestra.store import Run, RunStore

BLUE_GREEN = DeployPath("blue-green", (10, 50, 100), 300.0, False)  # the environment's own path
CANARY_ENV = DeployPath("canary", (10, 50, 100), 300.0, False)
GATED_ENV = DeployPath("blue-green", (10, 50, 100), 300.0, True)  # approval_required
MIGRATION = ["backend/migrations/0002_add_email.sql"]
HIGH = DeployPath("canary", (5, 25, 50, 100), 900.0, True)
AS_BLUE_GREEN = DeployPath("blue-green", (), 300.0, False)  # the environment's path, chosen (no canary steps)
BIG_DIFF = "diff --git a/app.py b/app.py\n" + "".join(f"+line {n}\n" for n in range(600))

CASES = [  # (name, files, diff, policy, env path, asked for, chosen path (None: nothing), in why)
    ("migration goes canary with an approval", MIGRATION, "", RiskPolicy(), BLUE_GREEN, None, HIGH,
     "approval first, though the environment does not require one"),
    ("a laxer ask on a high-risk change stays canary", MIGRATION, "", RiskPolicy(), BLUE_GREEN, "blue-green", HIGH,
     "blue-green was asked for, but a high-risk change goes no laxer than canary (risk.high.strategy)"),
    ("rolling asked on high risk stays canary", MIGRATION, "", RiskPolicy(), BLUE_GREEN, "rolling", HIGH,
     "no laxer than canary"),
    ("auth code is high risk", ["backend/auth/login.py"], "", RiskPolicy(), BLUE_GREEN, None, HIGH,
     "authentication"),
    ("the Dockerfile is infrastructure", ["backend/Dockerfile"], "", RiskPolicy(), BLUE_GREEN, None, HIGH,
     "infrastructure"),
    ("a very large change is high risk", ["app.py"], BIG_DIFF, RiskPolicy(), BLUE_GREEN, None, HIGH, "large change"),
    ("docs only builds nothing", ["README.md", "docs/setup.md"], "", RiskPolicy(), BLUE_GREEN, None, None,
     "risk.docs_only: skip"),
    ("docs only, docs_only: deploy takes the low path", ["README.md"], "", RiskPolicy(docs_only="deploy"),
     BLUE_GREEN, None, DeployPath("blue-green", (), 120.0, False), "low risk goes blue-green (risk.low)"),
    ("docs and tests are not docs only", ["README.md", "tests/test_x.py"], "", RiskPolicy(), CANARY_ENV, None,
     DeployPath("blue-green", (), 120.0, False), "low risk goes blue-green"),
    ("tests only, canary asked: stricter is taken", ["tests/test_x.py"], "", RiskPolicy(), BLUE_GREEN, "canary",
     DeployPath("canary", (10, 50, 100), 120.0, False), "canary as asked (stricter than blue-green)"),
    ("tests only, rolling asked: refused", ["tests/test_x.py"], "", RiskPolicy(), BLUE_GREEN, "rolling",
     DeployPath("blue-green", (), 120.0, False), "no laxer than blue-green (risk.low.strategy)"),
    ("medium keeps the environment's path", ["backend/app.py"], "", RiskPolicy(), CANARY_ENV, None, CANARY_ENV,
     "medium risk keeps the environment's canary"),
    ("medium refuses a laxer ask than the environment's", ["backend/app.py"], "", RiskPolicy(), CANARY_ENV,
     "rolling", CANARY_ENV, "no laxer than canary (the environment's strategy)"),
    ("an ask that is not a strategy changes nothing", ["backend/app.py"], "", RiskPolicy(), BLUE_GREEN, "yolo",
     AS_BLUE_GREEN, "`yolo` was asked for, which is not a strategy"),
    ("the environment's approval stays whatever the level says", ["backend/app.py"], "",
     RiskPolicy(medium=RiskPath(strategy="rolling", watch=0)), GATED_ENV, None,
     DeployPath("rolling", (), 0.0, True), "medium risk goes rolling (risk.medium)"),
    ("a high level without canary_steps uses the deployment's", MIGRATION, "",
     RiskPolicy(high=RiskPath(strategy="canary", approval=True)), BLUE_GREEN, None,
     DeployPath("canary", (10, 50, 100), 300.0, True), "high risk goes canary"),
    ("a high level written as {} is the environment's path", MIGRATION, "", RiskPolicy(high=RiskPath()), BLUE_GREEN,
     None, AS_BLUE_GREEN, "high risk keeps the environment's blue-green"),
    ("nothing changed is low risk, not docs only", [], "", RiskPolicy(), BLUE_GREEN, None,
     DeployPath("blue-green", (), 120.0, False), "no files changed"),
]


@pytest.mark.parametrize(("files", "diff", "policy", "env", "asked", "chosen", "why"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_path_of_a_change(files: list[str], diff: str, policy: RiskPolicy, env: DeployPath, asked: str | None,
                              chosen: DeployPath | None, why: str) -> None:
    route = decide(classify_risk(files, diff), policy, env, requested=asked)
    assert route.chosen == chosen
    assert why in route.summary(), route.summary()
    assert route.nothing == (NOTHING_TO_DO if chosen is None else None)
    data = route.event_data()
    assert data["requested"] == asked and data["risk"] == route.level and data["default"]["strategy"] == env.strategy
    forced = chosen is not None and chosen.approval and not env.approval
    assert (route.approval_reason is not None) == forced


def test_the_forced_approval_says_which_risk_asks_for_it() -> None:
    route = decide(classify_risk(MIGRATION), RiskPolicy(), BLUE_GREEN)
    assert route.approval_reason == ("high risk (database migration (backend/migrations/0002_add_email.sql)) asks "
                                     "for an approval (risk.high.approval)")
    assert route.summary().startswith("canary 5%→25%→50%→100%, watch 15m, approval first: database migration")
    assert route.event_data()["policy"] == {"strategy": "canary", "canary_steps": [5, 25, 50, 100],
                                            "watch": 900.0, "approval": True}


@pytest.mark.parametrize(("seconds", "shown"), [(900, "15m"), (120, "2m"), (90, "90s"), (5400, "1h30m"),
                                                (3600, "1h"), (0, "0s"), (7.5, "7.5s")])
def test_watches_read_as_people_write_them(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


BASE = """\
project: {name: shop}
deployment:
  services:
    - {name: api, path: ., port: 5001}
"""
REFUSED = [  # (the risk section, what the error says)
    ("risk:\n  high: {strategy: bluegreen}\n", "6: risk.high.strategy: `bluegreen` is not a strategy (did you mean "
                                              "`blue-green`?)"),
    ("risk:\n  high: {strategy: canary, canary_steps: [50, 25, 100]}\n", "is not a canary plan"),
    ("risk:\n  high: {strategy: canary, canary_steps: [5, 25]}\n", "that end at 100"),
    ("risk:\n  high: {strategy: canary, canary_steps: [0, 100]}\n", "between 1 and 100"),
    ("risk:\n  high: {strategy: canary, canary_steps: [5, 5, 100]}\n", "is not a canary plan"),
    ("risk:\n  low: {strategy: blue-green, canary_steps: [5, 100]}\n",
     "canary_steps act only with `strategy: canary` (this level's strategy is blue-green)"),
    ("risk:\n  medium: {canary_steps: [5, 100]}\n", "canary_steps act only with `strategy: canary`"),
    ("risk:\n  high: {watch: 13h}\n", "longer than the 43200s a watch may last; give at most 12h"),
    ("risk:\n  high: {watch: -5}\n", "is negative"),
    ("risk:\n  high: {watch: soon}\n", "`soon` is not a duration"),
    ("risk:\n  high: {approval: maybe}\n", "risk.high.approval"),
    ("risk:\n  high: {aproval: true}\n", "risk.high.aproval"),
    ("risk:\n  critical: {approval: true}\n", "risk.critical"),
    ("risk:\n  docs_only: never\n", "risk.docs_only"),
    ("risk: canary\n", "risk"),
]


@pytest.mark.parametrize(("section", "error"), REFUSED, ids=[r[1][:40] for r in REFUSED])
def test_a_risk_section_that_cannot_act_is_refused_with_its_line(section: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + section, filename="devops_orchestra.yaml")
    assert error in str(caught.value), str(caught.value)
    assert "devops_orchestra.yaml:" in str(caught.value)


def test_the_defaults_and_a_written_level_replacing_its_default_whole() -> None:
    config = parse_config(BASE + "risk:\n  high: {approval: true, watch: 30m}\n", filename="f.yaml")
    assert config.risk.high == RiskPath(approval=True, watch=1800.0)  # no canary: the level was written whole
    assert config.risk.low == RiskPath(strategy="blue-green", watch=120.0) and config.risk.medium == RiskPath()
    assert parse_config(BASE, filename="f.yaml").risk.high == RiskPath(
        strategy="canary", canary_steps=[5, 25, 50, 100], watch=900.0, approval=True)


def test_a_branch_cannot_soften_its_own_path() -> None:
    trusted = TrustedPolicy.of(parse_policy(BASE, filename="main:devops_orchestra.yaml", whole_file=False), "main")
    branch = parse_config(BASE + "risk:\n  docs_only: deploy\n  high: {approval: false}\n", filename="branch.yaml")
    governed = trusted.govern(branch)
    assert governed.risk == RiskPolicy() and governed.risk.high.approval
    assert "`risk` differs from the trusted policy's" in trusted.differences(branch)
    stricter = TrustedPolicy.of(parse_policy(BASE + "risk:\n  medium: {approval: true}\n", filename="main.yaml",
                                             whole_file=False), "main")
    assert stricter.govern(parse_config(BASE, filename="branch.yaml")).risk.medium.approval  # the trusted one acts
    with pytest.raises(ConfigError, match="risk.high.strategy"):  # a broken policy is an error, never defaults
        parse_policy(BASE + "risk:\n  high: {strategy: yolo}\n", filename="main.yaml", whole_file=False)


def test_the_deploy_and_observe_stages_take_the_runs_chosen_values(redis: Redis, settings: Settings,
                                                                    tmp_path: Path) -> None:
    config = parse_config(BASE + "observability: {watch: 30s}\n", filename="f.yaml")
    run = Run(requested_by="U0ALICE", repo=str(tmp_path), services=["api"], env="staging", strategy="canary",
              canary_steps=[5, 25, 50, 100], watch_s=900.0)
    ctx = AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=tmp_path,
                       config=config)
    plan = plan_for(ctx, "api", {"image": "shop-api:abc1234", "version": "abc1234"}, 0.0)
    assert plan.strategy == "canary" and plan.steps == [5, 25, 50, 100]
    assert policy_for(ctx).watch_s == 900.0
    plain = AgentContext(run=run.model_copy(update={"strategy": None, "canary_steps": None, "watch_s": None}),
                         settings=settings, redis=redis, bus=EventBus(redis), workspace=tmp_path, config=config)
    assert plan_for(plain, "api", {"image": "i", "version": "v"}, 0.0).steps == [10, 50, 100]
    assert policy_for(plain).watch_s == 30.0


def test_why_did_it_go_canary_is_answered_from_the_log(redis: Redis, settings: Settings) -> None:
    store, bus = RunStore(redis), EventBus(redis)
    run = store.create(Run(requested_by="U0ALICE", repo="shop", services=["api"], env="production"))
    route = decide(classify_risk(MIGRATION), RiskPolicy(), BLUE_GREEN, requested="blue-green")
    bus.emit(run.id, EventType.ROUTE_DECIDED, "agent", **route.event_data())
    later = store.create(Run(requested_by="U0BOB", repo="shop", services=["api"], env="production"))
    bus.emit(later.id, EventType.ROUTE_DECIDED, "agent",
             **decide(classify_risk(["api/app.py"]), RiskPolicy(), BLUE_GREEN).event_data())
    question = Intent(kind=IntentKind.EXPLAIN, strategy="canary", env="production", text="why did prod go canary?")
    got = answer(question, redis=redis, settings=settings)
    assert got.facts["run_id"] == run.id  # the newest run that went canary, not the newest run
    assert f"Run {run.id} (api to production, requested by U0ALICE" in got.text
    assert "went canary: canary 5%→25%→50%→100%, watch 15m, approval first" in got.text
    assert "no laxer than canary" in got.text and "blue-green was asked for." in got.text
    assert "high risk: database migration" in got.text
    nothing = answer(Intent(kind=IntentKind.EXPLAIN, strategy="canary", env="staging", text="why canary in staging?"),
                     redis=redis, settings=settings)
    assert "whose path was decided from its risk" in nothing.text


SLOW_CANARY = BASE.replace("deployment:\n", "deployment:\n  canary: {analysis_interval: 5m}\n")


def test_a_risk_canary_that_would_outlast_the_deploy_job_is_refused(redis: Redis, settings: Settings,
                                                                    tmp_path: Path) -> None:
    """3 steps of 5 minutes fit the deploy job; the default high path's 4 do not: the file is refused, and a
    branch that slows its canary under a trusted policy's high path fails its analyze stage, saying why."""
    with pytest.raises(ConfigError, match=r"deployment.canary.analysis_interval: the risk.high path's canary: "
                                          r"a canary of 4 steps may take 3600s.*at most 275s"):
        parse_config(SLOW_CANARY, filename="devops_orchestra.yaml")
    trusted = TrustedPolicy.of(parse_policy(BASE, filename="main.yaml", whole_file=False), "main")
    branch = parse_config(SLOW_CANARY + "risk:\n  high: {}\n", filename="branch.yaml")  # valid on its own
    run = RunStore(redis).create(Run(requested_by="U0ALICE", repo=str(tmp_path), services=["api"], env="staging"))
    ctx = AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=tmp_path,
                       config=trusted.govern(branch))
    with pytest.raises(StageFailed, match="the high-risk path cannot be deployed: a canary of 4 steps"):
        record(ctx, classify_risk(MIGRATION))
    assert RunStore(redis).get(run.id).canary_steps is None and not EventBus(redis).replay(run.id)


def test_the_thread_shows_the_path_and_why_the_approval_is_asked() -> None:
    from bot.slack import views
    from orchestra.events import Event

    route = decide(classify_risk(["backend/migrations/<!channel>.sql"]), RiskPolicy(), BLUE_GREEN,
                   requested="blue-green")
    line = views.milestone(Event(run_id="r-1", type=EventType.ROUTE_DECIDED, actor="analyze", data=route.event_data()))
    assert line is not None and line.startswith(":twisted_rightwards_arrows: Path: canary 5%→25%→50%→100%, watch 15m")
    assert "&lt;!channel&gt;" in line and "<!channel>" not in line  # a file name is not markup
    run = Run(requested_by="U0CAROL", repo="shop", services=["backend"], env="staging")
    asked = Event(run_id=run.id, type=EventType.APPROVAL_REQUESTED, actor="orchestra", data={
        "stage": "deploy", "approvers": ["U0BOB"], "deadline": 2_000_000_000, "message": route.approval_reason})
    text, _ = views.approval(run, asked)
    assert text.endswith("&lt;!channel&gt;.sql)) asks for an approval (risk.high.approval)")


def test_an_operators_policy_file_may_hold_risk() -> None:
    policy = parse_policy("risk:\n  medium: {approval: true}\n", filename="/etc/orchestra/policy.yaml")
    assert policy.risk.medium.approval and policy.risk.high == RiskPolicy().high
    with pytest.raises(ConfigError, match="holds only `environments`, `identities` and `risk`"):
        parse_policy("deployment: {}\n", filename="/etc/orchestra/policy.yaml")
