"""``settle_and_receive`` on PostgreSQL: a batch's results, its acknowledgements and the
next lease in one round trip and one transaction, when the result store is the broker's
database and schema.

The round trip is counted on the wire (libpq's protocol trace: one ``Sync``, one
``ReadyForQuery``). Atomicity is shown with triggers that make one of the two
statements fail: then neither the results nor the acknowledgements nor the lease
happened, and the same call succeeds once the trigger is gone.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from needs import need
from settling import (
    meta,
    nothing_settled,
    one_leased_one_waiting,
    results_of,
    settle_two_and_lease_two,
    settles_after_the_failure,
    store_elsewhere_takes_the_interface_steps,
)

psycopg = need("psycopg")

pytestmark = pytest.mark.postgres
BASE = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pair(postgres_url: str) -> Any:
    from celeriac.brokers.postgres.broker import PostgresBroker
    from celeriac.brokers.postgres.results import PostgresResultStore

    url = f"{postgres_url}&pool_size=1"  # one connection: the one the trace watches
    broker, store = PostgresBroker(url, lease_seconds=30), PostgresResultStore(url)
    yield broker, store
    store.close()
    broker.close()


def test_results_acks_and_the_next_lease_in_one_round_trip(pair: Any) -> None:
    broker, store = pair
    sent: list[str] = []
    replies: list[str] = []

    def traced(first: list[Any]) -> Any:
        with tempfile.TemporaryDirectory() as tmp:
            trace = Path(tmp) / "trace"
            with open(trace, "w") as out:
                with broker.db.connection() as conn:
                    conn.pgconn.trace(out.fileno())
                    conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
                outcome = broker.settle_and_receive(store, results_of(first), 60, first,
                                                    ["q"], owner="w", limit=5)
                with broker.db.connection() as conn:
                    conn.pgconn.untrace()
            lines = [line.split("\t") for line in trace.read_text().splitlines()]
        sent.extend(fields[2] for fields in lines if len(fields) > 2 and fields[0] == "F")
        replies.extend(fields[2] for fields in lines if len(fields) > 2 and fields[0] == "B")
        return outcome

    settle_two_and_lease_two(broker, store, traced)
    assert sent.count("Sync") == 1 and replies.count("ReadyForQuery") == 1, sent
    assert sent.count("Execute") == 2  # result_write, ack_and_lease: no BEGIN, no COMMIT


@pytest.mark.parametrize("failing", ["results", "messages"])
def test_results_and_acknowledgements_commit_together_or_not_at_all(
        pair: Any, pg_schema: str, failing: str) -> None:
    broker, store = pair
    delivery = one_leased_one_waiting(broker)
    event = "INSERT" if failing == "results" else "DELETE"
    with psycopg.connect(BASE, autocommit=True) as conn:
        conn.execute(f"CREATE FUNCTION {pg_schema}.refuse() RETURNS trigger LANGUAGE plpgsql "
                     "AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$")
        conn.execute(f"CREATE TRIGGER refuse BEFORE {event} ON {pg_schema}.{failing} "
                     f"FOR EACH ROW EXECUTE FUNCTION {pg_schema}.refuse()")
        with pytest.raises(psycopg.Error, match="refused"):
            broker.settle_and_receive(store, [("task-0", meta("task-0"))], 60, [delivery],
                                      ["q"], owner="w")
        assert store.get("task-0") is None  # no result, no acknowledgement, no lease
        nothing_settled(broker)
        conn.execute(f"DROP TRIGGER refuse ON {pg_schema}.{failing}")
    settles_after_the_failure(broker, store, delivery)


def test_a_store_in_another_schema_takes_the_interface_steps(
        pair: Any, postgres_url_module: str) -> None:
    from celeriac.brokers.postgres.results import PostgresResultStore

    broker, _ = pair
    store = PostgresResultStore(postgres_url_module)  # same database, another schema
    try:
        store_elsewhere_takes_the_interface_steps(broker, store)
    finally:
        store.close()


def test_a_worker_drain_batches_and_settles_each_turn_in_one_pipeline(
        postgres_url: str) -> None:
    """An in-process consumer with the default (adaptive) prefetch drains no-ops: it
    leases in batches, and every turn that stores results sends ``result_write`` and
    ``ack_and_lease`` together in one pipeline; no result is stored, and no
    acknowledgement sent, in a round trip of its own on the consumer's thread."""
    import threading
    import time

    from celeriac import Celery
    from celeriac.worker.consumer import Consumer
    from celeriac.worker.pools import SoloPool
    from celeriac.worker.prefetch import PrefetchRule

    app = Celery("pgtrips", broker=postgres_url, backend=postgres_url, set_as_current=False)

    @app.task(name="pgtrips.noop")
    def noop(i: int) -> int:
        return i

    results = [noop.delay(i) for i in range(300)]
    names = {text: name for name, text in app.broker.db.sql.items()}
    log: list[tuple[int | None, str, bool]] = []  # (thread, statement, in a pipeline)
    real_execute = psycopg.Connection.execute

    def execute(self: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
        piped = self.pgconn.pipeline_status != psycopg.pq.PipelineStatus.OFF
        name = names.get(query, "other") if isinstance(query, str) else "other"
        log.append((threading.get_ident(), name, piped))
        return real_execute(self, query, params, **kwargs)

    consumer = Consumer(app, ["celery"], SoloPool(), poll_timeout=0.05,
                        prefetch=PrefetchRule(1, budget=float(app.conf.worker_prefetch_budget)))
    psycopg.Connection.execute = execute  # type: ignore[method-assign]
    try:
        thread = threading.Thread(target=consumer.run)
        thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
                all(r.ready() for r in results) and app.broker.stats("celery").leased == 0):
            time.sleep(0.02)
        consumer.stop()
        thread.join(10)
    finally:
        psycopg.Connection.execute = real_execute  # type: ignore[method-assign]
    try:
        assert [r.get(timeout=1) for r in results] == list(range(300))
        mine = [(name, piped) for ident, name, piped in log if ident == thread.ident]
        writes = [i for i, (name, _) in enumerate(mine) if name == "result_write"]
        assert writes, mine
        for i in writes:  # each with the acknowledgements and the lease, in one pipeline
            assert mine[i][1] and mine[i + 1] == ("ack_and_lease", True), mine[i:i + 2]
        assert ("result_set", False) not in mine and ("result_write", False) not in mine
        assert [name for name, _ in mine[:-1]].count("ack") == 0  # (the last: shutdown)
        assert consumer.prefetch.largest > 8  # the adaptive rule batches on PostgreSQL
        # statements of the loop, not per task (a result and an ack each would be 600);
        # how many turns the drain takes depends on the machine's load
        assert len(mine) < 300
    finally:
        app.close()


def test_psycopg_pipeline_cleanup_after_a_lost_connection_is_not_logged_twice(
        caplog: pytest.LogCaptureFixture) -> None:
    """When a pipeline block raised (the connection was lost), psycopg's second line
    about terminating the pipeline is dropped: the worker reports the outage once.
    psycopg's other warnings still reach the log."""
    import logging

    from celeriac.brokers.postgres import settling  # noqa: F401  (installs the filter)

    class Pipeline:
        def __repr__(self) -> str:
            return "<psycopg.Pipeline [BAD]>"

    caplog.set_level(logging.WARNING, "psycopg")
    log = logging.getLogger("psycopg")
    log.warning("error ignored terminating %r: %s", Pipeline(), "the connection is lost")
    log.warning("error ignored terminating %r: %s", object(), "a Copy, not a pipeline")
    log.warning("some other psycopg warning")
    texts = [r.getMessage() for r in caplog.records]
    assert not any("Pipeline" in t for t in texts), texts
    assert len(texts) == 2, texts
