"""The broker-independent steps of the ``settle_and_receive`` tests (Redis, PostgreSQL).

Each broker's test file has its own ``pair`` fixture (a broker and the result store it
carries) and its own checks of how the call reaches the server (one Redis script, one
PostgreSQL ``Sync``); the scenarios themselves and their expected outcomes are here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celeriac.messages import task_message

#: what settle_and_receive returns: (results written, messages acknowledged, new leases)
Outcome = tuple[list[bool], int, list[Any]]


def meta(task_id: str, status: str = "SUCCESS") -> dict[str, Any]:
    return {"status": status, "result": 1, "traceback": None, "children": [],
            "date_done": "2026-11-30T13:00:00+00:00", "task_id": task_id}


def results_of(delivered: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(d.message.task_id or "", meta(d.message.task_id or "")) for d in delivered]


def settle_two_and_lease_two(broker: Any, store: Any,
                             settle: Callable[[list[Any]], Outcome] | None = None) -> None:
    """Four messages, two leased; one of those two already REVOKED in the store. One
    call (``settle(first)``, default a plain ``settle_and_receive``) writes the other
    one's result, acknowledges both and leases the remaining two; the same
    acknowledgements again are fenced."""
    assert broker.carries(store)
    for n in range(4):
        broker.publish(task_message("t.x", f"task-{n}", (n,)), "q")
    first = broker.receive(["q"], owner="w", limit=2, timeout=1)
    store.set("task-1", meta("task-1", "REVOKED"))
    written, done, more = (settle or (lambda got: broker.settle_and_receive(
        store, results_of(got), 60, got, ["q"], owner="w", limit=5)))(first)
    assert written == [True, False]  # REVOKED stays
    assert done == 2 and [d.message.task_id for d in more] == ["task-2", "task-3"]
    assert store.get("task-0")["status"] == "SUCCESS"
    assert store.get("task-1")["status"] == "REVOKED"
    assert broker.stats("q").leased == 2
    again = broker.settle_and_receive(store, [("task-2", meta("task-2"))], 60, first, ["q"],
                                      owner="w", limit=5)
    assert again == ([True], 0, [])  # the first two were acknowledged already: fenced


def one_leased_one_waiting(broker: Any) -> Any:
    """task-0 leased to ``w``, task-1 ready: the set-up of the failure tests."""
    broker.publish(task_message("t.x", "task-0", (0,)), "q")
    [delivery] = broker.receive(["q"], owner="w", timeout=1)
    broker.publish(task_message("t.x", "task-1", (1,)), "q")
    return delivery


def nothing_settled(broker: Any) -> None:
    """After a failed call: task-0 still leased (it runs again, never lost), task-1, leased
    or not in the same trip, ready."""
    stats = broker.stats("q")
    assert stats.leased == 1 and stats.ready == 1


def settles_after_the_failure(broker: Any, store: Any, delivery: Any) -> None:
    """The same call, once the cause is gone, does it all."""
    written, done, got = broker.settle_and_receive(store, [("task-0", meta("task-0"))], 60,
                                                   [delivery], ["q"], owner="w")
    assert (written, done, [d.message.task_id for d in got]) == ([True], 1, ["task-1"])
    assert store.get("task-0")["status"] == "SUCCESS"


def store_elsewhere_takes_the_interface_steps(broker: Any, store: Any) -> None:
    """A result store the broker does not carry: written, then acknowledged, then leased
    through the broker and store interfaces."""
    assert not broker.carries(store)
    broker.publish(task_message("t.x", "task-0", (0,)), "q")
    [delivery] = broker.receive(["q"], owner="w", timeout=1)
    assert broker.settle_and_receive(store, [("task-0", meta("task-0"))], None, [delivery],
                                     ["q"], owner="w") == ([True], 1, [])
    assert store.get("task-0") == meta("task-0")
    assert broker.stats("q").leased == 0
