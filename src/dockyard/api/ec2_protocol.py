"""EC2's own protocol (``ec2``, version 2016-11-15), for the networking subset awsvpc needs (the
request flow shared with ELBv2's query protocol is in ``form_protocol.py``).

It differs from the ELBv2 query protocol (``query_protocol.py``) in three ways:

- requests: lists are flattened ``Name.N`` (``GroupId.1``, ``IpPermissions.1.IpRanges.1.CidrIp``);
  a member's wire name is its ``queryName``, else its capitalised ``locationName``;
- responses: ``<OpResponse xmlns=...><requestId>..</requestId>`` then members by ``locationName``,
  every list as ``<name><item>..</item></name>``;
- errors: ``<Response><Errors><Error><Code>..</Code><Message>..</Message></Error></Errors>
  <RequestID>..</RequestID></Response>``, codes mapped here by class::

    Ec2Error subclasses                      their own code (InvalidGroup.NotFound, ...), 400
    InvalidParameter (model validation)      InvalidParameterValue, 400
    UnrecognizedClient, InvalidSignature     AuthFailure, 401 (RequestExpired, 400, outside the time window)
    MissingAuthenticationToken               MissingAuthenticationToken, 401
    UnknownOperation                         InvalidAction, 400
    AccessDenied                             UnauthorizedOperation, 403
    anything else                            InternalError, 500
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

from botocore.model import ListShape, OperationModel, Shape, StructureShape

from dockyard.api.form_protocol import (
    Authenticate,
    FormApi,
    FormProtocol,
    error_by_class,
    indexed,
    scalar,
    write_xml,
)
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
from dockyard.services.context import Env
from dockyard.services.ec2_registry import load_ec2

__all__ = ["SIGNING_NAME", "Ec2Api", "decode", "render_error", "render_response"]

SERVICE = "ec2"
SIGNING_NAME = "ec2"
API_VERSION = "2016-11-15"
NAMESPACE = f"http://ec2.amazonaws.com/doc/{API_VERSION}/"

_PROTOCOL_CODES: list[tuple[type[DockyardError], str, int]] = [
    (InvalidParameter, "InvalidParameterValue", 400),
    (MissingAuthenticationToken, "MissingAuthenticationToken", 401),
    (UnrecognizedClient, "AuthFailure", 401),
    (InvalidSignature, "AuthFailure", 401),
    (IncompleteSignature, "AuthFailure", 401),
    (UnknownOperation, "InvalidAction", 400),
    (AccessDenied, "UnauthorizedOperation", 403),
]


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
        return [decode(shape.member, v) for v in indexed(node)]
    return scalar(shape.type_name, node)


def _item(_shape: ListShape) -> str:
    return "item"


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
                write_xml(
                    member, result[member_name], member.serialization.get("name", member_name), out, _item
                )
    out.append(f"</{name}Response>")
    return "".join(out).encode()


def error_code(exc: DockyardError) -> tuple[str, int]:
    if isinstance(exc, Ec2Error):
        return exc.code, exc.status
    if isinstance(exc, InvalidSignature) and (
        "Signature expired" in exc.message or "Signature not yet current" in exc.message
    ):  # EC2 answers both sides of the time window (and expired presigned URLs) with RequestExpired
        return "RequestExpired", 400
    return error_by_class(exc, _PROTOCOL_CODES) or ("InternalError", 500)


def render_error(code: str, message: str, request_id: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{escape(code)}</Code>'
        f"<Message>{escape(message)}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
    ).encode()


PROTOCOL = FormProtocol(
    service=SERVICE,
    iam_prefix=SIGNING_NAME,
    internal_code="InternalError",
    decode=decode,
    render_response=render_response,
    error_code=error_code,
    render_error=lambda code, message, _status, request_id: render_error(code, message, request_id),
)


def Ec2Api(env: Env, authenticate: Authenticate, account_id: str) -> FormApi:
    """The EC2 networking subset over EC2's protocol."""
    return FormApi(PROTOCOL, env, authenticate, account_id, load_ec2())
