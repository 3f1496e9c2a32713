"""SMTP relay through aiosmtplib: STARTTLS or implicit TLS, AUTH, per-recipient verdicts.

Messages are personal (one recipient each), spread over a few parallel SMTP
sessions so a 50-person committee is not served one by one. A recipient the
server refuses with 5xx is `rejected` (final); 4xx and connection trouble are
`failed` (retried by the delivery chain, then handed to the next mailer).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from email.utils import parseaddr
from functools import lru_cache
from typing import Any, Literal

import aiosmtplib
from aiosmtplib.email import quote_address
from aiosmtplib.typing import SMTPStatus
from pydantic import Field, SecretStr

from connectors.base import Mailer, ResultCallback
from crisisbot.config.types import Seconds, Strict
from crisisbot.mime import to_bytes
from crisisbot.models import DeliveryResult, DeliveryStatus, OutgoingEmail


class SmtpConfig(Strict):
    type: Literal["smtp"]
    host: str
    port: int | None = Field(None, description="default: 465 for tls, 587 for starttls, 25 for none")
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    timeout: Seconds = 10.0
    connections: int = Field(4, ge=1, le=32, description="parallel SMTP sessions per batch")
    ca_file: str | None = Field(None, description="CA bundle to trust instead of the system's")
    verify_certificate: bool = True
    local_hostname: str | None = None
    keep_alive: Seconds = Field(30.0, description="keep idle sessions open this long for the next batch (0: close)")


@lru_cache(maxsize=4096)
def _quoted(address: str) -> bytes:
    """`<address>` for MAIL FROM / RCPT TO, by aiosmtplib's own quoting and check (no
    command injection), once per address: aiosmtplib parses the address with
    email.utils on every command, which was about a quarter of the event loop's CPU
    for a 50-person committee (a MAIL and a RCPT each)."""
    return quote_address(address).encode("ascii")


@lru_cache(maxsize=64)  # one sender for a whole committee: parse it once
def _bare(sender: str) -> str:
    """Envelope sender: the address part of a 'Name <address>' From."""
    return parseaddr(sender)[1] or sender


async def _ignore(_: DeliveryResult) -> None:
    return None


def _verdict(code: int | None) -> DeliveryStatus:
    return DeliveryStatus.rejected if code is not None and 500 <= code < 600 else DeliveryStatus.failed


class SmtpMailer(Mailer):
    Config = SmtpConfig
    config: SmtpConfig

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.config.security == "none":
            return None
        context = ssl.create_default_context(cafile=self.config.ca_file)
        if not self.config.verify_certificate:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _client(self) -> aiosmtplib.SMTP:
        c = self.config
        port = c.port or {"tls": 465, "starttls": 587, "none": 25}[c.security]
        return aiosmtplib.SMTP(
            hostname=c.host, port=port, timeout=c.timeout,
            use_tls=c.security == "tls", start_tls=True if c.security == "starttls" else False,
            tls_context=self._tls_context(), local_hostname=c.local_hostname,
            username=c.username, password=c.password.get_secret_value() if c.password else None,
        )

    async def send(self, messages: list[OutgoingEmail], sender: str) -> list[DeliveryResult]:
        return await self.send_each(messages, sender, _ignore)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._warm: list[asyncio.Task[aiosmtplib.SMTP]] = []
        self._idle: list[tuple[float, aiosmtplib.SMTP]] = []  # (parked at, session) kept for the next batch
        self._expiry: asyncio.TimerHandle | None = None

    def prepare(self, count: int) -> None:
        """Open the sessions now; `send_each` picks them up (connect + TLS + AUTH
        then overlap with rendering the messages). Idle sessions are reused first."""
        self._discard_warm()
        self._warm = [asyncio.create_task(self._session_ready()) for _ in range(min(self.config.connections, count))]

    async def stop(self) -> None:
        self._discard_warm()
        self._close_idle(0.0)

    def _discard_warm(self) -> None:
        for task in self._warm:
            if task.done() and not task.cancelled() and task.exception() is None:
                self._park(task.result())
            else:
                task.cancel()
        self._warm = []

    # -- the pool of idle sessions -------------------------------------------------
    def _park(self, client: aiosmtplib.SMTP) -> None:
        """Keep a healthy session for the next batch (`keep_alive`), or close it."""
        if self.config.keep_alive <= 0 or not client.is_connected or len(self._idle) >= self.config.connections:
            client.close()
            return
        loop = asyncio.get_running_loop()
        self._idle.append((loop.time(), client))
        if self._expiry is None:
            self._expiry = loop.call_later(self.config.keep_alive, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        self._close_idle(self.config.keep_alive)
        if self._idle:
            self._expiry = asyncio.get_running_loop().call_later(self.config.keep_alive / 2, self._expire)

    def _close_idle(self, older_than: float) -> None:
        now = asyncio.get_running_loop().time()
        keep = []
        for parked, client in self._idle:
            if now - parked >= older_than:
                client.close()  # no QUIT: the server treats it as any dropped idle client
            else:
                keep.append((parked, client))
        self._idle = keep

    async def _session_ready(self) -> aiosmtplib.SMTP:
        """An idle session that still answers (NOOP: one round trip instead of connect,
        TLS and AUTH), else a new one."""
        while self._idle:
            _, client = self._idle.pop()
            try:
                await client.noop()
                return client
            except (aiosmtplib.SMTPException, OSError):
                client.close()
        return await self._connect()

    async def _connect(self) -> aiosmtplib.SMTP:
        client = self._client()
        await client.connect()
        return client

    # -- sending ---------------------------------------------------------------------
    async def send_each(self, messages: list[OutgoingEmail], sender: str, on_result: ResultCallback) -> list[DeliveryResult]:
        """Sessions take the next message from a shared queue, so a slow or broken
        session never holds back messages a healthy one could send."""
        queue = deque(messages)
        results: list[DeliveryResult] = []
        errors: list[str] = []

        async def report(result: DeliveryResult) -> None:
            results.append(result)
            await on_result(result)

        sessions = min(self.config.connections, len(messages))
        warm, self._warm = self._warm[:sessions], self._warm[sessions:]
        self._discard_warm()
        connects = warm + [asyncio.create_task(self._session_ready()) for _ in range(sessions - len(warm))]
        try:
            async with asyncio.TaskGroup() as group:  # one session's bug stops the others: no stray sends
                for connecting in connects:
                    group.create_task(self._session(connecting, queue, sender, report, errors))
        finally:
            for connecting in connects:
                connecting.cancel()
        while queue:  # no session could take them
            await report(self._result(queue.popleft(), DeliveryStatus.failed, errors[0] if errors else "no SMTP session"))
        return results

    async def _session(self, connecting: asyncio.Task[aiosmtplib.SMTP], queue: deque[OutgoingEmail], sender: str,
                       report: ResultCallback, errors: list[str]) -> None:
        """One SMTP session: the verdict of a message is committed (`report`) while the
        next message's envelope (MAIL, RCPT) goes out, and that message's DATA waits
        for the commit — so a crash can resend at most one message per session."""
        try:
            client = await connecting
        except (aiosmtplib.SMTPException, OSError) as exc:
            errors.append(f"cannot reach {self.config.host}: {exc}")
            return
        committing: asyncio.Task[None] | None = None
        reusable = False
        try:
            while queue:
                message = queue.popleft()
                try:
                    result = await self._envelope(client, message, sender)
                    if committing is not None:
                        await committing
                        committing = None
                    if result is None:
                        result = await self._data(client, message, sender)
                except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError,
                        aiosmtplib.SMTPTimeoutError, OSError) as exc:
                    detail = f"connection to {self.config.host} lost: {exc}"
                    errors.append(detail)
                    await report(self._result(message, DeliveryStatus.failed, detail))
                    return
                except (aiosmtplib.SMTPException, ValueError) as exc:  # e.g. unencodable message
                    # the session's state is unknown now: fail this message, leave the rest to others
                    await report(self._result(message, DeliveryStatus.failed, f"{type(exc).__name__}: {exc}"))
                    return
                committing = asyncio.ensure_future(report(result))  # the verdict commits while the next DATA is prepared
            if committing is not None:
                await committing
                committing = None
            reusable = True
        finally:
            if committing is not None:  # leaving on an error: the verdict still gets written
                await asyncio.gather(committing, return_exceptions=True)
            if reusable:
                self._park(client)
            elif client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    client.close()

    async def _envelope(self, client: aiosmtplib.SMTP, message: OutgoingEmail, sender: str) -> DeliveryResult | None:
        """MAIL FROM and RCPT TO; a refusal is the message's verdict (None: go on with DATA)."""
        raw = to_bytes(message, sender)
        if client.is_ehlo_or_helo_needed:
            await client.ehlo()
        options = [b"size=%d" % len(raw)] if client.supports_extension("size") else []
        # what client.mail() and client.rcpt() send and check, without their parsing of the
        # address on every command (`_quoted`)
        answer = await client.execute_command(b"MAIL", b"FROM:" + _quoted(_bare(sender)), *options)
        if answer.code != SMTPStatus.completed:
            await self._reset(client)
            return self._result(message, DeliveryStatus.failed, f"sender refused: {answer.code} {answer.message}")
        answer = await client.execute_command(b"RCPT", b"TO:" + _quoted(message.recipient.email))
        if answer.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
            await self._reset(client)
            return self._result(message, _verdict(answer.code), f"recipient refused: {answer.code} {answer.message}")
        return None

    async def _data(self, client: aiosmtplib.SMTP, message: OutgoingEmail, sender: str) -> DeliveryResult:
        try:
            await client.data(to_bytes(message, sender))
        except aiosmtplib.SMTPDataError as exc:
            await self._reset(client)
            return self._result(message, _verdict(exc.code), f"message refused: {exc.code} {exc.message}")
        return self._result(message, DeliveryStatus.sent, f"accepted by {self.config.host}")

    @staticmethod
    async def _reset(client: aiosmtplib.SMTP) -> None:
        try:
            await client.rset()
        except aiosmtplib.SMTPException:
            pass  # the next send_message reports a broken session by itself

    def _result(self, message: OutgoingEmail, status: DeliveryStatus, detail: str) -> DeliveryResult:
        return DeliveryResult(message.key, message.recipient.email, status, detail, self.name)
