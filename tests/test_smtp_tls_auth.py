"""SMTP connector against a real aiosmtpd speaking STARTTLS, implicit TLS and AUTH,
with a throw-away CA; the password never shows up in logs or delivery details."""

from __future__ import annotations

import logging
import ssl

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from conftest import RecordingHandler, free_port
from connectors.base import Services
from connectors.smtp import SmtpMailer
from crisisbot.models import DeliveryStatus, OutgoingEmail, Recipient

PASSWORD = "s3cr3t-relay-password"


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca, tmp_path_factory):
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(ca) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"crisisbot" and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


def mailer(tmp_path, **config) -> SmtpMailer:
    cfg = SmtpMailer.Config.model_validate({"type": "smtp", "host": "127.0.0.1", "timeout": "3s", **config})
    return SmtpMailer("relay", cfg, Services(data_dir=tmp_path, root=tmp_path))


def message(address: str = "alice@exemple.fr") -> OutgoingEmail:
    return OutgoingEmail("k1", Recipient("alice", "Alice", address, "fr"), "Alerte", "texte", "<p>html</p>",
                         message_id="<k1@crisisbot>")


async def test_starttls_with_auth(ca, ca_file, tmp_path, caplog):
    handler = RecordingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=server_context(ca),
                            require_starttls=True, authenticator=authenticator, auth_required=True)
    controller.start()
    caplog.set_level(logging.DEBUG)
    try:
        results = await mailer(tmp_path, port=port, security="starttls", ca_file=ca_file,
                               username="crisisbot", password=PASSWORD).send([message()], "crisisbot@exemple.fr")
    finally:
        controller.stop()
    assert results[0].status is DeliveryStatus.sent, results[0].detail
    assert handler.messages[0].rcpt == ["alice@exemple.fr"]
    assert PASSWORD not in caplog.text


async def test_implicit_tls(ca, ca_file, tmp_path):
    handler = RecordingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, ssl_context=server_context(ca))
    controller.start()
    try:
        results = await mailer(tmp_path, port=port, security="tls", ca_file=ca_file).send([message()], "c@exemple.fr")
    finally:
        controller.stop()
    assert results[0].status is DeliveryStatus.sent
    assert handler.messages[0].message["Subject"] == "Alerte"


async def test_untrusted_certificate_fails_clearly(ca, tmp_path):
    port = free_port()
    controller = Controller(RecordingHandler(), hostname="127.0.0.1", port=port, ssl_context=server_context(ca))
    controller.start()
    try:
        results = await mailer(tmp_path, port=port, security="tls").send([message()], "c@exemple.fr")
    finally:
        controller.stop()
    assert results[0].status is DeliveryStatus.failed
    assert "CERTIFICATE_VERIFY_FAILED" in results[0].detail or "certificate" in results[0].detail.lower()


async def test_wrong_password_fails_without_leaking_it(ca, ca_file, tmp_path, caplog):
    port = free_port()
    controller = Controller(RecordingHandler(), hostname="127.0.0.1", port=port, tls_context=server_context(ca),
                            authenticator=authenticator, auth_required=True)
    controller.start()
    caplog.set_level(logging.DEBUG)
    try:
        results = await mailer(tmp_path, port=port, security="starttls", ca_file=ca_file,
                               username="crisisbot", password="wrong-" + PASSWORD).send([message()], "c@exemple.fr")
    finally:
        controller.stop()
    assert results[0].status is DeliveryStatus.failed
    assert "535" in results[0].detail or "authentication" in results[0].detail.lower()
    assert PASSWORD not in caplog.text and PASSWORD not in results[0].detail
