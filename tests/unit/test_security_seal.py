"""Sealed messages (issue 19, point 2): headers and body signed, key ids, replay window,
encryption; refusals dead-lettered with the reason (point 3), on the memory broker.

Each test publishes through the app (so the producer side seals), receives and
prepares with the worker's :class:`JobRunner`, and checks what ran and what the
dead-letter store holds.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as crypto_ser
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from celeriac import Celery, serialization
from celeriac.brokers.base import BAD_SIGNATURE, REPLAYED, UNREGISTERED, UNSIGNED
from celeriac.exceptions import ImproperlyConfigured
from celeriac.messages import Message, task_message
from celeriac.security import check_settings
from celeriac.security.replay import MemoryGuard, SQLiteGuard, guard_for
from celeriac.security.seal import ENCRYPTED, SEAL_HEADER
from celeriac.worker.job import JobRunner
from celeriac.worker.leases import LeaseKeeper

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
KEY, CERT = FIXTURES / "test-signing-key.pem", FIXTURES / "test-signing-cert.pem"


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    saved, disabled = dict(serialization._SERIALIZERS), set(serialization._DISABLED)
    yield
    serialization._SERIALIZERS.clear()
    serialization._SERIALIZERS.update(saved)
    serialization._DISABLED.clear()
    serialization._DISABLED.update(disabled)


def make_cert(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    key_path, cert_path = tmp_path / f"{name}-key.pem", tmp_path / f"{name}-cert.pem"
    key_path.write_bytes(key.private_bytes(crypto_ser.Encoding.PEM,
                                           crypto_ser.PrivateFormat.PKCS8,
                                           crypto_ser.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(crypto_ser.Encoding.PEM))
    return key_path, cert_path


def make_app(**conf: Any) -> Celery:
    app = Celery("seal", broker="memory://", backend="memory://", set_as_current=False)
    app.conf.update(security_seal=True, security_key=str(KEY), security_certificate=str(CERT),
                    security_cert_store=str(CERT))
    app.conf.update(conf)
    app.ran = []  # type: ignore[attr-defined]

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        app.ran.append(("add", x, y))  # type: ignore[attr-defined]
        return x + y

    @app.task(name="t.wipe")
    def wipe(x: int, y: int) -> None:
        app.ran.append(("wipe", x, y))  # type: ignore[attr-defined]

    return app


def runner_for(app: Celery) -> tuple[JobRunner, LeaseKeeper]:
    keeper = LeaseKeeper(app.broker, interval=60)
    return JobRunner(app, keeper, "w@test"), keeper


def consume(app: Celery, runner: JobRunner | None = None) -> Any:
    """Receive one message and run it through the worker's checks (and body)."""
    [delivery] = app.broker.receive(["celery"], owner="w", limit=1, timeout=1)
    if runner is None:
        runner, keeper = runner_for(app)
    else:
        keeper = runner.keeper
    keeper.hold([delivery])
    job = runner.prepare(delivery, set())
    if job is not None:
        runner.execute(job)
    return job


def stored(app: Celery) -> Message:
    """The one message in the queue as the broker stores it (not leased)."""
    [delivery] = app.broker.receive(["celery"], owner="peek", limit=1, timeout=1)
    app.broker.release(delivery)
    return delivery.message


def reason(app: Celery) -> str:
    [letter] = app.broker.dead_letters()
    return letter.reason


def test_sealed_messages_run_and_carry_the_seal() -> None:
    app = make_app()
    result = app.send_task("t.add", (2, 3))
    seal = stored(app).headers[SEAL_HEADER]
    assert seal["kid"] == "celeriac tests TEST ONLY signer 104375458365015"
    assert seal["v"] == 1 and len(seal["nonce"]) == 32 and seal["enc"] is None
    assert consume(app) is not None
    assert app.ran == [("add", 2, 3)]  # type: ignore[attr-defined]
    assert result.get(timeout=1) == 5


@pytest.mark.parametrize(("header", "value"), [("task", "t.wipe"), ("eta", None),
                                                ("retries", 5), ("id", "other-id")])
def test_a_forged_header_is_dead_lettered(header: str, value: Any) -> None:
    app = make_app()
    app.send_task("t.add", (2, 3), countdown=0.001 if header == "eta" else None)
    message = stored(app)
    app.broker.purge("celery")
    app.broker.publish(message.with_headers(**{header: value}), "celery")
    assert consume(app) is None
    assert reason(app).startswith(f"{BAD_SIGNATURE}: bad signature"), reason(app)
    assert app.ran == []  # type: ignore[attr-defined]


def test_a_tampered_body_is_dead_lettered() -> None:
    app = make_app()
    app.send_task("t.add", (2, 3))
    message = stored(app)
    app.broker.purge("celery")
    app.broker.publish(replace(message, body=message.body.replace(b"[2, 3]", b"[2, 4]")),
                       "celery")
    assert consume(app) is None
    assert reason(app).startswith(f"{BAD_SIGNATURE}: "), reason(app)


def test_a_replay_is_dead_lettered_but_a_redelivery_runs() -> None:
    app = make_app()
    app.send_task("t.add", (2, 3))
    message = stored(app)
    runner, _ = runner_for(app)
    [delivery] = app.broker.receive(["celery"], owner="w", limit=1, timeout=1)
    app.broker.release(delivery, failed=True)  # our own redelivery: same stored message
    assert consume(app, runner) is not None
    assert app.ran == [("add", 2, 3)]  # type: ignore[attr-defined]
    app.broker.publish(message, "celery")  # someone pushes the message again
    assert consume(app, runner) is None
    assert reason(app).startswith(f"{REPLAYED}: nonce "), reason(app)
    assert app.ran == [("add", 2, 3)]  # type: ignore[attr-defined]


def test_an_old_message_is_a_replay_unless_its_eta_is_recent() -> None:
    app = make_app(security_replay_window=60)
    security = check_settings(app)
    assert security is not None and security.sealer is not None
    old = security.sealer.seal(task_message("t.add", "t-old", (1, 1), {}),
                               now=time.time() - 120)
    app.broker.publish(old, "celery")
    assert consume(app) is None
    assert "more than security_replay_window (60s)" in reason(app)
    eta = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    later = security.sealer.seal(task_message("t.add", "t-eta", (1, 2), {}, eta=eta),
                                 now=time.time() - 120)
    app.broker.publish(later, "celery")
    assert consume(app) is not None
    assert app.ran == [("add", 1, 2)]  # type: ignore[attr-defined]


def test_an_unsealed_message_is_dead_lettered_as_unsigned() -> None:
    app = make_app()
    app.broker.publish(task_message("t.add", "t-plain", (1, 1), {}), "celery")
    assert consume(app) is None
    assert reason(app).startswith(f"{UNSIGNED}: no celeriac_seal header"), reason(app)


def test_malformed_seals_are_bad_signatures() -> None:
    app = make_app()
    base = task_message("t.add", "t-bad", (1, 1), {})
    for seal in ("text", {"v": 1}, {"v": 2, "kid": "x"},
                 {"v": 1, "kid": "x", "sig": "!!", "ts": 1.0, "nonce": "n"},
                 {"v": 1, "kid": "nobody", "sig": "AAAA", "ts": 1.0, "nonce": "n"}):
        app.broker.publish(base.with_headers(**{SEAL_HEADER: seal}), "celery")
        assert consume(app) is None
    reasons = [d.reason for d in app.broker.dead_letters()]
    assert all(r.startswith(f"{BAD_SIGNATURE}: ") for r in reasons), reasons
    assert "unknown certificate 'nobody'" in reasons[-1]


def test_encrypted_bodies_are_unreadable_in_the_broker_and_keys_rotate(tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    producer = make_app(security_encryption_keys=[old])
    producer.send_task("t.add", (1234567, 7654321))
    message = stored(producer)
    assert message.content_type == ENCRYPTED
    assert b"1234567" not in message.body
    assert "1234567" not in json.dumps(message.headers)
    assert message.headers["argsrepr"] == message.headers["kwargsrepr"] == "<encrypted>"
    keys = tmp_path / "fernet.keys"
    keys.write_text(f"# first encrypts, all decrypt\n{new}\n{old}\n")
    worker = make_app(security_encryption_keys=str(keys))
    worker.broker.publish(message, "celery")
    job = consume(worker)
    assert job is not None and job.request.argsrepr == "(1234567, 7654321)"
    assert worker.ran == [("add", 1234567, 7654321)]  # type: ignore[attr-defined]
    wrong = make_app(security_encryption_keys=[new])
    wrong.broker.publish(message, "celery")
    assert consume(wrong) is None
    assert reason(wrong) == (f"{BAD_SIGNATURE}: cannot decrypt the body with any of "
                             f"security_encryption_keys")


def test_signing_keys_rotate_through_the_certificate_store(tmp_path: Path) -> None:
    key2, cert2 = make_cert(tmp_path, "next")
    store = tmp_path / "store"
    store.mkdir()
    (store / "old.pem").write_bytes(CERT.read_bytes())
    (store / "next.pem").write_bytes(cert2.read_bytes())
    producer = make_app(security_key=str(key2), security_certificate=str(cert2),
                        security_cert_store=str(store))
    producer.send_task("t.add", (5, 5))
    message = stored(producer)
    worker = make_app(security_cert_store=str(store))  # signs with the old key, trusts both
    worker.broker.publish(message, "celery")
    assert consume(worker) is not None
    assert worker.ran == [("add", 5, 5)]  # type: ignore[attr-defined]


def test_a_dead_letter_that_did_not_run_can_be_retried() -> None:
    app = make_app()
    app.send_task("t.missing", (1,))
    assert consume(app) is None
    [letter] = app.broker.dead_letters()
    assert letter.reason.startswith(UNREGISTERED)
    app.task(name="t.missing")(lambda x: app.ran.append(("missing", x)))  # type: ignore[attr-defined]
    assert app.broker.retry_dead_letter(letter.id)
    assert consume(app) is not None
    assert app.ran == [("missing", 1)]  # type: ignore[attr-defined]


def test_sealed_mode_settings_are_checked() -> None:
    with pytest.raises(ImproperlyConfigured, match="sealed messages replace the auth"):
        check_settings(make_app(task_serializer="auth", accept_content=["auth"]))
    app = make_app(security_seal=False, security_encryption_keys=["k"])
    app.conf.update(task_serializer="auth", accept_content=["auth"])
    with pytest.raises(ImproperlyConfigured, match="encryption needs security_seal"):
        check_settings(app)
    with pytest.raises(ImproperlyConfigured, match="security_encryption_keys: not Fernet"):
        check_settings(make_app(security_encryption_keys=["not a key"]))
    with pytest.raises(ImproperlyConfigured, match="security_encryption_keys: cannot read"):
        check_settings(make_app(security_encryption_keys="/nonexistent/keys"))
    with pytest.raises(ImproperlyConfigured, match="security_replay_window"):
        check_settings(make_app(security_replay_window=-1))


def test_memory_and_sqlite_guards_claim_once(tmp_path: Path) -> None:
    for guard in (MemoryGuard(), SQLiteGuard(f"sqlite:///{tmp_path}/g.sqlite3"),
                  guard_for(f"sqlite:///{tmp_path}/g2.sqlite3")):
        assert guard.claim("n1", 60) is True
        assert guard.claim("n1", 60) is False
        assert guard.claim("n2", 60) is True
        guard.forget("n1")
        assert guard.claim("n1", 60) is True
        assert guard.claim("short", 0.01) is True
        time.sleep(0.03)
        assert guard.claim("short", 60) is True  # expired entries do not count


def test_without_a_replay_window_nothing_is_remembered() -> None:
    app = make_app(security_replay_window=0)
    app.send_task("t.add", (2, 3))
    message = stored(app)
    runner, _ = runner_for(app)
    assert consume(app, runner) is not None
    app.broker.publish(message, "celery")
    assert consume(app, runner) is not None  # documented: no replay protection
    assert app.ran == [("add", 2, 3), ("add", 2, 3)]  # type: ignore[attr-defined]


def test_an_accepted_encrypted_message_can_be_read_again_for_errbacks() -> None:
    """After a hard time limit or a worker loss the worker re-reads the stored (encrypted)
    message to follow its errbacks and chord: ``readable`` decrypts it."""
    from celeriac.app.request import parse_request
    from celeriac.canvas.callbacks import fail_outside_tracer
    from celeriac.exceptions import TimeLimitExceeded
    from celeriac.security.setup import readable

    app = make_app(security_encryption_keys=[Fernet.generate_key().decode()])
    wipe = app.signature("t.wipe", (0, 0), immutable=True)
    result = app.send_task("t.add", (3, 4), link_error=wipe)
    message = stored(app)
    assert message.content_type == ENCRYPTED
    request = parse_request(readable(app, message))
    assert (request.args, request.argsrepr) == ([3, 4], "(3, 4)")
    assert request.errbacks and request.errbacks[0]["task"] == "t.wipe"
    assert readable(make_app(), message) is message  # no keys here: left as it is
    app.broker.purge("celery")
    fail_outside_tracer(app, message, TimeLimitExceeded(1.0))
    assert result.state == "FAILURE"
    assert stored(app).headers["task"] == "t.wipe"  # the errback was sent (sealed too)
