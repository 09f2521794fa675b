"""Per-tenant API tokens with roles, and the interceptor that checks them and the rate limit.

A token is a random string the service never stores: the tokens file
(``ROUTER_TOKENS_FILE``, YAML or JSON) lists the SHA-256 digest of each, with its tenant and
role, so the file itself is no secret::

    tokens:
      - {sha256: 9f86d0...0f00a08, tenant: acme, role: helpdesk, name: acme-crm}

Clients send ``authorization: Bearer <token>``. No token, or one the file does not list:
UNAUTHENTICATED (the body is not even parsed). A token used for another tenant than its own,
or for a method its role does not grant: PERMISSION_DENIED naming what is missing. Messages
and log lines never contain the token; the log names the caller by the entry's ``name``.
Health and reflection stay open so standard tools and probes work.

``python -m router token --tenant acme --role helpdesk`` mints a token and prints the line
to add to the file. Without a tokens file every caller is trusted (the service says so at
start-up).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import structlog
import yaml

from router import convert
from router.errors import (
    InvalidArgumentError,
    PermissionDeniedError,
    ResourceExhaustedError,
    RouterError,
    UnauthenticatedError,
)
from router.ratelimit import RateLimiter
from router.v1 import admin_pb2, routing_pb2

TOKEN_PREFIX = "rtk_"
MAX_TOKEN_CHARS = 256
_DIGEST = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9._:@/-]{1,64}")
_ENTRY_KEYS = frozenset({"sha256", "tenant", "role", "name"})

OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
"""Services every caller may use, with or without a token."""


def _methods(service: Any, names: Iterable[str] | None = None) -> frozenset[str]:
    """``/package.Service/Method`` paths of ``service`` (a descriptor), all or ``names``."""
    wanted = None if names is None else set(names)
    return frozenset(
        f"/{service.full_name}/{method.name}"
        for method in service.methods
        if wanted is None or method.name in wanted
    )


_ROUTING = routing_pb2.DESCRIPTOR.services_by_name["RoutingService"]
_AGENTS = admin_pb2.DESCRIPTOR.services_by_name["AgentAdminService"]
_POLICY = admin_pb2.DESCRIPTOR.services_by_name["PolicyService"]

ROLES: Mapping[str, frozenset[str]] = {
    "viewer": _methods(_ROUTING, ("GetCall", "GetStats", "Watch"))
    | _methods(_AGENTS, ("GetAgent", "ListAgents"))
    | _methods(_POLICY, ("GetPolicy",)),
    "helpdesk": _methods(_ROUTING),
    "admin": _methods(_ROUTING) | _methods(_AGENTS) | _methods(_POLICY),
}
"""Role -> the RPCs it may call (full method paths), all within the token's own tenant.

- ``viewer``: read-only (dashboards): GetCall, GetStats, Watch, GetAgent, ListAgents,
  GetPolicy.
- ``helpdesk``: the whole ``RoutingService`` (Assign, Accept, Reject, Complete, Release,
  Cancel, RequestCallback, GetCall, GetStats, Watch).
- ``admin``: everything: ``RoutingService``, ``AgentAdminService`` and ``PolicyService``.
"""

log = structlog.get_logger("router.auth")


class TokensFileError(ValueError):
    """The tokens file cannot be read or has an entry the service cannot use."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a token belongs to: a name for the logs, a tenant and a role."""

    name: str
    tenant: str
    role: str


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """One line of the tokens file."""

    sha256: str
    principal: Principal


def digest(token: str) -> str:
    """The hex SHA-256 of ``token`` (UTF-8): what the tokens file stores."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def mint() -> str:
    """A new random token (256 bits, URL-safe)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def entry_line(token: str, tenant: str, role: str, name: str = "") -> str:
    """The tokens-file line (YAML flow mapping, also valid inside a ``tokens:`` list) that
    grants ``token`` to ``tenant`` with ``role``."""
    label = name or f"{tenant}-{role}"
    # Quoted: YAML would read a tenant like 2024, 1.5 or yes as a number or a boolean.
    quoted = ", ".join(
        f"{key}: {json.dumps(value)}"
        for key, value in (("tenant", tenant), ("role", role), ("name", label))
    )
    return f"  - {{sha256: {digest(token)}, {quoted}}}"


def check_entry_fields(tenant: str, role: str, name: str) -> None:
    """Raise ``TokensFileError`` if a tenant, role or name cannot be used in the file."""
    try:
        convert.tenant(tenant)
    except InvalidArgumentError as err:
        raise TokensFileError(err.message) from None
    if role not in ROLES:
        raise TokensFileError(f"role {convert.shown(role)} is not one of {', '.join(ROLES)}")
    if name and not _NAME.fullmatch(name):
        raise TokensFileError("name must be 1-64 letters, digits or ._:@/-")


class _BadKeyError(ValueError):
    """A mapping of the tokens file names a key that is not a string, or one twice (the
    parsers would keep the last)."""


def _pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """A mapping from its key-value pairs, refusing a key given twice."""
    mapping: dict[Any, Any] = {}
    for key, value in pairs:
        if not isinstance(key, str):  # YAML allows any key: a list, a mapping, a number
            raise _BadKeyError(f"key {convert.shown(str(key))} is not a string")
        if key in mapping:
            raise _BadKeyError(f"key {convert.shown(str(key))} is given twice in a mapping")
        mapping[key] = value
    return mapping


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that names a key twice (``{role: viewer,
    role: admin}`` would otherwise be an admin, silently)."""


def _yaml_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    pairs = [
        (loader.construct_object(key, deep=True), loader.construct_object(value, deep=True))
        for key, value in node.value
    ]
    try:
        return _pairs(pairs)
    except _BadKeyError as err:
        raise _BadKeyError(f"line {node.start_mark.line + 1}: {err}") from None


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _yaml_mapping)


def parse_tokens(text: str, *, json_format: bool = False) -> tuple[TokenEntry, ...]:
    """Parse the tokens file's content (``{"tokens": [{sha256, tenant, role, name?}, ...]}``);
    a key named twice in a mapping is refused."""
    try:
        if json_format:
            data = json.loads(text, object_pairs_hook=_pairs)
        else:
            data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader
    except _BadKeyError as err:
        raise TokensFileError(str(err)) from None
    except (ValueError, yaml.YAMLError) as err:
        raise TokensFileError(f"not valid {'JSON' if json_format else 'YAML'}: {err}") from None
    if (
        not isinstance(data, dict)
        or set(data) != {"tokens"}
        or not isinstance(data["tokens"], list)
    ):
        raise TokensFileError('expected one key, "tokens", holding a list of entries')
    entries: list[TokenEntry] = []
    seen: set[str] = set()
    for number, item in enumerate(data["tokens"]):
        where = f"tokens[{number}]"
        if not isinstance(item, dict):
            raise TokensFileError(f"{where}: expected a mapping with sha256, tenant and role")
        unknown = set(map(str, item)) - _ENTRY_KEYS
        if unknown:
            raise TokensFileError(f"{where}: unknown keys {sorted(unknown)} (a typo?)")
        values = {key: item.get(key, "") for key in _ENTRY_KEYS}
        if not all(isinstance(value, str) for value in values.values()):
            raise TokensFileError(f"{where}: sha256, tenant, role and name must be strings")
        sha = values["sha256"].lower()
        if not _DIGEST.fullmatch(sha):
            raise TokensFileError(
                f"{where}.sha256: expected 64 hex digits (the digest, never the token itself)"
            )
        if sha in seen:
            raise TokensFileError(f"{where}.sha256: listed twice")
        seen.add(sha)
        tenant, role, name = values["tenant"], values["role"], values["name"]
        try:
            check_entry_fields(tenant, role, name)
        except TokensFileError as err:
            raise TokensFileError(f"{where}: {err}") from None
        entries.append(TokenEntry(sha, Principal(name or f"{tenant}-{role}", tenant, role)))
    return tuple(entries)


def load_tokens(path: str | Path) -> tuple[TokenEntry, ...]:
    """Read and parse the tokens file at ``path`` (``.json``: JSON, else YAML)."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise TokensFileError(f"cannot read {path}: {err}") from None
    return parse_tokens(text, json_format=path.suffix.lower() == ".json")


class TokenTable:
    """The known tokens, replaceable at run time (``reload`` on SIGHUP)."""

    def __init__(self, entries: Iterable[TokenEntry], path: str | Path | None = None) -> None:
        """``entries`` as parsed; ``path`` is what ``reload`` reads again."""
        self._entries = tuple(entries)
        self._path = path

    @classmethod
    def from_file(cls, path: str | Path) -> TokenTable:
        """Load the table from the tokens file."""
        return cls(load_tokens(path), path)

    def __len__(self) -> int:
        """Entries in the table."""
        return len(self._entries)

    def reload(self) -> int:
        """Read the file again and swap the table in one step; on error keep the old one
        and raise ``TokensFileError``. Returns the number of entries."""
        if self._path is None:
            raise TokensFileError("this table was not loaded from a file")
        self._entries = load_tokens(self._path)
        return len(self._entries)

    def lookup(self, token: str) -> Principal | None:
        """The principal of ``token``, or ``None``. Compares against every entry in
        constant time, so timing says nothing about how close a guess was."""
        wanted = digest(token)
        found: Principal | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.sha256, wanted):
                found = entry.principal
        return found


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The token of the one ``authorization: Bearer <token>`` entry; raises
    ``UnauthenticatedError`` (never quoting what was sent) when it is missing or malformed."""
    values = [value for key, value in metadata or () if key.lower() == "authorization"]
    if not values:
        raise UnauthenticatedError(
            "missing credentials: send metadata 'authorization: Bearer <token>'"
        )
    if len(values) > 1:
        raise UnauthenticatedError("send exactly one 'authorization' metadata entry")
    value = values[0]
    if isinstance(value, bytes):
        raise UnauthenticatedError("the authorization metadata must be text")
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise UnauthenticatedError("the authorization metadata must be 'Bearer <token>'")
    if len(token) > MAX_TOKEN_CHARS or not token.isascii() or not token.isprintable():
        raise UnauthenticatedError("unknown token")
    return token


Behavior = Callable[[Any, grpc.ServicerContext], Any]


class AccessInterceptor(grpc.ServerInterceptor):
    """Authentication, authorization and the per-tenant rate limit, before any handler work.

    Install it inside ``ErrorInterceptor`` (which maps the errors raised here) and outside
    ``DeadlineInterceptor``. With neither tokens nor a limit it changes nothing.
    """

    def __init__(self, tokens: TokenTable | None, limiter: RateLimiter | None) -> None:
        """``tokens=None``: no authentication; ``limiter=None``: no rate limit."""
        self._tokens = tokens
        self._limiter = limiter

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.split("/")[1] in OPEN_SERVICES:
            return handler
        if self._tokens is None and self._limiter is None:
            return handler
        principal: Principal | None = None
        if self._tokens is not None:
            try:
                principal = self._authenticate(handler_call_details.invocation_metadata)
            except UnauthenticatedError as err:
                return _refuse(handler, err)
        if handler.request_streaming:  # none in this API; refused rather than unchecked
            return _refuse(handler, PermissionDeniedError(f"{method}: not allowed"))
        return _guarded(handler, self._checker(method, principal))

    def _authenticate(self, metadata: Any) -> Principal:
        assert self._tokens is not None
        principal = self._tokens.lookup(bearer_token(metadata))
        if principal is None:
            raise UnauthenticatedError("unknown token")
        return principal

    def _checker(self, method: str, principal: Principal | None) -> Callable[[Any], None]:
        limiter = self._limiter

        def check(request: Any) -> None:
            tenant = getattr(request, "tenant", "")
            if principal is not None:
                structlog.contextvars.bind_contextvars(
                    principal=principal.name, role=principal.role
                )
                _authorize(method, principal, tenant)
            if limiter is not None and _valid_tenant(tenant):
                wait_s = limiter.acquire(tenant)
                if wait_s > 0:
                    raise ResourceExhaustedError(
                        f"tenant {tenant}: rate limit of {limiter.rate:g} requests/s "
                        f"(burst {limiter.burst:g}) reached; retry in {wait_s:.3f}s",
                        retry_after_s=wait_s,
                        own_quota=True,
                    )

        return check


def _authorize(method: str, principal: Principal, tenant: object) -> None:
    """Raise ``PermissionDeniedError`` naming what is missing."""
    if method not in ROLES[principal.role]:
        needed = [role for role, methods in ROLES.items() if method in methods]
        missing = f"role {' or '.join(needed)}" if needed else "a role that grants it"
        raise PermissionDeniedError(
            f"{method.lstrip('/')}: needs {missing}; this token has role {principal.role}"
        )
    if tenant != principal.tenant:
        shown = convert.shown(tenant) if isinstance(tenant, str) else "(none)"
        raise PermissionDeniedError(
            f"tenant: this token is for tenant {principal.tenant!r} only, not {shown}"
        )


def _valid_tenant(tenant: object) -> bool:
    """Invalid tenants get no bucket (and INVALID_ARGUMENT from the servicer)."""
    if not isinstance(tenant, str):
        return False
    try:
        convert.tenant(tenant)
    except InvalidArgumentError:
        return False
    return True


def _refuse(
    handler: grpc.RpcMethodHandler[Any, Any], error: RouterError
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same kind that raises ``error`` without parsing the request."""

    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        raise error

    def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        raise error
        yield  # a generator, like the handler it replaces

    def aborting(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(error.code, error.message)

    serializer = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary, response_serializer=serializer)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream, response_serializer=serializer)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(aborting, response_serializer=serializer)
    return grpc.stream_stream_rpc_method_handler(aborting, response_serializer=serializer)


def _guarded(
    handler: grpc.RpcMethodHandler[Any, Any], check: Callable[[Any], None]
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with ``check(request)`` run first (after the request is parsed)."""
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _unary(check, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _stream(check, handler.unary_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


def _unary(check: Callable[[Any], None], inner: Behavior) -> Behavior:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        check(request)
        return inner(request, context)

    return wrapped


def _stream(check: Callable[[Any], None], inner: Behavior) -> Callable[..., Iterator[Any]]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        check(request)
        yield from inner(request, context)

    return wrapped
