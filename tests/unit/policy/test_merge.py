"""Resolution and merge: which policies apply to a request, and the one effective policy they make."""

import random
import textwrap
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import PolicyViolation
from gateway.policy import loader
from gateway.policy.compiled import PolicySet
from gateway.policy.engine import Decision, check_input

TEAMS = ["finance", "dev", "ops"]
KEYS = ["k1", "k2"]
TAGS = ["dev", "ci"]
MODELS = ["gpt-4o", "gpt-4o-mini", "llama-3"]
ROUTES = ["chat/completions", "embeddings"]


def load(tmp_path: Path, files: dict[str, str]) -> PolicySet:
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return loader.load(tmp_path)


def decide(policies: PolicySet, team: str, model: str, body_extra: dict | None = None) -> list[Decision]:
    effective = policies.resolve(team, "k1", (), model, "chat/completions")
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **(body_extra or {})}
    decisions: list[Decision] = []
    try:
        check_input(effective, "chat/completions", body, {}, "openai", decisions)
    except PolicyViolation:
        pass
    return decisions


LAYERED = {
    "global.yaml": """\
        policies:
          - name: global
            rules:
              - {name: cap, kind: max_tokens, limit: 1000}
              - {name: models, kind: models, allow: ["gpt-*"]}
        """,
    "team.yaml": """\
        policies:
          - name: finance
            match: {teams: [finance]}
            rules:
              - {name: cap, kind: max_tokens, limit: 100}
              - {name: models, kind: models, allow: ["gpt-4o*", "llama-*"], deny: ["gpt-4o-mini"]}
        """,
}


def test_the_stricter_limit_wins_whatever_the_layer(tmp_path: Path) -> None:
    policies = load(tmp_path, LAYERED)
    assert [d.name for d in decide(policies, "finance", "gpt-4o", {"max_tokens": 500})] == ["finance/cap"]
    assert decide(policies, "ops", "gpt-4o", {"max_tokens": 500}) == []


def test_an_explicit_deny_beats_any_allow(tmp_path: Path) -> None:
    policies = load(tmp_path, LAYERED)
    assert [d.name for d in decide(policies, "finance", "gpt-4o-mini")] == ["finance/models"]
    assert decide(policies, "ops", "gpt-4o-mini") == []


def test_allow_lists_intersect(tmp_path: Path) -> None:
    policies = load(tmp_path, LAYERED)
    # llama is allowed by finance but not by the global allow list
    assert [d.name for d in decide(policies, "finance", "llama-3")] == ["global/models"]


def test_layers_are_ordered_global_team_key(tmp_path: Path) -> None:
    policies = load(
        tmp_path,
        {
            "a.yaml": "policies:\n  - {name: a-key, match: {keys: [k1]}, rules: []}\n",
            "b.yaml": "policies:\n  - {name: b-team, match: {teams: [finance]}, rules: []}\n",
            "c.yaml": "policies:\n  - {name: c-global, rules: []}\n",
        },
    )
    effective = policies.resolve("finance", "k1", (), "gpt-4o", "chat/completions")
    assert effective.policies == ("c-global", "b-team", "a-key")


def test_shadow_mode_turns_every_rule_into_a_record(tmp_path: Path) -> None:
    text = "policies:\n  - name: s\n    mode: shadow\n    rules:\n      - {name: c, kind: max_tokens, limit: 10}\n"
    policies = load(tmp_path, {"s.yaml": text})
    [decision] = decide(policies, "ops", "gpt-4o", {"max_tokens": 50})
    assert decision.action == "shadow" and decision.name == "s/c"


def test_the_effective_policy_is_cached_per_revision(tmp_path: Path) -> None:
    policies = load(tmp_path, LAYERED)
    first = policies.resolve("finance", "k1", (), "gpt-4o", "chat/completions")
    assert policies.resolve("finance", "k1", (), "gpt-4o", "chat/completions") is first


# A random policy set, written to files in a random order under random names, resolves every request to the
# same single effective policy.
match_fields = st.fixed_dictionaries(
    {},
    optional={
        "teams": st.lists(st.sampled_from(TEAMS), min_size=1, max_size=2, unique=True),
        "keys": st.lists(st.sampled_from(KEYS), min_size=1, max_size=2, unique=True),
        "key_tags": st.lists(st.sampled_from(TAGS), min_size=1, max_size=2, unique=True),
        "models": st.lists(st.sampled_from(["gpt-*", "llama-3", "*-mini"]), min_size=1, max_size=2, unique=True),
        "routes": st.lists(st.sampled_from(ROUTES), min_size=1, max_size=2, unique=True),
    },
)
rules = st.lists(
    st.one_of(
        st.builds(lambda n: {"kind": "max_tokens", "limit": n}, st.integers(1, 2000)),
        st.builds(lambda d: {"kind": "models", "deny": d}, st.lists(st.sampled_from(MODELS), max_size=2)),
        st.builds(lambda t: {"kind": "terms", "terms": t}, st.lists(st.sampled_from(["alpha", "beta"]), min_size=1)),
    ),
    max_size=3,
)
policy_sets = st.lists(st.tuples(match_fields, rules, st.sampled_from(["enforce", "shadow"])), min_size=1, max_size=6)
requests = st.tuples(
    st.sampled_from(TEAMS),
    st.sampled_from(KEYS),
    st.lists(st.sampled_from(TAGS), max_size=2, unique=True).map(tuple),
    st.sampled_from(MODELS),
    st.sampled_from(ROUTES),
)


def write_set(directory: Path, specs: list, seed: int) -> PolicySet:
    import yaml

    order = list(range(len(specs)))
    random.Random(seed).shuffle(order)
    for position, index in enumerate(order):
        match, policy_rules, mode = specs[index]
        policy = {
            "name": f"p{index}",
            "mode": mode,
            "match": match,
            "rules": [{"name": f"r{n}", **rule} for n, rule in enumerate(policy_rules)],
        }
        (directory / f"{seed}-{position:02d}.yaml").write_text(yaml.safe_dump({"policies": [policy]}))
    return loader.load(directory)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=policy_sets, request=requests, seed=st.integers(0, 1000))
def test_any_policy_set_resolves_a_request_to_one_policy_whatever_the_file_order(
    tmp_path_factory, specs, request, seed
) -> None:
    first = write_set(tmp_path_factory.mktemp("a"), specs, seed)
    second = write_set(tmp_path_factory.mktemp("b"), specs, seed + 1)
    one, other = first.resolve(*request), second.resolve(*request)
    assert one.policies == other.policies
    assert [(r.policy, r.rule, r.action) for r in one.input_text] == [
        (r.policy, r.rule, r.action) for r in other.input_text
    ]
    assert [(ref, rule) for ref, rule in one.max_tokens] == [(ref, rule) for ref, rule in other.max_tokens]
    assert [(ref, rule) for ref, rule in one.models] == [(ref, rule) for ref, rule in other.models]
    # exactly the policies whose match fits, each once
    team, key, tags, model, route = request
    expected = {f"p{i}" for i, (match, _, _) in enumerate(specs) if _fits(match, team, key, tags, model, route)}
    assert sorted(one.policies) == sorted(expected) and len(set(one.policies)) == len(one.policies)


def _fits(match: dict, team: str, key: str, tags: tuple, model: str, route: str) -> bool:
    import fnmatch

    return (
        ("teams" not in match or team in match["teams"])
        and ("keys" not in match or key in match["keys"])
        and ("key_tags" not in match or any(t in match["key_tags"] for t in tags))
        and ("models" not in match or any(fnmatch.fnmatchcase(model, g) for g in match["models"]))
        and ("routes" not in match or route in match["routes"])
    )
