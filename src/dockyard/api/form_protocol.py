"""What AWS's two form-encoded protocols share: ELBv2's ``query`` (``query_protocol.py``) and EC2's
own ``ec2`` (``ec2_protocol.py``). Requests are ``application/x-www-form-urlencoded`` with ``Action``
and ``Version``; responses and errors are XML; the protocols differ only in how lists are spelled,
how a response is wrapped and which error codes they use.

A protocol is a ``FormProtocol`` value (its functions); ``FormApi`` runs one request, in order::

    signature (the ECS path's authenticate: SigV4 + KeyRing)  ->  form body (+ URL query)
      ->  Action, Version (the protocol's ``check_version``)  ->  handler  ->  IAM-style authorization
      ->  decode the flat form against the operation's input shape (the protocol's ``decode``)
      ->  validate against botocore's model  ->  use case  ->  ``render_response``

Errors are mapped by the protocol's ``error_code`` and written by its ``render_error``; anything not
a ``DockyardError`` is logged and answered as the protocol's internal error (HTTP 500).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from botocore.model import ListShape, MapShape, OperationModel, Shape, StructureShape
from starlette.requests import Request
from starlette.responses import Response

from dockyard.api import validation
from dockyard.api.authorization import authorize
from dockyard.domain.errors import DockyardError, InvalidParameter, UnknownOperation
from dockyard.services.context import Env, RequestContext
from dockyard.services.operations import Handler

log = logging.getLogger("dockyard.api")

XML_CONTENT_TYPE = "text/xml"
INTERNAL_MESSAGE = "An internal error occurred; see the server log."

Tree = dict[str, Any]  # a parsed form: nested dicts keyed by name segments; leaves are strings
Authenticate = Callable[[Request, dict[str, str], bytes], Awaitable[Any]]


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


def indexed(node: Any) -> list[Any]:
    """The values of ``{"1": a, "2": b}`` in index order (non-numeric keys ignored)."""
    if not isinstance(node, dict):
        return []
    items = [(int(k), v) for k, v in node.items() if k.isdigit()]
    return [v for _, v in sorted(items)]


def scalar(kind: str, text: Any) -> Any:
    """A form string converted by its shape's type; one that does not convert stays a string, so the
    model walker rejects it with a field path."""
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


def timestamp(value: Any) -> str:
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return str(value)


def write_xml(
    shape: Shape, value: Any, name: str, out: list[str], item_name: Callable[[ListShape], str]
) -> None:
    """``value`` as XML element ``name`` per ``shape``; ``item_name`` spells a list's elements."""
    if isinstance(shape, StructureShape):
        out.append(f"<{name}>")
        for member_name, member in shape.members.items():
            item = value.get(member_name) if isinstance(value, dict) else None
            if item is not None:
                write_xml(member, item, member.serialization.get("name", member_name), out, item_name)
        out.append(f"</{name}>")
    elif isinstance(shape, ListShape):
        element = item_name(shape)
        out.append(f"<{name}>")
        for item in value:
            write_xml(shape.member, item, element, out, item_name)
        out.append(f"</{name}>")
    elif isinstance(shape, MapShape):
        out.append(f"<{name}>")
        for k, v in value.items():
            out.append("<entry>")
            write_xml(shape.key, k, "key", out, item_name)
            write_xml(shape.value, v, "value", out, item_name)
            out.append("</entry>")
        out.append(f"</{name}>")
    elif shape.type_name == "boolean":
        out.append(f"<{name}>{'true' if value else 'false'}</{name}>")
    elif shape.type_name == "timestamp":
        out.append(f"<{name}>{timestamp(value)}</{name}>")
    else:
        out.append(f"<{name}>{escape(str(value))}</{name}>")


def error_by_class(
    exc: DockyardError, table: list[tuple[type[DockyardError], str, int]]
) -> tuple[str, int] | None:
    for cls, code, status in table:
        if isinstance(exc, cls):
            return code, status
    return None


# ---- the endpoint --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FormProtocol:
    """One AWS service's form protocol: what ``FormApi`` needs to know of it."""

    service: str  # botocore's service name (the model validated against)
    iam_prefix: str  # "ec2", "elasticloadbalancing": what ``authorize`` sees before ":Action"
    internal_code: str  # the protocol's code for an unexpected server error
    decode: Callable[[Shape, Any], Any]  # a form subtree as the JSON-like value the model checks
    render_response: Callable[[OperationModel, dict[str, Any], str], bytes]  # (operation, result, id)
    error_code: Callable[[DockyardError], tuple[str, int]]  # (code, HTTP status)
    render_error: Callable[[str, str, int, str], bytes]  # (code, message, status, request id)
    check_version: Callable[[Any], None] = lambda version: None  # raises UnknownOperation
    request_id_header: bool = False  # answer with an x-amzn-RequestId header


class FormApi:
    """Handles one form-protocol request end to end."""

    def __init__(
        self,
        protocol: FormProtocol,
        env: Env,
        authenticate: Authenticate,
        account_id: str,
        handlers: Mapping[str, Handler],
    ) -> None:
        self.protocol = protocol
        self.env = env
        self.authenticate = authenticate
        self.account_id = account_id
        self.handlers = handlers
        self.model = validation.service_model(protocol.service)

    async def respond(self, request: Request) -> Response:
        p = self.protocol
        request_id = str(uuid.uuid4())
        headers = {"x-amzn-RequestId": request_id} if p.request_id_header else None
        try:
            body, status = await self.handle(request, request_id), 200
        except DockyardError as exc:
            code, status = p.error_code(exc)
            if status >= 500:
                log.error("request %s failed: %s", request_id, exc.message)
            body = p.render_error(code, exc.message, status, request_id)
        except Exception:
            log.exception("request %s: unexpected server error", request_id)
            body, status = p.render_error(p.internal_code, INTERNAL_MESSAGE, 500, request_id), 500
        return Response(body, status_code=status, media_type=XML_CONTENT_TYPE, headers=headers)

    async def handle(self, request: Request, request_id: str) -> bytes:
        p = self.protocol
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
        if not isinstance(action, str) or not action:
            raise UnknownOperation("The request must contain the parameter Action.")
        p.check_version(form.pop("Version", None))
        if action not in self.model.operation_names:
            raise UnknownOperation(f"The action {action[:200]} is not valid for this web service.")
        handler = self.handlers.get(action)
        if handler is None:
            raise UnknownOperation(f"Dockyard does not implement the {p.service} action {action} yet.")
        authorize(caller.principal, f"{p.iam_prefix}:{action}")
        operation = self.model.operation_model(action)
        params = p.decode(operation.input_shape, form) if operation.input_shape is not None else {}
        checked = validation.validate(action, params, p.service)
        ctx = RequestContext(self.account_id, caller.region, caller.principal, request_id)
        return p.render_response(operation, await handler(self.env, ctx, checked), request_id)
