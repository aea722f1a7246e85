"""The AWS query protocol, for ELBv2: form-encoded requests in, XML responses out.

One request, in order::

    signature (the ECS path's authenticate: SigV4 + KeyRing)  ->  form body  ->  Action, Version
      ->  decode the flat form against the operation's input shape (typed: lists, ints, booleans)
      ->  validate against botocore's elbv2 model  ->  use case (services.elb_registry)
      ->  <ActionResponse xmlns=...><ActionResult>...</ActionResult><ResponseMetadata>...

Decoding follows what botocore's query serializer writes: structure members by name, lists as
``Name.member.N`` (an empty list as ``Name=``), maps as ``Name.entry.N.key``/``.value``; scalars are
strings, converted by their shape's type (a value that does not convert is left a string and the
model walker rejects it with a field path). Members the model does not know are dropped.

Errors, mapped here and nowhere else, by class::

    ElbError (domain/elb_errors.py)          its code, 400, Type Sender
    InvalidParameter (the model walker)      ValidationError, 400
    MissingAuthenticationToken               MissingAuthenticationToken, 403
    UnrecognizedClient                       InvalidClientTokenId, 403
    InvalidSignature                         SignatureDoesNotMatch, 403
    IncompleteSignature                      IncompleteSignature, 400
    UnknownOperation                         InvalidAction, 400
    AccessDenied                             AccessDenied, 403
    anything else                            InternalFailure, 500, Type Receiver
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from botocore.model import ListShape, MapShape, OperationModel, Shape, StructureShape
from starlette.requests import Request
from starlette.responses import Response

from dockyard.api import validation
from dockyard.api.authorization import authorize
from dockyard.domain.elb_errors import ElbError
from dockyard.domain.errors import (
    AccessDenied,
    DockyardError,
    IncompleteSignature,
    InvalidParameter,
    InvalidSignature,
    MissingAuthenticationToken,
    UnknownOperation,
    UnrecognizedClient,
)
from dockyard.services.context import Env, RequestContext
from dockyard.services.elb_registry import load_elb

log = logging.getLogger("dockyard.api")

SERVICE = "elbv2"
SIGNING_NAME = "elasticloadbalancing"
API_VERSION = "2015-12-01"
XML_CONTENT_TYPE = "text/xml"

Tree = dict[str, Any]  # a parsed form: nested dicts keyed by name segments; leaves are strings

_PROTOCOL_CODES: list[tuple[type[DockyardError], str, int]] = [
    (InvalidParameter, "ValidationError", 400),
    (MissingAuthenticationToken, "MissingAuthenticationToken", 403),
    (UnrecognizedClient, "InvalidClientTokenId", 403),
    (InvalidSignature, "SignatureDoesNotMatch", 403),
    (IncompleteSignature, "IncompleteSignature", 400),
    (UnknownOperation, "InvalidAction", 400),
    (AccessDenied, "AccessDenied", 403),
]


# ---- requests ------------------------------------------------------------------------------------


def parse_form(body: str) -> Tree:
    """``a.b.1=x&c=`` -> ``{"a": {"b": {"1": "x"}}, "c": ""}``. A deeper key wins over a leaf."""
    tree: Tree = {}
    for name, value in parse_qsl(body, keep_blank_values=True):
        node = tree
        parts = name.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        if not isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = value
    return tree


def _indexed(node: Any) -> list[Any]:
    if not isinstance(node, dict):
        return []
    items = [(int(k), v) for k, v in node.items() if k.isdigit()]
    return [v for _, v in sorted(items)]


def decode(shape: Shape, node: Any) -> Any:
    """A form subtree as the JSON-like value ``validation.validate`` checks."""
    if isinstance(shape, StructureShape):
        if not isinstance(node, dict):
            return node if node != "" else {}
        out: dict[str, Any] = {}
        for name, member in shape.members.items():
            child = node.get(member.serialization.get("name", name))
            if child is not None:
                out[name] = decode(member, child)
        return out
    if isinstance(shape, ListShape):
        if node == "":
            return []
        if not isinstance(node, dict):
            return node
        member_name = shape.member.serialization.get("name", "member")
        return [decode(shape.member, item) for item in _indexed(node.get(member_name))]
    if isinstance(shape, MapShape):
        if node == "" or not isinstance(node, dict):
            return {} if node == "" else node
        key_name = shape.key.serialization.get("name", "key")
        value_name = shape.value.serialization.get("name", "value")
        entries = _indexed(node.get("entry"))
        return {
            decode(shape.key, e.get(key_name)): decode(shape.value, e.get(value_name))
            for e in entries
            if isinstance(e, dict) and e.get(key_name) is not None
        }
    return _scalar(shape.type_name, node)


def _scalar(kind: str, text: Any) -> Any:
    if not isinstance(text, str):
        return text
    if kind in ("integer", "long"):
        stripped = text.strip()
        return int(stripped) if stripped.lstrip("-").isdigit() else text
    if kind in ("double", "float"):
        try:
            return float(text)
        except ValueError:
            return text
    if kind == "boolean":
        return {"true": True, "false": False}.get(text.lower(), text)
    return text


# ---- responses -----------------------------------------------------------------------------------


def _timestamp(value: Any) -> str:
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return str(value)


def _write(shape: Shape, value: Any, name: str, out: list[str]) -> None:
    if isinstance(shape, StructureShape):
        out.append(f"<{name}>")
        for member_name, member in shape.members.items():
            item = value.get(member_name) if isinstance(value, dict) else None
            if item is not None:
                _write(member, item, member.serialization.get("name", member_name), out)
        out.append(f"</{name}>")
    elif isinstance(shape, ListShape):
        member_name = shape.member.serialization.get("name", "member")
        out.append(f"<{name}>")
        for item in value:
            _write(shape.member, item, member_name, out)
        out.append(f"</{name}>")
    elif isinstance(shape, MapShape):
        out.append(f"<{name}>")
        for k, v in value.items():
            out.append("<entry>")
            _write(shape.key, k, "key", out)
            _write(shape.value, v, "value", out)
            out.append("</entry>")
        out.append(f"</{name}>")
    elif shape.type_name == "boolean":
        out.append(f"<{name}>{'true' if value else 'false'}</{name}>")
    elif shape.type_name == "timestamp":
        out.append(f"<{name}>{_timestamp(value)}</{name}>")
    else:
        out.append(f"<{name}>{escape(str(value))}</{name}>")


def render_response(operation: OperationModel, result: dict[str, Any], request_id: str) -> bytes:
    namespace = operation.metadata.get("xmlNamespace", "")
    name = operation.name
    out = [f'<{name}Response xmlns="{namespace}">']
    shape = operation.output_shape
    wrapper = f"{name}Result"
    if shape is not None:
        wrapper = shape.serialization.get("resultWrapper", wrapper)
        _write(shape, result, wrapper, out)
    else:
        out.append(f"<{wrapper}/>")
    out.append(f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{name}Response>")
    return "".join(out).encode()


def error_code(exc: DockyardError) -> tuple[str, int]:
    if isinstance(exc, ElbError):
        return exc.code, exc.status
    for cls, code, status in _PROTOCOL_CODES:
        if isinstance(exc, cls):
            return code, status
    return "InternalFailure", 500


def render_error(code: str, message: str, status: int, request_id: str) -> bytes:
    kind = "Sender" if status < 500 else "Receiver"
    namespace = validation.service_model(SERVICE).metadata.get("xmlNamespace", "")
    return (
        f'<ErrorResponse xmlns="{namespace}"><Error><Type>{kind}</Type><Code>{escape(code)}</Code>'
        f"<Message>{escape(message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    ).encode()


# ---- the endpoint --------------------------------------------------------------------------------

Authenticate = Callable[[Request, dict[str, str], bytes], Awaitable[Any]]


class QueryApi:
    """Handles one ELBv2 query-protocol request end to end."""

    def __init__(self, env: Env, authenticate: Authenticate, account_id: str) -> None:
        self.env = env
        self.authenticate = authenticate
        self.account_id = account_id
        self.handlers = load_elb()
        self.model = validation.service_model(SERVICE)

    async def respond(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        headers = {"x-amzn-RequestId": request_id}
        try:
            body = await self.handle(request, request_id)
            return Response(body, media_type=XML_CONTENT_TYPE, headers=headers)
        except DockyardError as exc:
            code, status = error_code(exc)
            if status >= 500:
                log.error("request %s failed: %s", request_id, exc.message)
            body = render_error(code, exc.message, status, request_id)
            return Response(body, status_code=status, media_type=XML_CONTENT_TYPE, headers=headers)
        except Exception:
            log.exception("request %s: unexpected server error", request_id)
            body = render_error(
                "InternalFailure", "An internal error occurred; see the server log.", 500, request_id
            )
            return Response(body, status_code=500, media_type=XML_CONTENT_TYPE, headers=headers)

    async def handle(self, request: Request, request_id: str) -> bytes:
        raw = await request.body()
        lowered = {k.lower(): v for k, v in request.headers.items()}
        caller = await self.authenticate(request, lowered, raw)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidParameter("The request body is not UTF-8 form data.") from None
        if request.url.query:
            text = request.url.query + ("&" + text if text else "")
        form = parse_form(text)
        action = form.pop("Action", None)
        version = form.pop("Version", API_VERSION)
        if not isinstance(action, str) or not action:
            raise UnknownOperation("The request must contain the parameter Action.")
        if version != API_VERSION:
            raise UnknownOperation(
                f"Version {str(version)[:40]!r} is not supported: Dockyard speaks ELBv2 ({API_VERSION}) only."
            )
        if action not in self.model.operation_names:
            raise UnknownOperation(f"The action {action[:200]} is not valid for this web service.")
        handler = self.handlers.get(action)
        if handler is None:
            raise UnknownOperation(f"Dockyard does not implement {action} yet.")
        authorize(caller.principal, f"elasticloadbalancing:{action}")
        operation = self.model.operation_model(action)
        params = decode(operation.input_shape, form) if operation.input_shape is not None else {}
        checked = validation.validate(action, params, SERVICE)
        ctx = RequestContext(
            account_id=self.account_id,
            region=caller.region,
            principal=caller.principal,
            request_id=request_id,
        )
        result = await handler(self.env, ctx, checked)
        return render_response(operation, result, request_id)
