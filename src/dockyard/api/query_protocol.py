"""The AWS query protocol, for ELBv2: form-encoded requests in, XML responses out (the request flow
shared with EC2's protocol is in ``form_protocol.py``).

Decoding follows what botocore's query serializer writes: structure members by name, lists as
``Name.member.N`` (an empty list as ``Name=``), maps as ``Name.entry.N.key``/``.value``; scalars are
strings, converted by their shape's type (a value that does not convert is left a string and the
model walker rejects it with a field path). Members the model does not know are dropped. Responses
are ``<ActionResponse xmlns=...><ActionResult>...</ActionResult><ResponseMetadata>...``.

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

from typing import Any
from xml.sax.saxutils import escape

from botocore.model import ListShape, MapShape, OperationModel, Shape, StructureShape

from dockyard.api import validation
from dockyard.api.form_protocol import (
    Authenticate,
    FormApi,
    FormProtocol,
    error_by_class,
    indexed,
    parse_form,
    scalar,
    write_xml,
)
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
from dockyard.services.context import Env
from dockyard.services.elb_registry import load_elb

__all__ = ["SIGNING_NAME", "QueryApi", "decode", "parse_form", "render_error", "render_response"]

SERVICE = "elbv2"
SIGNING_NAME = "elasticloadbalancing"
API_VERSION = "2015-12-01"

_PROTOCOL_CODES: list[tuple[type[DockyardError], str, int]] = [
    (InvalidParameter, "ValidationError", 400),
    (MissingAuthenticationToken, "MissingAuthenticationToken", 403),
    (UnrecognizedClient, "InvalidClientTokenId", 403),
    (InvalidSignature, "SignatureDoesNotMatch", 403),
    (IncompleteSignature, "IncompleteSignature", 400),
    (UnknownOperation, "InvalidAction", 400),
    (AccessDenied, "AccessDenied", 403),
]


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
        return [decode(shape.member, item) for item in indexed(node.get(member_name))]
    if isinstance(shape, MapShape):
        if node == "" or not isinstance(node, dict):
            return {} if node == "" else node
        key_name = shape.key.serialization.get("name", "key")
        value_name = shape.value.serialization.get("name", "value")
        return {
            decode(shape.key, e.get(key_name)): decode(shape.value, e.get(value_name))
            for e in indexed(node.get("entry"))
            if isinstance(e, dict) and e.get(key_name) is not None
        }
    return scalar(shape.type_name, node)


def _member_name(shape: ListShape) -> str:
    return str(shape.member.serialization.get("name", "member"))


def render_response(operation: OperationModel, result: dict[str, Any], request_id: str) -> bytes:
    namespace = operation.metadata.get("xmlNamespace", "")
    name = operation.name
    out = [f'<{name}Response xmlns="{namespace}">']
    shape = operation.output_shape
    wrapper = f"{name}Result"
    if shape is not None:
        wrapper = shape.serialization.get("resultWrapper", wrapper)
        write_xml(shape, result, wrapper, out, _member_name)
    else:
        out.append(f"<{wrapper}/>")
    out.append(f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{name}Response>")
    return "".join(out).encode()


def error_code(exc: DockyardError) -> tuple[str, int]:
    if isinstance(exc, ElbError):
        return exc.code, exc.status
    return error_by_class(exc, _PROTOCOL_CODES) or ("InternalFailure", 500)


def render_error(code: str, message: str, status: int, request_id: str) -> bytes:
    kind = "Sender" if status < 500 else "Receiver"
    namespace = validation.service_model(SERVICE).metadata.get("xmlNamespace", "")
    return (
        f'<ErrorResponse xmlns="{namespace}"><Error><Type>{kind}</Type><Code>{escape(code)}</Code>'
        f"<Message>{escape(message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    ).encode()


def _check_version(version: Any) -> None:
    if version is not None and version != API_VERSION:
        raise UnknownOperation(
            f"Version {str(version)[:40]!r} is not supported: Dockyard speaks ELBv2 ({API_VERSION}) only."
        )


PROTOCOL = FormProtocol(
    service=SERVICE,
    iam_prefix=SIGNING_NAME,
    internal_code="InternalFailure",
    decode=decode,
    render_response=render_response,
    error_code=error_code,
    render_error=render_error,
    check_version=_check_version,
    request_id_header=True,
)


def QueryApi(env: Env, authenticate: Authenticate, account_id: str) -> FormApi:
    """ELBv2 over the query protocol."""
    return FormApi(PROTOCOL, env, authenticate, account_id, load_elb())
