"""Microsoft Graph plumbing shared by the Teams, Graph mail and check code: the light part.

The connectors' config (tenant, credential, cloud, retries), the translation of
SDK/HTTP/identity exceptions into `TransientError`/`PermanentError` whose text names the
cause (which permission, which mailbox) and never a secret, and the connector base that
opens the SDK side (connectors/graph_sdk.py) in the background after start: importing
msgraph costs over a second, which must neither delay the daemon's readiness nor fall
on the first alarm.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import Field, SecretStr, model_validator

from connectors.base import Connector, Services
from crisisbot.config.types import Seconds, Strict
from crisisbot.errors import ConnectorError, PermanentError, TransientError, CredentialRefused

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

    from connectors.graph_sdk import GraphConnection

OPEN_AFTER = 2.0  # seconds after start() the background opening begins, if nothing needs Graph sooner

log = logging.getLogger(__name__)

# Graph and login hosts per cloud; GCC (moderate) uses the global endpoints.
CLOUDS: dict[str, tuple[str, str]] = {
    "global": ("https://graph.microsoft.com/v1.0", "https://login.microsoftonline.com"),
    "usgov-high": ("https://graph.microsoft.us/v1.0", "https://login.microsoftonline.us"),
    "usgov-dod": ("https://dod-graph.microsoft.us/v1.0", "https://login.microsoftonline.us"),
    "china": ("https://microsoftgraph.chinacloudapi.cn/v1.0", "https://login.chinacloudapi.cn"),
}


GraphSettingsT = TypeVar("GraphSettingsT", bound="GraphSettings")


class SecretCredential(Strict):
    type: Literal["secret"]
    client_secret: SecretStr


class CertificateCredential(Strict):
    type: Literal["certificate"]
    certificate_path: Path = Field(description="PEM (private key + certificate) or PKCS#12 file")
    certificate_password: SecretStr | None = None
    send_certificate_chain: bool = Field(False, description="for subject name/issuer auth")


class ManagedIdentity(Strict):
    type: Literal["managed-identity"]
    client_id: str | None = Field(None, description="user-assigned identity; omit for system-assigned")


class DefaultChain(Strict):
    type: Literal["default"] = Field(description="azure-identity DefaultAzureCredential (env, workload identity, CLI...)")


CredentialConfig = Annotated[
    SecretCredential | CertificateCredential | ManagedIdentity | DefaultChain,
    Field(discriminator="type"),
]


class GraphSettings(Strict):
    """Fields every Graph-backed connector shares."""

    tenant_id: str = Field(description="directory (tenant) id or verified domain")
    client_id: str = Field(description="application (client) id of the app registration")
    credential: CredentialConfig
    cloud: Literal["global", "usgov-high", "usgov-dod", "china"] = "global"
    graph_url: str | None = Field(None, description="default: the cloud's https://graph.../v1.0")
    authority_host: str | None = Field(None, description="default: the cloud's login host")
    ca_bundle: Path | None = Field(None, description="extra CA file (TLS-inspecting proxy, tests)")
    request_timeout: Seconds = Field(15.0, gt=0, description="per HTTP request; a hang becomes a retryable error")
    max_retries: int = Field(3, ge=0, le=10, description="retries of 429/503/504 answers")
    max_retry_wait: Seconds = Field(
        5.0, ge=0, description="longest Retry-After slept in place; longer ones are returned as retryable errors"
    )

    @model_validator(mode="after")
    def _fill_cloud(self) -> "GraphSettings":
        graph, login = CLOUDS[self.cloud]
        self.graph_url = (self.graph_url or graph).rstrip("/")
        self.authority_host = (self.authority_host or login).rstrip("/")
        return self

    @property
    def scope(self) -> str:
        """The `.default` scope of the Graph host in use (differs per national cloud)."""
        parts = urlsplit(self.graph_url or "")
        return f"{parts.scheme}://{parts.netloc}/.default"


def with_root(settings: GraphSettingsT, root: Path | None) -> GraphSettingsT:
    """Relative file paths in the config (certificate, CA bundle) start at config.yaml's directory."""
    if root is None:
        return settings
    update: dict[str, Any] = {}
    if settings.ca_bundle and not settings.ca_bundle.is_absolute():
        update["ca_bundle"] = Path(root) / settings.ca_bundle
    cred = settings.credential
    if isinstance(cred, CertificateCredential) and not cred.certificate_path.is_absolute():
        update["credential"] = cred.model_copy(update={"certificate_path": Path(root) / cred.certificate_path})
    return settings.model_copy(update=update) if update else settings


def _retry_after(headers: Any) -> float | None:
    """Retry-After in seconds from kiota's response headers (httpx.Headers: case-insensitive)."""
    value = headers.get("retry-after") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _odata(exc: Any) -> tuple[str, str]:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) or ""
    message = getattr(error, "message", None) or exc.message or ""
    return code, message


class _LazyModels:
    """`m.OnlineMeeting` and co.: connectors/graph_models.py, imported on first attribute
    access (by then the background opening has imported msgraph, so it is free)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module("connectors.graph_models"), name)


sdk_models: Any = _LazyModels()


# Graph error codes of a 404 that is about the user/mailbox in the URL, not what is under it
USER_NOT_FOUND = {"ErrorInvalidUser", "Request_ResourceNotFound", "MailboxNotEnabledForRESTAPI",
                  "ResourceNotFound", "ErrorNonExistentMailbox", "UserNotFound"}
AADSTS = re.compile(r"AADSTS\d+")


def explain(
    exc: BaseException, action: str, *, permission: str = "", mailbox: str = "", resource: str = ""
) -> ConnectorError:
    """A typed error whose text says what failed and what to fix.

    `resource` names what the URL points at below the user (a meeting, a draft): a 404 is
    blamed on the mailbox only when Graph's error code says the user/mailbox is unknown,
    and on the endpoint (graph_url) when the answer is not a Graph error at all."""
    if isinstance(exc, ConnectorError):
        return exc
    # the SDK raised it, so these modules are loaded already: importing them here is free
    from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError
    from azure.identity import CredentialUnavailableError
    from kiota_abstractions.api_error import APIError

    if isinstance(exc, APIError):
        status = exc.response_status_code or 0
        code, message = _odata(exc)
        what = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
        if status in (429, 503, 504):
            wait = _retry_after(exc.response_headers)
            return TransientError(f"{action}: Graph is throttling or unavailable ({what})", retry_after=wait)
        if status >= 500:
            return TransientError(f"{action}: Graph server error ({what})")
        if status == 401:
            if AADSTS.search(message):
                return CredentialRefused(f"{action}: the directory refused the app's credential ({what}); "
                                         "check tenant_id, client_id and the credential")
            return PermanentError(f"{action}: Graph refused the token ({what}); check tenant_id, client_id and the credential")
        if status == 403:
            if "access policy" in message.lower():
                return PermanentError(
                    f"{action}: no Teams application access policy allows this app for {mailbox or 'the organizer'} "
                    f"({what}); run New-CsApplicationAccessPolicy / Grant-CsApplicationAccessPolicy (docs/teams-setup.md)"
                )
            hint = f"the app needs the application permission {permission} with admin consent" if permission else "check the app's permissions"
            if mailbox:
                hint += f", and any Exchange application access policy / RBAC scope must include {mailbox}"
            return PermanentError(f"{action}: access denied ({what}); {hint}")
        if status == 404:
            if not code:
                return PermanentError(f"{action}: Graph endpoint not found ({what}); this is not a Graph answer: "
                                      "check graph_url (e.g. https://graph.microsoft.com/v1.0)")
            if mailbox and code in USER_NOT_FOUND:
                return PermanentError(f"{action}: mailbox or user '{mailbox}' not found ({what})")
            return PermanentError(f"{action}: {resource or 'resource'} not found ({what})")
        return PermanentError(f"{action}: Graph rejected the request ({what})")
    if isinstance(exc, httpx.TimeoutException):
        return TransientError(f"{action}: no answer from Graph in time ({type(exc).__name__})")
    if isinstance(exc, httpx.TransportError):
        return TransientError(f"{action}: cannot reach Graph ({type(exc).__name__}: {exc})")
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return TransientError(f"{action}: cannot reach the login endpoint ({type(exc).__name__})")
    if isinstance(exc, CredentialUnavailableError):
        return PermanentError(f"{action}: no credential available ({_first_line(exc)})")
    if isinstance(exc, ClientAuthenticationError):
        kind = CredentialRefused if AADSTS.search(str(getattr(exc, "message", None) or exc)) else PermanentError
        return kind(
            f"{action}: could not get a token ({_first_line(exc)}); check tenant_id, client_id and the credential"
        )
    return PermanentError(f"{action}: {type(exc).__name__}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


@contextmanager
def graph_errors(action: str, *, permission: str = "", mailbox: str = "", resource: str = "") -> Iterator[None]:
    """Translate whatever the SDK raises inside the block (cancellation passes through)."""
    try:
        yield
    except ConnectorError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure is translated, none swallowed
        error = explain(exc, action, permission=permission, mailbox=mailbox, resource=resource)
        log.debug("%s failed: %s", action, error)
        raise error from exc


class GraphConnector(Connector):
    """start/stop and the `graph()` connection shared by the Graph-based connectors.

    start() only checks what is cheap to check and launches the opening in the background
    (import msgraph in a thread, build the client, preload, first token): the daemon is
    ready at once, and an alarm arriving meanwhile simply waits for the opening to end."""

    config: GraphSettings

    def __init__(self, name: str, config: GraphSettings, services: Services, *, credential: "AsyncTokenCredential | None" = None) -> None:
        super().__init__(name, with_root(config, services.root), services)
        self._credential = credential  # tests inject one; otherwise built from config
        self._graph: GraphConnection | None = None
        self._opening: asyncio.Task[GraphConnection] | None = None
        self._wanted = asyncio.Event()  # set by the first use: open now, do not wait for the daemon to settle

    async def start(self) -> None:
        cred = self.config.credential
        if isinstance(cred, CertificateCredential) and self._credential is None and not os.access(cred.certificate_path, os.R_OK):
            reason = os.strerror(2) if not cred.certificate_path.exists() else "not readable by this user"
            raise PermanentError(f"cannot load the certificate {cred.certificate_path}: {reason}")
        self._opening = asyncio.create_task(self._open(), name=f"open Graph for {self.name}")

    async def _open(self) -> "GraphConnection":
        # Importing msgraph holds the GIL for seconds: let the rest of the start (inputs,
        # listeners) finish first, unless someone needs Graph sooner.
        try:
            await asyncio.wait_for(self._wanted.wait(), OPEN_AFTER)
        except TimeoutError:
            pass
        began = asyncio.get_running_loop().time()
        sdk = await asyncio.to_thread(importlib.import_module, "connectors.graph_sdk")
        graph = sdk.GraphConnection(self.config, self._credential)
        self._graph = graph
        # CPU in a thread (imports) while the loop does the network part (token, connection)
        modules, _ = await asyncio.gather(asyncio.to_thread(sdk.preload, graph), self._first_contact(graph))
        self.log.info("Graph client of %s ready in %.2fs (%d modules preloaded)", self.name,
                      asyncio.get_running_loop().time() - began, modules)
        return graph

    async def _first_contact(self, graph: "GraphConnection") -> None:
        """Get the first token and open the HTTPS connection before the first alarm needs them."""
        try:
            await graph.token_claims()
        except Exception as exc:  # noqa: BLE001 - reported now; the first alarm will try again
            self.log.warning("Graph token not available yet for %s: %s", self.name, explain(exc, "get a token"))
        if self._wanted.is_set():
            return  # a request is waiting: it opens the connection itself
        try:  # the answer does not matter: the open connection (and httpx's async backend) does
            await graph.touch()
        except httpx.HTTPError as exc:
            self.log.info("Graph endpoint of %s not reachable yet: %s", self.name, type(exc).__name__)

    async def warmed(self) -> None:
        """Wait until the background opening is over, without hurrying it (benchmarks, tests)."""
        await self._opened()

    async def stop(self) -> None:
        opening, self._opening = self._opening, None
        if opening is not None and not opening.done():
            opening.cancel()
            await asyncio.gather(opening, return_exceptions=True)
        elif opening is not None and not opening.cancelled():
            opening.exception()  # retrieved: a failed opening was already reported to its callers
        if self._graph is not None:
            await self._graph.close()
            self._graph = None

    async def graph(self) -> "GraphConnection":
        """The open connection, waiting for the background opening if it is still going on."""
        self._wanted.set()
        return await self._opened()

    async def _opened(self) -> "GraphConnection":
        if self._opening is None:
            raise PermanentError(f"connector {self.name} used before start()")
        try:
            await asyncio.shield(self._opening)
        except ConnectorError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. an unreadable certificate: said once per use
            raise explain(exc, f"open the Graph client of {self.name}") from exc
        assert self._graph is not None
        return self._graph
