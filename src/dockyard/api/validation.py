"""Request validation against botocore's service models (ECS today; ELBv2, Cloud Map, EC2 later).

``validate(operation, params)`` walks the operation's input shape and returns a *clean copy* of the
request: members the model does not know are dropped silently (a newer SDK may send members our
pinned model lacks, and ECS itself ignores what it does not know), ``null`` counts as absent,
timestamps come out as float seconds since the epoch, every other value as parsed from JSON.
Anything the model forbids raises ``InvalidParameter`` naming the field path, e.g.
``containerDefinitions[0].portMappings[1].containerPort``; a body that is not a JSON object raises
``SerializationError``.

Checks, per shape type::

    structure  a JSON object; required members present; union: exactly one member; document: any
    list       a JSON array, length within the model's min/max
    map        a JSON object, keys checked as their string shape, length within min/max
    string     a str, enum membership, length within min/max
    integer    an int (not bool, not float) in the model's range, else the int32 range
    long       an int in the model's range, else the int64 range (keeps the store from overflowing)
    double     an int or float, finite, in the model's range
    boolean    a bool
    timestamp  a finite number of epoch seconds or an ISO-8601 string, years 1..9999
    blob       a base64 str

Regex ``pattern``s are not checked: the models write them in Java syntax (``\\p{L}``) and AWS does
not enforce them uniformly.

Why a walker of our own rather than ``botocore.validate.ParamValidator``: that validator checks the
input a *Python caller* hands to a client: it rejects unknown members (we must drop them), accepts
Python types that JSON cannot carry (``datetime``, ``bytes``, file objects), does not check enum
values or ``max`` constraints, and collects a report string instead of a field path. We still use
botocore's *models* (``Loader`` + ``ServiceModel``): they are the ECS API's definition.

Speed: each shape is compiled once into a closure (structure -> dict of member closures), so a
RegisterTaskDefinition body costs one dict lookup and one call per value present. A failing check
raises ``_Invalid``; each enclosing container adds its path segment as the exception passes through,
which costs nothing on the success path. Depth is bounded by the model's shapes (ECS has no
recursive shapes; JSON nested deeper than its shape is a type error at the first level that does not
fit); for recursive models a ``RecursionError`` becomes ``InvalidParameter``.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Any

from botocore.loaders import Loader
from botocore.model import ListShape, MapShape, ServiceModel, Shape, StringShape, StructureShape

from dockyard.domain.errors import InvalidParameter, SerializationError, UnknownOperation

Check = Callable[[Any], Any]

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_EPOCH_RANGE = (-62135596800.0, 253402300799.0)  # 0001-01-01 .. 9999-12-31T23:59:59 UTC
_SHOW_LIMIT = 64


class _Invalid(Exception):
    """A failed check. ``render`` turns the finished path into the message; ``path`` grows outward."""

    def __init__(self, render: Callable[[str], str], segment: str | int | None = None) -> None:
        super().__init__()
        self.render = render
        self.path: list[str | int] = [] if segment is None else [segment]


# --- public api ------------------------------------------------------------------------------------


@cache
def service_model(service: str = "ecs") -> ServiceModel:
    """botocore's newest model of ``service`` (e.g. "ecs", "elbv2", "servicediscovery", "ec2")."""
    return ServiceModel(Loader().load_service_model(service, "service-2"), service_name=service)


def operation_names(service: str = "ecs") -> frozenset[str]:
    """Every operation the service's model defines."""
    return frozenset(service_model(service).operation_names)


def error_codes(service: str = "ecs") -> frozenset[str]:
    """The ``__type`` codes of the model's error shapes."""
    return frozenset(shape.error_code for shape in service_model(service).error_shapes)


def validate(operation: str, params: object, model: str | ServiceModel = "ecs") -> dict[str, Any]:
    """Check ``params`` (a parsed JSON body; None means empty) against the operation's input shape.

    ``model`` is a service name or a ``ServiceModel``. Returns the cleaned request.
    """
    validator = _validator(service_model(model) if isinstance(model, str) else model)
    check = validator.operation_check(operation)
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise SerializationError(f"Expected a JSON object as the request body, got {_json_type(params)}.")
    try:
        result: dict[str, Any] = check(params)
    except _Invalid as invalid:
        raise InvalidParameter(invalid.render(_render_path(invalid.path))) from None
    except RecursionError:
        raise InvalidParameter("The request is nested too deeply.") from None
    return result


# --- compilation -----------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _validator(model: ServiceModel) -> _Validator:
    return _Validator(model)


class _Validator:
    """Compiled checks for one service model, built lazily per shape and cached by shape name."""

    def __init__(self, model: ServiceModel) -> None:
        self._model = model
        self._shapes: dict[str, Check] = {}
        self._operations: dict[str, Check] = {}

    def operation_check(self, operation: str) -> Check:
        check = self._operations.get(operation)
        if check is None:
            if operation not in self._model.operation_names:
                raise UnknownOperation(f"Unknown operation {operation!r} for {self._model.service_name}.")
            shape = self._model.operation_model(operation).input_shape
            check = _empty_input if shape is None else self.shape_check(shape)
            self._operations[operation] = check
        return check

    def shape_check(self, shape: Shape) -> Check:
        check = self._shapes.get(shape.name)
        if check is not None:
            return check
        # A recursive shape meets itself while being built: hand out an indirection until it exists.
        built: list[Check] = []
        self._shapes[shape.name] = lambda value: built[0](value)
        check = self._build(shape)
        built.append(check)
        self._shapes[shape.name] = check
        return check

    def _build(self, shape: Shape) -> Check:
        kind = shape.type_name
        meta = shape.metadata
        if isinstance(shape, StructureShape):
            if meta.get("document"):
                return _document
            members = {name: self.shape_check(member) for name, member in shape.members.items()}
            return _structure(members, tuple(shape.required_members), bool(meta.get("union")))
        if isinstance(shape, ListShape):
            return _list(self.shape_check(shape.member), meta.get("min"), meta.get("max"))
        if isinstance(shape, MapShape):
            return _map(
                self.shape_check(shape.key), self.shape_check(shape.value), meta.get("min"), meta.get("max")
            )
        if isinstance(shape, StringShape) or kind == "string":
            enum = getattr(shape, "enum", None) or meta.get("enum") or ()
            return _string(frozenset(enum), meta.get("min"), meta.get("max"))
        if kind == "integer":
            return _integer(kind, _bound(meta.get("min"), _INT32[0]), _bound(meta.get("max"), _INT32[1]))
        if kind == "long":
            return _integer(kind, _bound(meta.get("min"), _INT64[0]), _bound(meta.get("max"), _INT64[1]))
        if kind in ("double", "float"):
            return _number(meta.get("min"), meta.get("max"))
        if kind == "boolean":
            return _boolean
        if kind == "timestamp":
            return _timestamp
        if kind == "blob":
            return _blob
        raise NotImplementedError(f"shape {shape.name} has unsupported type {kind!r}")


def _bound(value: object, default: int) -> int:
    return int(value) if isinstance(value, int | float) else default


# --- checks ----------------------------------------------------------------------------------------


def _empty_input(value: dict[str, Any]) -> dict[str, Any]:
    return {}


def _document(value: Any) -> Any:
    return value


def _structure(members: dict[str, Check], required: tuple[str, ...], union: bool) -> Check:
    def check(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _type_error(value, "object")
        out: dict[str, Any] = {}
        for key, item in value.items():
            member = members.get(key)
            if member is None or item is None:
                continue
            try:
                out[key] = member(item)
            except _Invalid as invalid:
                invalid.path.append(key)
                raise
        for name in required:
            if name not in out:
                raise _Invalid(lambda path: f"Missing required parameter: {path}", name)
        if union and len(out) != 1:
            raise _Invalid(
                lambda path: f"Invalid parameter {path}: exactly one member must be set, got {len(out)}."
            )
        return out

    return check


def _list(member: Check, low: int | None, high: int | None) -> Check:
    def check(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise _type_error(value, "array")
        _check_length(len(value), low, high)
        out = []
        for index, item in enumerate(value):
            try:
                out.append(member(item))
            except _Invalid as invalid:
                invalid.path.append(index)
                raise
        return out

    return check


def _map(key_check: Check, value_check: Check, low: int | None, high: int | None) -> Check:
    def check(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _type_error(value, "object")
        _check_length(len(value), low, high)
        out: dict[str, Any] = {}
        for key, item in value.items():
            if item is None:
                continue
            try:
                out[key_check(key)] = value_check(item)
            except _Invalid as invalid:
                invalid.path.append(key)
                raise
        return out

    return check


def _string(enum: frozenset[str], low: int | None, high: int | None) -> Check:
    allowed = ", ".join(sorted(enum))

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise _type_error(value, "string")
        if enum and value not in enum:
            shown = _show(value)
            raise _Invalid(
                lambda path: f"Invalid value for parameter {path}: {shown}. Valid values: {allowed}."
            )
        if low is not None or high is not None:
            _check_length(len(value), low, high)
        return value

    return check


def _integer(kind: str, low: int, high: int) -> Check:
    def check(value: Any) -> int:
        if type(value) is not int:
            raise _type_error(value, kind)
        _check_range(value, low, high)
        return value

    return check


def _number(low: float | None, high: float | None) -> Check:
    def check(value: Any) -> float:
        if type(value) not in (int, float):
            raise _type_error(value, "number")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise _Invalid(lambda path: f"Invalid value for parameter {path}: the number must be finite.")
        if low is not None or high is not None:
            _check_range(number, low, high)
        return number

    return check


def _boolean(value: Any) -> bool:
    if type(value) is not bool:
        raise _type_error(value, "boolean")
    return value


def _timestamp(value: Any) -> float:
    """Epoch seconds (what botocore sends for JSON protocols) or an ISO-8601 string."""
    seconds: float | None = None
    if type(value) in (int, float):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = None
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            seconds = parsed.timestamp()
        except (ValueError, OverflowError):
            seconds = None
    else:
        raise _type_error(value, "timestamp")
    if seconds is None or not (_EPOCH_RANGE[0] <= seconds <= _EPOCH_RANGE[1]):
        shown = _show(value)
        raise _Invalid(
            lambda path: (
                f"Invalid timestamp for parameter {path}: {shown}. "
                "Use seconds since the epoch or ISO-8601, years 1 to 9999."
            )
        )
    return seconds


def _blob(value: Any) -> str:
    if not isinstance(value, str):
        raise _type_error(value, "base64-encoded string")
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _Invalid(lambda path: f"Invalid value for parameter {path}: not valid base64.") from None
    return value


def _check_length(length: int, low: int | None, high: int | None) -> None:
    if low is not None and length < low:
        raise _Invalid(lambda path: f"Invalid length for parameter {path}: {length}, minimum length: {low}.")
    if high is not None and length > high:
        raise _Invalid(lambda path: f"Invalid length for parameter {path}: {length}, maximum length: {high}.")


def _check_range(number: float, low: float | None, high: float | None) -> None:
    if low is not None and number < low:
        shown = _show(number)
        raise _Invalid(lambda path: f"Invalid value for parameter {path}: {shown}, minimum value: {low}.")
    if high is not None and number > high:
        shown = _show(number)
        raise _Invalid(lambda path: f"Invalid value for parameter {path}: {shown}, maximum value: {high}.")


# --- messages --------------------------------------------------------------------------------------


def _type_error(value: Any, expected: str) -> _Invalid:
    got = _json_type(value)
    return _Invalid(lambda path: f"Invalid type for parameter {path}: expected {expected}, got {got}.")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _show(value: object) -> str:
    """A short repr for messages: never copies a 10 MB string, never fails on a huge int."""
    if isinstance(value, str) and len(value) > _SHOW_LIMIT:
        return repr(value[:_SHOW_LIMIT]) + "..."
    try:
        text = repr(value)
    except ValueError:  # an int beyond sys.get_int_max_str_digits()
        return "a number too large to show"
    return text if len(text) <= _SHOW_LIMIT else text[:_SHOW_LIMIT] + "..."


def _render_path(path: list[str | int]) -> str:
    parts: list[str] = []
    for segment in reversed(path):
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        else:
            parts.append(f".{segment}" if parts else segment)
    return "".join(parts) or "input"
