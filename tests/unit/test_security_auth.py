"""Celery's ``auth`` serializer (issue 19, point 1) and message size limits (point 3).

Checked against the golden capture of Celery 5.7 (tests/fixtures/signing-auth.json,
its TEST ONLY key and certificate) and against Celery's own ``SecureSerializer``
in this process (a test dependency): celeriac reads what Celery signs and Celery
reads what celeriac signs. Then ``setup_security()``'s refusals, and the worker's
intake: unsigned, tampered, unknown-signer and oversized messages are dead-lettered
with the reason and never run.
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as crypto_ser
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from celeriac import Celery, serialization
from celeriac.brokers.base import BAD_SIGNATURE, OVERSIZED, UNSIGNED
from celeriac.exceptions import (
    ContentDisallowed,
    DecodeError,
    ImproperlyConfigured,
    MessageTooLarge,
    SecurityError,
)
from celeriac.messages import Message, task_message
from celeriac.security import check_settings
from celeriac.security.auth import AUTH_CONTENT_TYPE, pack, unpack
from celeriac.worker.job import JobRunner
from celeriac.worker.leases import LeaseKeeper

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
KEY, CERT = FIXTURES / "test-signing-key.pem", FIXTURES / "test-signing-cert.pem"
CAPTURE = json.loads((FIXTURES / "signing-auth.json").read_text())
SIGNER = "celeriac tests TEST ONLY signer 104375458365015"


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    """setup_security() changes the process-wide serializer registry (as in Celery)."""
    saved, disabled = dict(serialization._SERIALIZERS), set(serialization._DISABLED)
    yield
    serialization._SERIALIZERS.clear()
    serialization._SERIALIZERS.update(saved)
    serialization._DISABLED.clear()
    serialization._DISABLED.update(disabled)


def make_app(**conf: Any) -> Celery:
    app = Celery("sec", broker="memory://", backend="memory://", set_as_current=False)
    app.conf.update(task_serializer="auth", accept_content=["auth"], security_key=str(KEY),
                    security_certificate=str(CERT), security_cert_store=str(CERT))
    app.conf.update(conf)
    app.ran = []  # type: ignore[attr-defined]

    @app.task(name="capture_app.add")
    def add(x: int, y: int) -> int:
        app.ran.append((x, y))  # type: ignore[attr-defined]
        return x + y

    return app


def make_cert(tmp_path: Path, name: str = "other", *, days: int = 365,
              key: Any = None) -> tuple[Path, Path]:
    """A fresh self-signed key and certificate (PEM files) for refusal cases."""
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    start = now - datetime.timedelta(days=400) if days < 0 else now - datetime.timedelta(days=1)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(now + datetime.timedelta(days=days))
            .sign(key, hashes.SHA256()))
    key_path, cert_path = tmp_path / f"{name}-key.pem", tmp_path / f"{name}-cert.pem"
    key_path.write_bytes(key.private_bytes(crypto_ser.Encoding.PEM,
                                           crypto_ser.PrivateFormat.PKCS8,
                                           crypto_ser.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(crypto_ser.Encoding.PEM))
    return key_path, cert_path


def deliver(app: Celery, message: Message) -> Any:
    app.broker.publish(message, "celery")
    [delivery] = app.broker.receive(["celery"], owner="w", limit=1, timeout=1)
    keeper = LeaseKeeper(app.broker, interval=60)
    keeper.hold([delivery])
    runner = JobRunner(app, keeper, "w@test")
    job = runner.prepare(delivery, set())
    if job is not None:
        runner.execute(job)
    return job


# -- the wire format, both ways ---------------------------------------------------------
@pytest.mark.parametrize("where", ["redis", "amqp"])
def test_celeriac_verifies_and_decodes_what_celery_signed(where: str) -> None:
    app = make_app()
    security = app.setup_security()
    record = CAPTURE[where]
    payload = record["auth_payload"] if where == "redis" else record["body_raw"]
    assert security.serializer.loads(payload.encode()) == [
        [2, 3], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    assert unpack(payload).signer == SIGNER == security.signer


def test_a_celery_signed_redis_envelope_runs_on_a_celeriac_worker() -> None:
    app = make_app()
    app.setup_security()
    message = Message.loads(CAPTURE["redis"]["raw"])
    assert message.content_type == AUTH_CONTENT_TYPE
    assert deliver(app, message) is not None
    assert app.ran == [(2, 3)]  # type: ignore[attr-defined]
    assert app.AsyncResult(message.task_id).get(timeout=1) == 5


def test_celery_verifies_what_celeriac_signed() -> None:
    celery_security = pytest.importorskip("celery.security.serialization")
    from celery.security.certificate import FSCertStore

    app = make_app()
    app.setup_security()
    message = task_message("capture_app.add", "t-1", (2, 3), {}, serializer="auth")
    assert message.content_type == "application/data"
    assert message.content_encoding == "utf-8"
    assert unpack(message.body).signer == SIGNER
    celery = celery_security.SecureSerializer(cert_store=FSCertStore(str(CERT)),
                                              digest="sha256")
    assert celery.deserialize(message.body.decode()) == [
        [2, 3], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    # the Redis envelope has Celery's shape: the payload base64'd again as the body
    envelope = json.loads(message.dumps("celery"))
    assert base64.b64decode(envelope["body"]) == message.body
    assert envelope["content-type"] == CAPTURE["redis"]["envelope_without_body"]["content-type"]


def test_published_messages_are_signed() -> None:
    app = make_app()
    app.setup_security()
    result = app.send_task("capture_app.add", (2, 3))
    [delivery] = app.broker.receive(["celery"], owner="w", limit=1, timeout=1)
    assert delivery.message.task_id == result.id
    assert delivery.message.content_type == AUTH_CONTENT_TYPE
    assert unpack(delivery.message.body).signer == SIGNER


# -- refusals on the worker ----------------------------------------------------------------
def test_unsigned_message_is_dead_lettered_as_unsigned() -> None:
    app = make_app()
    app.setup_security()
    assert deliver(app, task_message("capture_app.add", "t-2", (1, 1), {})) is None
    [letter] = app.broker.dead_letters()
    assert letter.reason.startswith(f"{UNSIGNED}: "), letter.reason
    assert app.ran == []  # type: ignore[attr-defined]


def test_tampered_body_is_dead_lettered_as_bad_signature() -> None:
    app = make_app()
    app.setup_security()
    signed = task_message("capture_app.add", "t-3", (2, 3), {}, serializer="auth")
    fields = unpack(signed.body)
    forged = pack(fields.signer, fields.signature, fields.content_type, fields.content_encoding,
                  fields.body.replace(b"[2, 3]", b"[9, 9]"))
    assert deliver(app, Message(signed.headers, signed.properties, forged,
                                AUTH_CONTENT_TYPE)) is None
    [letter] = app.broker.dead_letters()
    assert letter.reason.startswith(f"{BAD_SIGNATURE}: bad signature"), letter.reason
    assert app.ran == []  # type: ignore[attr-defined]


def test_unknown_signer_is_dead_lettered(tmp_path: Path) -> None:
    key, cert = make_cert(tmp_path, "intruder")
    intruder = make_app(security_key=str(key), security_certificate=str(cert),
                        security_cert_store=str(cert))
    intruder.setup_security()
    forged = task_message("capture_app.add", "t-4", (2, 3), {}, serializer="auth")
    app = make_app()
    app.setup_security()  # trusts only the fixture certificate
    assert deliver(app, forged) is None
    [letter] = app.broker.dead_letters()
    assert letter.reason.startswith(f"{BAD_SIGNATURE}: unknown certificate 'intruder "), \
        letter.reason


def test_garbage_auth_payload_is_a_decode_error() -> None:
    app = make_app()
    app.setup_security()
    base = task_message("capture_app.add", "t-5", (2, 3), {})
    assert deliver(app, Message(base.headers, base.properties, b"not base64!",
                                AUTH_CONTENT_TYPE)) is None
    [letter] = app.broker.dead_letters()
    assert letter.reason == "decode_error: auth payload is not base64"


def test_signed_pickle_is_refused_unless_allowed() -> None:
    app = make_app()
    security = app.setup_security()
    body = serialization.dumps([[1], {}, None], "pickle")[0]
    payload = pack(security.signer, security.serializer.key.sign(  # type: ignore[union-attr]
        body, security.serializer.digest), serialization.PICKLE, "binary", body)
    with pytest.raises(ContentDisallowed):
        security.serializer.loads(payload)
    with pytest.raises(ContentDisallowed, match="disabled by setup_security"):
        serialization.loads(body, serialization.PICKLE, None)


# -- sizes -----------------------------------------------------------------------------------
def test_oversized_message_is_refused_at_publish_and_dead_lettered_by_workers() -> None:
    app = Celery("size", broker="memory://", backend="memory://", set_as_current=False)
    app.conf.task_message_max_size = 1000
    app.ran = []  # type: ignore[attr-defined]

    @app.task(name="capture_app.add")
    def add(x: Any, y: Any) -> None:
        app.ran.append(1)  # type: ignore[attr-defined]

    with pytest.raises(MessageTooLarge, match="exceeds task_message_max_size"):
        add.delay("x" * 2000, 1)
    assert app.broker.stats("celery").ready == 0
    big = task_message("capture_app.add", "t-6", ("x" * 2000, 1), {})
    assert deliver(app, big) is None
    [letter] = app.broker.dead_letters()
    assert letter.reason.startswith(f"{OVERSIZED}: message of "), letter.reason
    assert app.ran == []  # type: ignore[attr-defined]


def test_a_compression_bomb_is_oversized_not_decoded() -> None:
    app = Celery("bomb", broker="memory://", backend="memory://", set_as_current=False)
    app.conf.task_message_max_size = 10_000
    app.task(name="capture_app.add")(lambda x, y: None)
    bomb = task_message("capture_app.add", "t-7", ("a" * 100_000, 1), {}, compression="zlib")
    assert len(bomb.body) < 1000
    assert deliver(app, bomb) is None
    [letter] = app.broker.dead_letters()
    assert letter.reason == f"{OVERSIZED}: decompressed body exceeds 10000 bytes"


# -- setup_security refusals -------------------------------------------------------------
def test_setup_requires_auth_serializer_and_accept_content() -> None:
    app = make_app(task_serializer="json")
    with pytest.raises(ImproperlyConfigured, match="task_serializer = 'auth'"):
        app.setup_security()
    app = make_app(accept_content=["auth", "json"])
    with pytest.raises(ImproperlyConfigured, match=r"accept_content = \['auth'\]"):
        app.setup_security()


def test_setup_names_the_missing_settings() -> None:
    app = make_app(security_key=None, security_cert_store=None)
    with pytest.raises(ImproperlyConfigured, match="security_key, security_cert_store"):
        app.setup_security()


@pytest.mark.parametrize("setting", ["security_key", "security_certificate",
                                     "security_cert_store"])
def test_missing_file_fails_naming_the_setting(tmp_path: Path, setting: str) -> None:
    app = make_app(**{setting: str(tmp_path / "nope.pem")})
    with pytest.raises(ImproperlyConfigured, match=f"setting {setting}"):
        check_settings(app)


def test_unreadable_or_malformed_files_fail(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a pem")
    with pytest.raises(ImproperlyConfigured, match=r"setting security_key .*not a usable PEM"):
        make_app(security_key=str(garbage)).setup_security()
    with pytest.raises(ImproperlyConfigured, match=r"setting security_certificate .*not a PEM"):
        make_app(security_certificate=str(garbage)).setup_security()
    with pytest.raises(ImproperlyConfigured, match="security_cert_store: no certificate"):
        make_app(security_cert_store=str(tmp_path / "empty-dir-*")).setup_security()
    with pytest.raises(ImproperlyConfigured, match="setting security_digest: unknown"):
        make_app(security_digest="rot13").setup_security()


def test_wrong_password_mismatched_pair_expired_and_non_rsa(tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match="wrong security_key_password"):
        make_app(security_key_password="secret").setup_security()
    _, other_cert = make_cert(tmp_path, "other")
    with pytest.raises(ImproperlyConfigured, match="is not the certificate of security_key"):
        make_app(security_certificate=str(other_cert)).setup_security()
    old_key, old_cert = make_cert(tmp_path, "old", days=-1)
    with pytest.raises(ImproperlyConfigured, match="expired"):
        make_app(security_key=str(old_key), security_certificate=str(old_cert)).setup_security()
    with pytest.raises(ImproperlyConfigured, match=r"security_cert_store: certificate .* expired"):
        make_app(security_cert_store=str(old_cert)).setup_security()
    ec_key, _ = make_cert(tmp_path, "ec", key=ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ImproperlyConfigured, match="only RSA"):
        make_app(security_key=str(ec_key)).setup_security()


def test_worker_start_up_sets_up_auth_and_refuses_what_it_cannot_honour() -> None:
    app = make_app()
    security = check_settings(app)
    assert security is not None and security.signer == SIGNER
    assert check_settings(app) is security  # set up once
    with pytest.raises(ImproperlyConfigured, match="setting event_serializer: 'auth'"):
        check_settings(make_app(event_serializer="auth"))
    with pytest.raises(ImproperlyConfigured, match="setting result_serializer: 'auth'"):
        check_settings(make_app(result_serializer="auth"))


def test_key_files_are_checked_even_when_nothing_signs(tmp_path: Path) -> None:
    app = Celery("plain", broker="memory://", set_as_current=False)
    app.conf.security_key = str(tmp_path / "missing.pem")
    with pytest.raises(ImproperlyConfigured, match="setting security_key: cannot read"):
        check_settings(app)
    app.conf.security_key = str(KEY)
    with pytest.warns(UserWarning, match="neither signed nor verified"):
        assert check_settings(app) is None


def test_a_producer_sets_auth_up_at_its_first_publish_or_says_what_is_missing() -> None:
    app = Celery("nosetup", broker="memory://", set_as_current=False)
    app.conf.task_serializer = "auth"
    with pytest.raises(ImproperlyConfigured, match=r"accept_content = \['auth'\]"):
        app.send_task("x", (1,))
    app.conf.accept_content = ["auth"]
    with pytest.raises(ImproperlyConfigured, match="needs the settings security_key, "
                                                   "security_certificate, security_cert_store"):
        app.send_task("x", (1,))
    assert app.broker.stats("celery").ready == 0
    with pytest.raises(ContentDisallowed, match="setup_security"):
        serialization.dumps([1], "auth")  # the registry without any set-up


def test_unpack_rejects_malformed_payloads() -> None:
    for bad in (b"", b"!!!", base64.b64encode(b"a\x00\x01b"),
                base64.b64encode(b"###\x00\x01x\x00\x01a\x00\x01b\x00\x01c")):
        with pytest.raises(DecodeError):
            unpack(bad)


def test_verify_reports_a_bad_signature() -> None:
    app = make_app()
    security = app.setup_security()
    good = security.serializer.dumps([1])
    fields = unpack(good)
    with pytest.raises(SecurityError, match="bad signature"):
        security.serializer.loads(pack(fields.signer, b"\x00" * 256, fields.content_type,
                                       fields.content_encoding, fields.body))


# -- results (point 4) --------------------------------------------------------------------------
def test_the_cli_shows_a_result_naming_any_class_as_text(capsys: pytest.CaptureFixture[str],
                                                         tmp_path: Path) -> None:
    """CVE-2021-23727: ``celeriac result`` prints such a failure, never imports its module."""
    import sys

    app = Celery("cli-cve", broker=f"sqlite:///{tmp_path}/db.sqlite3", set_as_current=False)
    app.backend.set("evil", {"status": "FAILURE", "result": {
        "exc_type": "system", "exc_module": "celeriac_cli_canary", "exc_message": ["id"]},
        "traceback": None, "children": [], "date_done": None, "task_id": "evil"})
    with pytest.raises(SystemExit) as exit_info:
        app.start(["result", "evil"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err == "FAILURE: RemoteTaskError('celeriac_cli_canary.system: id')\n", err
    assert "celeriac_cli_canary" not in sys.modules
