"""The policy index: CRUD, precedence, matching, thread safety, and 1,000 policies."""

from __future__ import annotations

import random
import threading

from controller.decision import select_policy
from controller.decision.policy_index import PolicyIndex, precedence_key
from controller.schemas.alerts import Alert, AlertEvent
from controller.schemas.policy import Policy, PolicySpec


def make(namespace: str, name: str, priority: int = 0, generation: int = 1, **match: object) -> Policy:
    spec = PolicySpec.model_validate(
        {"priority": priority, "match": match, "allowedFunctions": ["pod-restart"], "chain": [{"staticAnnotation": {}}]}
    )
    return Policy(namespace=namespace, name=name, generation=generation, spec=spec)


def alert(**labels: str) -> AlertEvent:
    labels.setdefault("alertname", "KubePodCrashLooping")
    return AlertEvent(alert=Alert(status="firing", labels=labels, startsAt="2026-05-01T10:00:00Z"))


def keys(policies: list[Policy]) -> list[str]:
    return [p.key for p in policies]


def test_upsert_get_remove_and_len() -> None:
    index = PolicyIndex()
    assert len(index) == 0 and index.get("a/b") is None
    index.upsert(make("a", "b"))
    index.upsert(make("a", "c"))
    assert len(index) == 2
    assert index.get("a/b") == make("a", "b")
    index.upsert(make("a", "b", generation=2, priority=5))
    assert len(index) == 2 and index.get("a/b").generation == 2
    index.remove("a/b")
    index.remove("a/b")  # deletes may repeat
    index.remove("never/there")
    assert keys(index.all()) == ["a/c"]


def test_version_bumps_on_changes_only() -> None:
    index = PolicyIndex()
    start = index.version
    index.upsert(make("a", "b"))
    assert index.version == start + 1
    index.upsert(make("a", "b"))  # identical: not a change
    assert index.version == start + 1
    index.upsert(make("a", "b", generation=2))
    index.remove("a/b")
    index.remove("a/b")
    assert index.version == start + 3


def test_precedence_is_priority_then_specificity_then_key() -> None:
    index = PolicyIndex()
    for policy in [
        make("z", "generic"),
        make("a", "generic"),
        make("m", "by-name", alertNames=["KubePodCrashLooping"]),
        make(
            "m",
            "by-name-and-ns",
            alertNames=["KubePodCrashLooping"],
            matchers=[{"label": "namespace", "value": "shop"}],
        ),
        make("b", "urgent", priority=10),
        make("c", "demoted", priority=-5, alertNames=["KubePodCrashLooping"], severities=["warning"]),
        make("x", "other-alert", priority=100, alertNames=["Watchdog"]),
        make("y", "other-ns", priority=50, matchers=[{"label": "namespace", "value": "web"}]),
    ]:
        index.upsert(policy)
    ordered = keys(index.matching(alert(namespace="shop", severity="warning")))
    assert ordered == ["b/urgent", "m/by-name-and-ns", "m/by-name", "a/generic", "z/generic", "c/demoted"]
    assert select_policy(alert(namespace="shop", severity="warning"), index).key == "b/urgent"


def test_all_is_in_precedence_order_and_independent_of_insertion_order() -> None:
    policies = [make(f"ns{i % 7}", f"p{i}", priority=i % 3, alertNames=["A"] * (i % 2)) for i in range(40)]
    orders = []
    for seed in range(3):
        shuffled = policies[:]
        random.Random(seed).shuffle(shuffled)
        index = PolicyIndex()
        for policy in shuffled:
            index.upsert(policy)
        orders.append(keys(index.all()))
    assert orders[0] == orders[1] == orders[2] == keys(sorted(policies, key=precedence_key))


def test_no_match_means_no_policy() -> None:
    index = PolicyIndex()
    assert select_policy(alert(), index) is None
    index.upsert(make("a", "b", alertNames=["Watchdog"]))
    assert index.matching(alert()) == []
    assert select_policy(alert(), index) is None


def test_named_and_unnamed_policies_merge_in_order() -> None:
    index = PolicyIndex()
    index.upsert(make("a", "regex", priority=3, alertNameRegex="Kube.*"))
    index.upsert(make("b", "named", priority=2, alertNames=["KubePodCrashLooping", "KubePodNotReady"]))
    index.upsert(make("c", "any", priority=1))
    assert keys(index.matching(alert())) == ["a/regex", "b/named", "c/any"]
    assert keys(index.matching(alert(alertname="KubePodNotReady"))) == ["a/regex", "b/named", "c/any"]
    assert keys(index.matching(alert(alertname="Other"))) == ["c/any"]
    index.remove("a/regex")
    assert keys(index.matching(alert())) == ["b/named", "c/any"]


def test_a_thousand_policies_match_like_a_linear_scan() -> None:
    rng = random.Random(7)
    names = [f"Alert{i}" for i in range(50)]
    policies = []
    for i in range(1000):
        kind = i % 4
        match: dict[str, object] = {}
        if kind == 0:
            match["alertNames"] = rng.sample(names, 2)
        elif kind == 1:
            match["alertNameRegex"] = f"Alert{rng.randrange(5)}.*"
        elif kind == 2:
            match["matchers"] = [
                {"label": "namespace", "op": "=~", "value": f"ns{rng.randrange(10)}|ns{rng.randrange(10)}"}
            ]
        policies.append(make(f"ns{i % 13}", f"p{i:04d}", priority=rng.randrange(-3, 4), **match))
    index = PolicyIndex()
    for policy in policies:
        index.upsert(policy)
    assert len(index) == 1000
    ordered = sorted(policies, key=precedence_key)
    from controller.decision.matching import alert_matches

    for _ in range(100):
        event = alert(alertname=rng.choice(names), namespace=f"ns{rng.randrange(12)}")
        expected = [p.key for p in ordered if alert_matches(p.spec.match, event.alert.labels)]
        assert keys(index.matching(event)) == expected


def test_concurrent_writers_and_readers_see_consistent_snapshots() -> None:
    index = PolicyIndex()
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(offset: int) -> None:
        try:
            for i in range(300):
                index.upsert(make("w", f"p{offset}-{i % 30}", priority=i % 5))
                if i % 3 == 0:
                    index.remove(f"w/p{offset}-{(i + 7) % 30}")
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    def reader() -> None:
        try:
            while not stop.is_set():
                found = index.matching(alert())
                assert found == sorted(found, key=precedence_key)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in readers:
        thread.join()
    assert not errors
    assert keys(index.all()) == keys(sorted(index.all(), key=precedence_key))
    assert len(index) == len(index.all())


def test_a_tenant_policy_acts_only_on_its_own_namespace() -> None:
    # Issue #13.10: with a system namespace, a policy elsewhere is confined to its own namespace.
    index = PolicyIndex(system_namespace="trm-sre")
    wide = make("team-a", "grab-all", priority=1000, alertNames=["KubePodCrashLooping"])
    wide = wide.model_copy(update={"spec": wide.spec.model_copy(update={"target_namespaces": ("*",)})})
    system = make("trm-sre", "cluster", alertNames=["KubePodCrashLooping"])
    index.upsert(wide)
    index.upsert(system)
    assert keys(index.matching(alert(namespace="kube-system"))) == ["trm-sre/cluster"]
    assert keys(index.matching(alert(namespace="kube-system\n"))) == ["trm-sre/cluster"]
    assert keys(index.matching(alert())) == ["trm-sre/cluster"]  # no namespace label: not a tenant's alert
    assert keys(index.matching(alert(namespace="team-a"))) == ["team-a/grab-all", "trm-sre/cluster"]
    confined = index.get("team-a/grab-all")
    assert confined is not None
    assert confined.allows_namespace("team-a") and not confined.allows_namespace("kube-system")
    # Without a system namespace (library use), nothing changes.
    open_index = PolicyIndex()
    open_index.upsert(wide)
    assert keys(open_index.matching(alert(namespace="kube-system"))) == ["team-a/grab-all"]
