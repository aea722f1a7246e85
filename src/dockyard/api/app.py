"""The thin AWS protocol layer: SigV4 check, X-Amz-Target dispatch, model validation, error mapping.

One request, in order::

    signature (sigv4.verify)  ->  principal (KeyRing)  ->  operation (X-Amz-Target)
      ->  JSON body  ->  authorize(principal, operation)  ->  validate against botocore's model
      ->  use case (services.operations)  ->  JSON response

Every ``DockyardError`` becomes ``{"__type": code, "message": ...}`` with its HTTP status, here and
nowhere else; anything unexpected becomes ``ServerException`` (500) and is logged with its request id.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dockyard.api import agent_session, sigv4, validation
from dockyard.api.authorization import authorize
from dockyard.api.calls import AGENT_TARGET_PREFIX, JSON_CONTENT_TYPE, Caller, lowered, new_request_id
from dockyard.api.credentials import KeyRing
from dockyard.api.ec2_protocol import SIGNING_NAME as EC2_SIGNING_NAME
from dockyard.api.ec2_protocol import Ec2Api
from dockyard.api.query_protocol import SIGNING_NAME, QueryApi
from dockyard.domain.errors import (
    DockyardError,
    MissingAuthenticationToken,
    SerializationError,
    UnknownOperation,
    UnrecognizedClient,
    UnsupportedFeature,
)
from dockyard.services.context import CREDENTIALS, Env, RequestContext
from dockyard.services.operations import load_all

log = logging.getLogger("dockyard.api")

ECS_TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113."
_CREDENTIAL = re.compile(r"Credential=([^/,\s]{1,256})/")
_JSON_HEADERS = [(b"content-type", JSON_CONTENT_TYPE.encode())]


@dataclass
class ApiConfig:
    account_id: str = "000000000000"
    signature_window_seconds: float = 900.0


def _error(exc: DockyardError, request_id: str) -> Response:
    status, body, headers = _error_parts(exc, request_id)
    return Response(body, status_code=status, media_type=JSON_CONTENT_TYPE, headers=dict(headers))


def _error_parts(exc: DockyardError, request_id: str) -> tuple[int, bytes, list[tuple[str, str]]]:
    body = orjson.dumps({"__type": exc.code, "message": exc.message})
    return exc.status, body, [("x-amzn-RequestId", request_id), ("x-amzn-ErrorType", exc.code)]


class EcsApi:
    """Handles one ECS JSON request end to end."""

    def __init__(self, env: Env, keyring: KeyRing, config: ApiConfig) -> None:
        self.env = env
        self.keyring = keyring
        self.config = config
        self.handlers = load_all()
        self.model_operations = validation.operation_names("ecs")
        env.extras.setdefault(CREDENTIALS, keyring)  # RegisterContainerInstance issues agent keys

    async def respond(self, request: Request) -> Response:
        status, body, headers = await self.answer(
            request.method,
            request.scope.get("raw_path", request.url.path.encode()),
            request.scope.get("query_string", b""),
            {k.lower(): v for k, v in request.headers.items()},
            await request.body(),
        )
        return Response(body, status_code=status, media_type=JSON_CONTENT_TYPE, headers=dict(headers))

    async def answer(
        self, method: str, raw_path: bytes, query: bytes, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, list[tuple[str, str]]]:
        """One request from its parts (``headers``: lower-case names): status, JSON body, headers."""
        request_id = new_request_id()
        status, payload = await self.outcome(
            self.handle(method, raw_path, query, headers, body, request_id), request_id
        )
        out = [("x-amzn-RequestId", request_id)]
        if status != 200:
            out.append(("x-amzn-ErrorType", payload["__type"]))
        return status, orjson.dumps(payload), out

    @staticmethod
    async def outcome(
        call: Coroutine[Any, Any, dict[str, Any]], request_id: str
    ) -> tuple[int, dict[str, Any]]:
        """Run one operation: 200 and its answer, or an error's status and ``{"__type", "message"}``."""
        try:
            return 200, await call
        except DockyardError as exc:
            if exc.status >= 500:
                log.error("request %s failed: %s", request_id, exc.message)
            return exc.status, {"__type": exc.code, "message": exc.message}
        except Exception:
            log.exception("request %s: unexpected server error", request_id)
            internal = DockyardError("An internal error occurred; see the server log.")
            return internal.status, {"__type": internal.code, "message": internal.message}

    async def handle(
        self,
        method: str,
        raw_path: bytes,
        query: bytes,
        headers: dict[str, str],
        body: bytes,
        request_id: str,
    ) -> dict[str, Any]:
        caller = await self.verify(method, raw_path, query, headers, body)
        operation, modelled = self.operation_of(headers.get("x-amz-target", ""))
        try:
            params = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError as e:
            raise SerializationError(f"Request body is not valid JSON: {e}") from e
        if not isinstance(params, dict):
            raise SerializationError("Request body must be a JSON object.")
        return await self.call(caller, operation, modelled, params, request_id)

    async def call(
        self, caller: Caller, operation: str, modelled: bool, params: dict[str, Any], request_id: str
    ) -> dict[str, Any]:
        """One operation (``operation_of``) for an already authenticated ``caller`` (a signed
        request, or a call on an agent session): authorization, validation, use case."""
        authorize(caller.principal, operation)
        handler = self.handlers.get(operation)
        if handler is None:
            raise UnsupportedFeature(f"Dockyard does not implement {operation} yet.")
        request_params = validation.validate(operation, params) if modelled else params
        ctx = RequestContext(
            account_id=self.config.account_id,
            region=caller.region,
            principal=caller.principal,
            request_id=request_id,
        )
        return await handler(self.env, ctx, request_params)

    def operation_of(self, target: str) -> tuple[str, bool]:
        """The operation an X-Amz-Target names, and whether botocore's ECS model describes it."""
        if target.startswith(ECS_TARGET_PREFIX):
            operation = target[len(ECS_TARGET_PREFIX) :]
            if operation in self.model_operations:
                return operation, True
            raise UnknownOperation(f"Unknown operation {operation[:200]!r}")
        if target.startswith(AGENT_TARGET_PREFIX) and target in self.handlers:
            return target, False  # registered under its full target; the use case validates
        raise UnknownOperation(f"Unknown operation {target[:200]!r}")

    async def authenticate(self, request: Request, headers: dict[str, str], body: bytes) -> Caller:
        """SigV4 and the KeyRing for the other protocols (``form_protocol``)."""
        raw_path = request.scope.get("raw_path", request.url.path.encode())
        query = request.scope.get("query_string", b"")
        return await self.verify(request.method, raw_path, query, headers, body)

    async def verify(
        self,
        method: str,
        raw_path: bytes,
        query: bytes,
        headers: dict[str, str],
        body: bytes,
        expected_service: str | None = None,
    ) -> Caller:
        auth = headers.get("authorization")
        if not auth:
            raise MissingAuthenticationToken("Missing Authentication Token")
        m = _CREDENTIAL.search(auth)
        issued = await self.keyring.lookup(m.group(1)) if m else None
        if m and issued is None:
            raise UnrecognizedClient("The security token included in the request is invalid.")
        signed = sigv4.verify(
            method,
            raw_path.decode("latin-1").split("?", 1)[0],
            query.decode("latin-1"),
            headers,
            body,
            lookup_secret=lambda key_id: (
                issued.secret_access_key if issued and key_id == issued.access_key_id else None
            ),
            now=self.env.clock.time(),
            window_seconds=self.config.signature_window_seconds,
            expected_service=expected_service,
        )
        assert issued is not None
        return Caller(issued.principal, signed.region)


def _signed_for(request: Request, name: str) -> bool:
    """Signed (header or presigned query) with the SigV4 signing name ``name``."""
    scope = f"/{name}/aws4_request"
    auth = request.headers.get("authorization")
    if auth is not None:
        return scope in auth
    return request.query_params.get("X-Amz-Credential", "").endswith(scope)


def _is_query(request: Request) -> bool:
    """Signed for ``elasticloadbalancing`` (header or presigned query), or unsigned form data."""
    scope = f"/{SIGNING_NAME}/aws4_request"
    auth = request.headers.get("authorization")
    if auth is not None:
        return scope in auth
    credential = request.query_params.get("X-Amz-Credential")
    if credential is not None:
        return credential.endswith(scope)
    return request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")


async def health(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(
    env: Env,
    keyring: KeyRing,
    config: ApiConfig,
    background: list[Callable[[], Coroutine[Any, Any, None]]] | None = None,
) -> FastPath:
    """The ASGI app. ``background`` coroutines (controllers, retention) run for the app's lifetime."""
    import asyncio

    api = EcsApi(env, keyring, config)
    elb = QueryApi(env, api.authenticate, config.account_id)
    ec2 = Ec2Api(env, api.authenticate, config.account_id)

    async def dispatch(request: Request) -> Response:
        """POST / by protocol: SigV4 scope ``elasticloadbalancing`` -> ELBv2 query, else ECS JSON."""
        if _signed_for(request, EC2_SIGNING_NAME):
            return await ec2.respond(request)
        return await (elb if _is_query(request) else api).respond(request)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(job()) for job in background or ()]
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(UnknownOperation(f"No operation at {request.method} {request.url.path[:200]}"), "-")

    app = Starlette(
        exception_handlers={404: not_found, 405: not_found},
        routes=[
            Route("/", dispatch, methods=["POST"]),
            Route("/_dockyard/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    return FastPath(app, dispatch, api)


class FastPath:
    """``POST /`` straight to the protocol handlers; everything else (lifespan, health, 404) to Starlette.

    The handlers map every error to an AWS response themselves, so the API's hot path skips
    Starlette's routing and its two exception middlewares (measured: about a fifth of a request).
    A header-signed ECS JSON request (the SDKs' and the agents' calls) skips Starlette's Request and
    Response objects too: headers, body and answer go between the ASGI messages and ``EcsApi.answer``
    directly. A WebSocket at ``agent_session.PATH`` is an agent session.
    """

    def __init__(
        self,
        app: Starlette,
        handler: Callable[[Request], Coroutine[Any, Any, Response]],
        ecs: EcsApi | None = None,
    ) -> None:
        self.app = app
        self.handler = handler
        self.ecs = ecs
        self.sessions = (
            agent_session.Sessions(ecs, window_seconds=ecs.config.signature_window_seconds)
            if ecs is not None
            else None
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and self.sessions is not None and scope["path"] == agent_session.PATH:
            await self.sessions.serve(scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/":
            if self.ecs is not None:
                headers = lowered(scope["headers"])
                auth = headers.get("authorization")
                if auth is not None and _ecs_scope(auth):
                    await self._ecs(scope, receive, send, self.ecs, headers)
                    return
            response = await self.handler(Request(scope, receive))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    async def _ecs(scope: Any, receive: Any, send: Any, api: EcsApi, headers: dict[str, str]) -> None:
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        status, answer, extra = await api.answer(
            "POST", scope.get("raw_path") or b"/", scope.get("query_string", b""), headers, body
        )
        out = [*_JSON_HEADERS, (b"content-length", str(len(answer)).encode())]
        out += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": answer})


_OTHER_SCOPES = (f"/{EC2_SIGNING_NAME}/aws4_request", f"/{SIGNING_NAME}/aws4_request")


def _ecs_scope(auth: str) -> bool:
    """A header-signed request that is neither EC2's nor ELBv2's (``dispatch`` decides alike)."""
    return not any(scope in auth for scope in _OTHER_SCOPES)
