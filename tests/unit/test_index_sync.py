"""IndexSync: cluster-mode readiness waits until the operator has handled every policy listed (fake lister).

The same against a real apiserver, with the whole controller: tests/operator/test_rp_readiness_envtest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Collection
from pathlib import Path

import pytest

from controller.app import Readiness
from controller.decision.policy_index import PolicyIndex
from controller.engine.model_loader import ModelState
from controller.operator.readiness import IndexSync, KubernetesPolicyLister, PolicyId, PolicyListError


class Lister:
    """Answers from a script: each call takes the next answer (the last one repeats); an exception is raised."""

    def __init__(self, *answers: Collection[PolicyId] | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self) -> Collection[PolicyId]:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


async def until(check: Callable[[], object], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def started_sync(lister: Lister) -> tuple[IndexSync, asyncio.Task[None]]:
    sync = IndexSync(lister, relist_s=0.05, poll_s=0.01)
    started = asyncio.Event()
    task = asyncio.create_task(sync.run(started))
    await asyncio.sleep(0.02)
    assert sync.problem() == "the operator has not started watching RemediationPolicies yet"
    assert lister.calls == 0  # nothing is listed before kopf has started
    started.set()
    return sync, task


async def test_complete_only_once_every_listed_policy_was_handled() -> None:
    sync, task = await started_sync(Lister({("ns/a", "u1"), ("ns/b", "u2"), ("ns/c", "u3")}))
    sync.seen("ns/a", "u1")
    sync.seen("ns/c", "u3")
    await until(lambda: "ns/b" in (sync.problem() or ""))
    problem = sync.problem() or ""
    assert "1 of the 3 RemediationPolicies" in problem and "ns/a" not in problem
    await asyncio.sleep(0.2)  # several re-lists: still waiting
    assert not sync.complete and not task.done()
    sync.seen("ns/b", "u2")
    await asyncio.wait_for(task, 5)
    assert sync.complete and sync.problem() is None
    sync.seen("ns/d", "u4")  # after completion nothing is remembered
    assert sync.missing([("ns/d", "u4")]) == []


async def test_an_empty_cluster_is_complete_at_once() -> None:
    sync, task = await started_sync(Lister(set()))
    await asyncio.wait_for(task, 5)
    assert sync.problem() is None


async def test_another_incarnation_of_the_same_name_does_not_count() -> None:
    sync, task = await started_sync(Lister({("ns/a", "new")}))
    sync.seen("ns/a", "old")  # deleted and created again: the new one is not handled yet
    await asyncio.sleep(0.2)
    assert not task.done() and "ns/a" in (sync.problem() or "")
    sync.seen("ns/a", "new")
    await asyncio.wait_for(task, 5)


async def test_a_policy_deleted_meanwhile_is_dropped_by_the_next_list() -> None:
    lister = Lister({("ns/a", "u1"), ("ns/gone", "u2")}, {("ns/a", "u1")})
    sync, task = await started_sync(lister)
    sync.seen("ns/a", "u1")  # "ns/gone" is never handled (its DELETED event was lost)
    await asyncio.wait_for(task, 5)
    assert lister.calls >= 2


async def test_a_failing_list_keeps_it_not_ready_with_the_reason_until_it_works() -> None:
    lister = Lister(*[PolicyListError("the apiserver cannot be reached: connection refused")] * 5, set())
    sync, task = await started_sync(lister)
    await until(lambda: "cannot list" in (sync.problem() or ""))
    assert "the apiserver cannot be reached: connection refused" in (sync.problem() or "")
    assert not sync.complete
    await asyncio.wait_for(task, 5)  # the apiserver came back
    assert sync.problem() is None and lister.calls == 6


async def test_an_unexpected_error_is_a_reason_not_a_crash() -> None:
    sync, task = await started_sync(Lister(KeyError("items"), KeyError("items")))
    await until(lambda: "KeyError" in (sync.problem() or ""))
    assert not task.done() and not sync.complete
    await cancel(task)


async def test_readiness_in_cluster_mode_reports_the_sync() -> None:
    sync = IndexSync(Lister(PolicyListError("403 Forbidden")), relist_s=0.05, poll_s=0.01)
    readiness = Readiness(
        standalone=False, index=PolicyIndex(), model=ModelState(None, "disabled", "tests"), index_sync=sync
    )
    assert readiness() == ["the operator has not started watching RemediationPolicies yet"]
    readiness.operator_started.set()
    task = asyncio.create_task(sync.run(readiness.operator_started))
    await until(lambda: any("403 Forbidden" in r for r in readiness()))
    assert len(readiness()) == 1
    await cancel(task)


def test_the_lister_names_an_unreachable_apiserver(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}', insecure-skip-tls-verify: true}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    lister = KubernetesPolicyLister(["ns"], timeout_s=2, kubeconfig=str(kubeconfig))
    with pytest.raises(PolicyListError, match="the apiserver cannot be reached"):
        lister()
