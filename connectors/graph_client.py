"""Microsoft Graph plumbing shared by the Teams, Graph mail and check code.

Builds the credential (secret, certificate, managed identity or the default chain),
the msgraph-sdk client with a retry policy that never sleeps longer than the config
allows, and turns SDK/HTTP/identity exceptions into `TransientError`/`PermanentError`
whose text names the cause (which permission, which mailbox) and never a secret.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import httpx
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError
from azure.identity import CredentialUnavailableError
from kiota_abstractions.api_error import APIError
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_http.kiota_client_factory import KiotaClientFactory
from kiota_http.middleware import RetryHandler
from kiota_http.middleware.options import RetryHandlerOption
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph_core import GraphClientFactory
from pydantic import Field, SecretStr, model_validator

from connectors.base import Connector, Services
from crisisbot.config.types import Seconds, Strict
from crisisbot.errors import ConnectorError, PermanentError, TransientError

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


def build_credential(settings: GraphSettings) -> Any:
    """An azure-identity async credential; it caches and refreshes tokens itself."""
    from azure.identity import aio

    cred = settings.credential
    common: dict[str, Any] = {"authority": settings.authority_host}
    if settings.ca_bundle:
        common["connection_verify"] = str(settings.ca_bundle)
    if settings.authority_host not in {login for _, login in CLOUDS.values()}:
        common["disable_instance_discovery"] = True  # never ask the public cloud about a private host
    if isinstance(cred, SecretCredential):
        return aio.ClientSecretCredential(
            settings.tenant_id, settings.client_id, cred.client_secret.get_secret_value(), **common
        )
    if isinstance(cred, CertificateCredential):
        password = cred.certificate_password.get_secret_value() if cred.certificate_password else None
        try:
            return aio.CertificateCredential(
                settings.tenant_id, settings.client_id, str(cred.certificate_path), password=password,
                send_certificate_chain=cred.send_certificate_chain, **common,
            )
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or "not a PEM/PKCS#12 certificate with its private key, or wrong password"
            raise PermanentError(f"cannot load the certificate {cred.certificate_path}: {reason}") from None
    if isinstance(cred, ManagedIdentity):
        return aio.ManagedIdentityCredential(client_id=cred.client_id)
    return aio.DefaultAzureCredential(authority=settings.authority_host)


class AtMostOnce(RetryHandlerOption):
    """Per-request retry option for a POST that must not be repeated (sendMail, send).

    A 429 means Graph did not process the request, so it is retried as usual; after a
    503/504 the message may or may not have gone out, so the answer goes back to the
    caller instead of being resent (kiota's handler would resend any POST)."""


class CredentialRefused(PermanentError):
    """The directory refused the app's credential (an AADSTS error): retrying the same
    connector cannot help, the next one in the chain should take over at once."""


class _BudgetRetryHandler(RetryHandler):
    """kiota's retry handler, but a wait longer than `max_wait` is not slept: the 429/503
    goes back to the caller at once, as a TransientError carrying Retry-After."""

    def __init__(self, options: RetryHandlerOption, max_wait: float) -> None:
        super().__init__(options)
        self.max_wait = max_wait

    def get_delay_time(self, retry_count: int, response: Any = None, delay: float = 0.0) -> float:
        wait = super().get_delay_time(retry_count, response, delay)
        return wait if wait <= self.max_wait else RetryHandlerOption.MAX_DELAY

    def should_retry(self, request: httpx.Request, options: RetryHandlerOption, response: httpx.Response) -> bool:
        if isinstance(options, AtMostOnce) and response.status_code != 429:
            return False
        return super().should_retry(request, options, response)


class GraphConnection:
    """One credential + one HTTP pool + the SDK client, opened and closed with the connector."""

    def __init__(self, settings: GraphSettings, credential: Any | None = None) -> None:
        self.settings = settings
        self.credential = credential if credential is not None else build_credential(settings)
        self._owns_credential = credential is None
        verify: Any = ssl.create_default_context(cafile=str(settings.ca_bundle)) if settings.ca_bundle else True
        timeout = httpx.Timeout(settings.request_timeout)
        # msgraph-core's transport wrapper does not forward aclose(): keep the pool to close it ourselves
        self._pool = httpx.AsyncHTTPTransport(verify=verify)
        self.http = httpx.AsyncClient(base_url=settings.graph_url or "", timeout=timeout, transport=self._pool)
        self.raw = httpx.AsyncClient(timeout=timeout, verify=verify)  # upload URLs: no bearer token
        options = RetryHandlerOption(delay=0.0, max_retries=settings.max_retries)
        self.at_most_once = AtMostOnce(delay=0.0, max_retries=settings.max_retries)
        middleware = [
            _BudgetRetryHandler(options, settings.max_retry_wait) if isinstance(m, RetryHandler) else m
            for m in KiotaClientFactory.get_default_middleware(None)
        ]
        GraphClientFactory.create_with_custom_middleware(middleware, client=self.http)
        auth = AzureIdentityAuthenticationProvider(
            self.credential, scopes=[settings.scope], allowed_hosts=[urlsplit(settings.graph_url or "").hostname or ""]
        )
        adapter = GraphRequestAdapter(auth, self.http)
        adapter.base_url = settings.graph_url or ""
        self.client = GraphServiceClient(request_adapter=adapter)

    async def close(self) -> None:
        await self.http.aclose()
        await self._pool.aclose()
        await self.raw.aclose()
        if self._owns_credential:
            await self.credential.close()

    async def token_claims(self) -> dict[str, Any]:
        """Claims of the current app token (unverified: only to tell the admin what is granted)."""
        token = (await self.credential.get_token(self.settings.scope, enable_cae=True)).token  # same cache entry as kiota's
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _retry_after(headers: Any) -> float | None:
    """Retry-After in seconds from kiota's response headers (httpx.Headers: case-insensitive)."""
    value = headers.get("retry-after") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _odata(exc: APIError) -> tuple[str, str]:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) or ""
    message = getattr(error, "message", None) or exc.message or ""
    return code, message


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
    """start/stop and the `graph` handle shared by the Graph-based connectors."""

    config: GraphSettings

    def __init__(self, name: str, config: GraphSettings, services: Services, *, credential: Any | None = None) -> None:
        super().__init__(name, with_root(config, getattr(services, "root", None)), services)
        self._credential = credential  # tests inject one; otherwise built from config
        self._graph: GraphConnection | None = None

    async def start(self) -> None:
        self._graph = GraphConnection(self.config, self._credential)

    async def stop(self) -> None:
        if self._graph is not None:
            await self._graph.close()
            self._graph = None

    @property
    def graph(self) -> GraphConnection:
        if self._graph is None:
            raise PermanentError(f"connector {self.name} used before start()")
        return self._graph
