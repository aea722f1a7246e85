"""EC2's own protocol (``ec2``, version 2016-11-15), for the networking subset awsvpc needs.

It differs from the ELBv2 query protocol (``query_protocol.py``) in three ways:

- requests: lists are flattened ``Name.N`` (``GroupId.1``, ``IpPermissions.1.IpRanges.1.CidrIp``);
  a member's wire name is its ``queryName``, else its capitalised ``locationName``;
- responses: ``<OpResponse xmlns=...><requestId>..</requestId>`` then members by ``locationName``,
  every list as ``<name><item>..</item></name>``;
- errors: ``<Response><Errors><Error><Code>..</Code><Message>..</Message></Error></Errors>
  <RequestID>..</RequestID></Response>``, codes mapped here by class::

    Ec2Error subclasses                      their own code (InvalidGroup.NotFound, ...), 400
    InvalidParameter (model validation)      InvalidParameterValue, 400
    UnrecognizedClient, InvalidSignature     AuthFailure, 401 (RequestExpired, 400, when too old)
    MissingAuthenticationToken               MissingAuthenticationToken, 401
    UnknownOperation                         InvalidAction, 400
    AccessDenied                             UnauthorizedOperation, 403
    anything else                            InternalError, 500
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from botocore.model import ListShape, OperationModel, Shape, StructureShape
from starlette.requests import Request
from starlette.responses import Response

from dockyard.api import validation
from dockyard.api.authorization import authorize
from dockyard.api.query_protocol import Authenticate, _scalar, _timestamp, parse_form
from dockyard.domain.ec2 import Ec2Error
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
from dockyard.services.ec2_registry import load_ec2

log = logging.getLogger("dockyard.api")

SERVICE = "ec2"
SIGNING_NAME = "ec2"
API_VERSION = "2016-11-15"
NAMESPACE = f"http://ec2.amazonaws.com/doc/{API_VERSION}/"


def _wire_name(name: str, shape: Shape) -> str:
    query = shape.serialization.get("queryName")
    if query:
        return str(query)
    location = shape.serialization.get("name")
    return str(location[0].upper() + location[1:]) if location else name


def decode(shape: Shape, node: Any) -> Any:
    """A form subtree (``parse_form``) as the JSON-like value the model validates."""
    if isinstance(shape, StructureShape):
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for name, member in shape.members.items():
            child = node.get(_wire_name(name, member))
            if child is not None:
                out[name] = decode(member, child)
        return out
    if isinstance(shape, ListShape):
        if not isinstance(node, dict):
            return [] if node == "" else node
        items = sorted((int(k), v) for k, v in node.items() if k.isdigit())
        return [decode(shape.member, v) for _, v in items]
    return _scalar(shape.type_name, node)


def _write(shape: Shape, value: Any, name: str, out: list[str]) -> None:
    from xml.sax.saxutils import escape

    if isinstance(shape, StructureShape):
        out.append(f"<{name}>")
        for member_name, member in shape.members.items():
            item = value.get(member_name) if isinstance(value, dict) else None
            if item is not None:
                _write(member, item, member.serialization.get("name", member_name), out)
        out.append(f"</{name}>")
    elif isinstance(shape, ListShape):
        out.append(f"<{name}>")
        for item in value:
            _write(shape.member, item, "item", out)
        out.append(f"</{name}>")
    elif shape.type_name == "boolean":
        out.append(f"<{name}>{'true' if value else 'false'}</{name}>")
    elif shape.type_name == "timestamp":
        out.append(f"<{name}>{_timestamp(value)}</{name}>")
    else:
        out.append(f"<{name}>{escape(str(value))}</{name}>")


def render_response(operation: OperationModel, result: dict[str, Any], request_id: str) -> bytes:
    name = operation.name
    out = [
        f'<?xml version="1.0" encoding="UTF-8"?><{name}Response xmlns="{NAMESPACE}">',
        f"<requestId>{request_id}</requestId>",
    ]
    shape = operation.output_shape
    if isinstance(shape, StructureShape):
        for member_name, member in shape.members.items():
            if result.get(member_name) is not None:
                _write(member, result[member_name], member.serialization.get("name", member_name), out)
    out.append(f"</{name}Response>")
    return "".join(out).encode()


def error_code(exc: DockyardError) -> tuple[str, int]:
    if isinstance(exc, Ec2Error):
        return exc.code, exc.status
    if isinstance(exc, InvalidSignature) and "expired" in exc.message:
        return "RequestExpired", 400
    for cls, code, status in (
        (InvalidParameter, "InvalidParameterValue", 400),
        (MissingAuthenticationToken, "MissingAuthenticationToken", 401),
        (UnrecognizedClient, "AuthFailure", 401),
        (InvalidSignature, "AuthFailure", 401),
        (IncompleteSignature, "AuthFailure", 401),
        (UnknownOperation, "InvalidAction", 400),
        (AccessDenied, "UnauthorizedOperation", 403),
    ):
        if isinstance(exc, cls):
            return code, status
    return "InternalError", 500


def render_error(code: str, message: str, request_id: str) -> bytes:
    from xml.sax.saxutils import escape

    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{escape(code)}</Code>'
        f"<Message>{escape(message)}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
    ).encode()


class Ec2Api:
    """Handles one EC2 request end to end."""

    def __init__(self, env: Env, authenticate: Authenticate, account_id: str) -> None:
        self.env = env
        self.authenticate = authenticate
        self.account_id = account_id
        self.handlers = load_ec2()
        self.model = validation.service_model(SERVICE)

    async def respond(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        try:
            return Response(await self.handle(request, request_id), media_type="text/xml")
        except DockyardError as exc:
            code, status = error_code(exc)
            if status >= 500:
                log.error("request %s failed: %s", request_id, exc.message)
            return Response(
                render_error(code, exc.message, request_id), status_code=status, media_type="text/xml"
            )
        except Exception:
            log.exception("request %s: unexpected server error", request_id)
            body = render_error(
                "InternalError", "An internal error occurred; see the server log.", request_id
            )
            return Response(body, status_code=500, media_type="text/xml")

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
        form.pop("Version", None)
        if not isinstance(action, str) or action not in self.model.operation_names:
            raise UnknownOperation(f"The action {str(action)[:200]} is not valid for this web service.")
        handler = self.handlers.get(action)
        if handler is None:
            raise UnknownOperation(f"Dockyard does not implement the EC2 action {action}.")
        authorize(caller.principal, f"ec2:{action}")
        operation = self.model.operation_model(action)
        params = decode(operation.input_shape, form) if operation.input_shape is not None else {}
        checked = validation.validate(action, params, SERVICE)
        ctx = RequestContext(self.account_id, caller.region, caller.principal, request_id)
        return render_response(operation, await handler(self.env, ctx, checked), request_id)
