"""``task_queues`` on RabbitMQ: kombu ``Queue`` objects declare exchanges (direct, topic,
fanout), bindings and queue arguments, messages go through the queue's exchange as kombu
sends them, and a queue with its own ``x-dead-letter-exchange`` dead-letters through
RabbitMQ (``x-death``) instead of ``celeriac.dead.<queue>``.

kombu (a test dependency) builds the ``Queue`` objects; celeriac reads them duck-typed.
Each test has a vhost of its own (``rabbitmq_url``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import pytest

pytest.importorskip("amqp")
pytest.importorskip("kombu")

import amqp
import kombu
from kombu import Exchange, Queue

from celeriac.brokers.amqp.broker import AMQPBroker
from celeriac.brokers.memory.broker import MemoryBroker
from celeriac.messages import Message, task_message

Maker = Callable[..., AMQPBroker]
QUEUES = ("fan-a", "fan-b", "sports", "all-news", "work", "work-dead", "plain", "k-topic",
          "k-quorum", "r-sports", "r-all-news", "r-weather")
EXCHANGES = ("broadcast-fan", "news-topic", "work-dlx", "work", "plain", "k-ex", "k-q",
             "routes-topic")


def message(n: int) -> Message:
    return task_message("tests.add", f"task-{n}", (n,), {})


@pytest.fixture
def make(amqp_brokers: Callable[..., AMQPBroker]) -> Maker:
    return lambda task_queues: amqp_brokers(task_queues=task_queues)


@pytest.fixture
def raw(rabbitmq_channel: Callable[..., amqp.Channel]) -> amqp.Channel:
    """A plain py-amqp channel on the test's vhost, to look at what RabbitMQ holds."""
    return rabbitmq_channel(queues=QUEUES, exchanges=EXCHANGES)


def depth(raw: amqp.Channel, queue: str, want: int) -> int:
    """Ready messages in ``queue`` once it holds ``want`` (RabbitMQ counts a moment late)."""
    for _ in range(50):
        ready = int(raw.queue_declare(queue, passive=True)[1])
        if ready >= want:
            return ready
        time.sleep(0.1)
    return ready


def drain(broker: AMQPBroker, queue: str, want: int) -> list[str]:
    got: list[str] = []
    for _ in range(10):
        for d in broker.receive([queue], owner="w", limit=want, timeout=1.0):
            got.append(d.message.task_id)
            broker.ack([d])
        if len(got) >= want:
            break
    return sorted(got)


def test_fanout_reaches_every_bound_queue(make: Maker, raw: amqp.Channel) -> None:
    fan = Exchange("broadcast-fan", type="fanout")
    broker = make([Queue("fan-a", fan), Queue("fan-b", fan)])
    assert broker.receive(["fan-a", "fan-b"], owner="w", timeout=0.2) == []  # declares both
    broker.publish(message(1), "fan-a")
    assert drain(broker, "fan-a", 1) == ["task-1"]
    assert drain(broker, "fan-b", 1) == ["task-1"]


def test_topic_routes_by_pattern_as_kombu(make: Maker, raw: amqp.Channel) -> None:
    topic = Exchange("news-topic", type="topic")
    queues = [Queue("sports", topic, routing_key="news.sports.*"),
              Queue("all-news", topic, routing_key="news.#")]
    consumer = make(queues)
    assert consumer.receive(["sports", "all-news"], owner="w", timeout=0.2) == []  # declares
    consumer.close()  # nothing consumes now: RabbitMQ's counts show where messages went
    make(queues).publish(message(1), "all-news")  # routing key "news.#": all-news only
    raw.basic_publish(amqp.Message(b"x"), exchange="news-topic",
                      routing_key="news.sports.tennis")  # a kombu producer's own key
    assert depth(raw, "all-news", 2) == 2
    assert depth(raw, "sports", 1) == 1
    assert raw.exchange_declare("news-topic", "topic", durable=True, auto_delete=False,
                                passive=True) is None


def test_a_user_dead_letter_exchange_receives_rejected_messages(
        make: Maker, raw: amqp.Channel) -> None:
    dlx = Exchange("work-dlx", type="direct")
    work = Queue("work", Exchange("work"), routing_key="work",
                 queue_arguments={"x-dead-letter-exchange": "work-dlx",
                                  "x-dead-letter-routing-key": "work.dead"})
    queues = [work, Queue("work-dead", dlx, routing_key="work.dead"), Queue("plain")]
    declarer = make(queues)
    assert declarer.receive(["work-dead"], owner="w", timeout=0.2) == []  # declares the DLQ
    declarer.close()
    broker = make(queues)
    broker.publish(message(1), "work")
    got = broker.receive(["work"], owner="w", timeout=5.0)
    assert len(got) == 1
    assert broker.dead_letter(got[0], "rejected: Reject(requeue=False)")
    broker.receive(["work"], owner="w", timeout=0.2)  # flushes the reject
    for _ in range(50):
        dead = raw.basic_get("work-dead", no_ack=True)
        if dead is not None:
            break
        broker.receive(["work"], owner="w", timeout=0.1)
    assert dead is not None
    death = dead.properties["application_headers"]["x-death"][0]
    assert (death["queue"], death["reason"]) == ("work", "rejected")
    assert broker.dead_letters("work") == []
    # a queue without a user DLX keeps celeriac's dead-letter store
    broker.publish(message(2), "plain")
    got = broker.receive(["plain"], owner="w", timeout=5.0)
    assert broker.dead_letter(got[0], "rejected: test")
    assert [d.message.task_id for d in broker.dead_letters("plain")] == ["task-2"]


def test_kombu_declares_the_same_queues_without_precondition_failed(
        make: Maker, rabbitmq_url: str, raw: amqp.Channel) -> None:
    """What kombu declares for the same ``Queue`` objects matches celeriac's declarations."""
    queues = [Queue("k-topic", Exchange("k-ex", type="topic"), routing_key="k.#",
                    queue_arguments={"x-max-priority": 5, "x-message-ttl": 60000}),
              Queue("k-quorum", Exchange("k-q"), routing_key="k-quorum",
                    queue_arguments={"x-queue-type": "quorum"})]
    broker = make(queues)
    assert broker.receive(["k-topic", "k-quorum"], owner="w", timeout=0.2) == []
    with kombu.Connection(rabbitmq_url) as conn:
        channel = conn.channel()
        for queue in queues:
            queue(channel).declare()  # raises PreconditionFailed on any difference
    assert broker._foreign == set()


def test_other_brokers_warn_what_has_no_effect() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MemoryBroker("memory://", options={"task_queues": [
            Queue("plain"), Queue("fanned", Exchange("f", type="fanout"))]})
    # only the broker's own warnings: a ResourceWarning of another test's socket collected
    # by the garbage collector in this window is not one of them
    texts = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(texts) == 1 and "'fanned'" in texts[0] and "fanout" in texts[0]
    assert "'plain'" not in texts[0]


def test_task_routes_naming_an_exchange_publish_through_it(
        rabbitmq_url: str, raw: amqp.Channel) -> None:
    """``task_routes`` with ``exchange``/``routing_key`` publish as kombu does: to the
    exchange with that routing key, where RabbitMQ's bindings pick the queues."""
    from celeriac import Celery

    topic = Exchange("routes-topic", type="topic")
    app = Celery("queues", broker=rabbitmq_url)
    app.conf.task_queues = [Queue("r-sports", topic, routing_key="news.sports.*"),
                            Queue("r-all-news", topic, routing_key="news.#"),
                            Queue("r-weather", topic, routing_key="weather.#")]
    app.conf.task_routes = {"tests.tennis": {"exchange": topic,
                                             "routing_key": "news.sports.tennis"},
                            "tests.rain": {"queue": "r-weather"}}
    try:
        app.send_task("tests.tennis")
        app.send_task("tests.rain")
        assert depth(raw, "r-sports", 1) == 1
        assert depth(raw, "r-all-news", 1) == 1
        assert depth(raw, "r-weather", 1) == 1
        got = raw.basic_get("r-weather", no_ack=True)
        assert got.delivery_info["exchange"] == "routes-topic"
        assert got.delivery_info["routing_key"] == "weather.#"
        app.conf.task_routes = {"tests.elsewhere": {"exchange": "nowhere", "queue": "r-weather"}}
        with pytest.warns(UserWarning, match="'nowhere'.*not declared in task_queues"):
            app.send_task("tests.elsewhere")
        assert depth(raw, "r-weather", 1) == 1  # by its name
        with pytest.raises(amqp.exceptions.NotFound):  # no queue named by the routing key
            raw.queue_declare("news.sports.tennis", passive=True)
    finally:
        app.close()
