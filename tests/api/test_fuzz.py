"""Fuzz every operation of the ECS model against a running server, over raw signed HTTP.

Requests are built from botocore's ECS model and signed with botocore's ``SigV4Auth``, then sent with
``http.client``, so no client-side validation stands between the fuzzer and the server. Three kinds:

- *generated*: hypothesis strategies derived from each operation's input shape (valid as far as the
  model goes; the server may still refuse them on business rules);
- *mutations* of a deterministic example of each input: a required member removed, a value of the
  wrong type, numbers beyond their range (and beyond int64), strings outside an enum or too long,
  lists too long, control characters, arrays nested 500 deep (parses; the model must refuse it) and
  10,000 deep (the JSON parser must refuse it) where a value belongs;
- *raw bodies*: not JSON, truncated JSON, non-objects, invalid UTF-8, a lone surrogate, a BOM,
  10,000-deep arrays and objects, and for a few operations a 10 MB string;
- *protocol*: unknown or malformed X-Amz-Target values and broken Authorization headers.

Every answer must come within 5 s, never be a 5xx, and an error's ``__type`` must be one of the
model's error shapes or a protocol error. The server must still answer DescribeClusters afterwards.

The server is the session's shared one, so generated names carry a ``fuzz-`` prefix where they name
a cluster, and operations that change account-wide defaults only receive invalid requests.
Everything is derandomized (fixed examples per run) and bounded so the module takes well under a
minute.
"""

from __future__ import annotations

import base64
import copy
import http.client
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.model import Shape
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from dockyard.api.validation import error_codes, operation_names, service_model

pytestmark = pytest.mark.timeout(240)

TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113."
PROTOCOL_ERRORS = frozenset(
    {
        "MissingAuthenticationTokenException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "SerializationException",
        "UnknownOperationException",
        "AccessDeniedException",
        "UnsupportedFeatureException",
        "InvalidParameterException",
        "ClientException",
        "IncompleteSignatureException",  # a malformed Authorization header (test_malformed_authentication)
    }
)
ALLOWED_ERRORS = error_codes("ecs") | PROTOCOL_ERRORS
MODEL = service_model("ecs")
OPERATIONS = sorted(operation_names("ecs"))
# Valid-looking requests to these would change account-wide defaults other tests rely on.
ACCOUNT_WIDE = frozenset({"PutAccountSetting", "PutAccountSettingDefault", "DeleteAccountSetting"})
CLUSTER_MEMBERS = frozenset({"cluster", "clusterName"})

ANSWER_WITHIN = 5.0
GENERATED_EXAMPLES = 30
MUTATIONS_PER_OPERATION = 40
DEEP = 10_000
DEEP_ARRAYS = b"[" * DEEP + b'"x"' + b"]" * DEEP
DEEP_SENTINEL = "\u2063deep-arrays\u2063"
TEN_MB = 10 * 1024 * 1024
HUGE_STRING_OPERATIONS = (
    "CreateCluster",
    "RegisterTaskDefinition",
    "TagResource",
    "RunTask",
    "CreateService",
)


# --- transport ---------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    body: bytes
    seconds: float


@dataclass
class Fuzzer:
    """Signs with botocore and sends over one keep-alive connection; records every bad answer."""

    endpoint: str
    credentials: Credentials
    region: str
    problems: list[str] = field(default_factory=list)
    _conn: http.client.HTTPConnection | None = None

    def send_unsigned(self, headers: dict[str, str], body: bytes, *, what: str) -> None:
        """Send headers as given (no signing): for broken authentication."""
        started = time.monotonic()
        try:
            answer = self._exchange(body, headers, started)
        except (OSError, http.client.HTTPException) as exc:
            self._close()
            self.problems.append(f"{what}: no answer ({exc!r})")
            return
        self.check("(unsigned)", what, answer)

    def send(self, operation: str, body: bytes, *, what: str, target: str | None = None) -> Answer | None:
        target = TARGET_PREFIX + operation if target is None else target
        request = AWSRequest(
            method="POST",
            url=self.endpoint + "/",
            data=body,
            headers={"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"},
        )
        SigV4Auth(self.credentials, "ecs", self.region).add_auth(request)
        headers = dict(request.prepare().headers)
        started = time.monotonic()
        try:
            answer = self._exchange(body, headers, started)
        except (OSError, http.client.HTTPException) as exc:
            self._close()
            self.problems.append(
                f"{operation} {what}: no answer ({exc!r}) after {time.monotonic() - started:.1f}s"
            )
            return None
        self.check(operation, what, answer)
        return answer

    def _exchange(self, body: bytes, headers: dict[str, str], started: float) -> Answer:
        """One request; a kept-alive connection the server closed while idle is retried once, fresh."""
        reused = self._conn is not None
        try:
            return self._exchange_once(body, headers, started)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self._close()
            if not reused:
                raise
            return self._exchange_once(body, headers, started)

    def _exchange_once(self, body: bytes, headers: dict[str, str], started: float) -> Answer:
        if self._conn is None:
            parts = urlsplit(self.endpoint)
            self._conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=ANSWER_WITHIN)
        self._conn.request("POST", "/", body=body, headers=headers)
        response = self._conn.getresponse()
        data = response.read()
        if response.will_close:
            self._close()
        return Answer(response.status, data, time.monotonic() - started)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def check(self, operation: str, what: str, answer: Answer) -> None:
        where = f"{operation} {what}"
        if answer.seconds > ANSWER_WITHIN:
            self.problems.append(f"{where}: answered after {answer.seconds:.1f}s")
        if answer.status >= 500:
            self.problems.append(f"{where}: HTTP {answer.status} {answer.body[:300]!r}")
            return
        try:
            doc = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            self.problems.append(f"{where}: HTTP {answer.status} body is not JSON: {answer.body[:200]!r}")
            return
        if not isinstance(doc, dict):
            self.problems.append(
                f"{where}: HTTP {answer.status} body is not an object: {answer.body[:200]!r}"
            )
        elif answer.status >= 400:
            code = str(doc.get("__type", "")).rsplit("#", 1)[-1]
            if code not in ALLOWED_ERRORS:
                self.problems.append(f"{where}: HTTP {answer.status} unexpected __type {doc.get('__type')!r}")

    def assert_clean(self) -> None:
        problems, self.problems = self.problems, []
        assert not problems, f"{len(problems)} bad answers:\n" + "\n".join(problems[:25])

    def still_answers(self) -> None:
        answer = self.send("DescribeClusters", b"{}", what="after fuzzing")
        assert answer is not None and answer.status == 200, answer


@pytest.fixture(scope="module")
def fuzzer(dockyard_server: Any) -> Iterator[Fuzzer]:
    client = Fuzzer(
        endpoint=dockyard_server.endpoint,
        credentials=Credentials(dockyard_server.access_key, dockyard_server.secret_key),
        region=dockyard_server.region,
    )
    yield client
    client._close()


# --- examples and strategies from the model --------------------------------------------------------

INT_RANGE = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


def _bounds(shape: Shape) -> tuple[Any, Any]:
    low, high = INT_RANGE.get(shape.type_name, (None, None))
    return shape.metadata.get("min", low), shape.metadata.get("max", high)


def example(shape: Shape, *, full: bool, depth: int = 0, name: str = "") -> Any:
    """A deterministic request value: required members only, or (full) every member to depth 3."""
    kind = shape.type_name
    if kind == "structure":
        if shape.metadata.get("document"):
            return {"fuzz": [1, "two", None]}
        names = list(shape.members) if full and depth < 3 else list(shape.required_members)
        return {n: example(shape.members[n], full=full, depth=depth + 1, name=n) for n in names}
    if kind == "list":
        count = max(shape.metadata.get("min", 1), 1)
        return [example(shape.member, full=full, depth=depth + 1) for _ in range(count)]
    if kind == "map":
        return {example(shape.key, full=full): example(shape.value, full=full, depth=depth + 1)}
    if kind == "string":
        enum = shape.metadata.get("enum")
        if enum:
            return enum[0]
        low, high = shape.metadata.get("min", 1), shape.metadata.get("max", 64)
        return ("fuzz-" + (name or "value") + "-" * low)[: max(low, min(high, 24))]
    if kind in ("integer", "long"):
        low, high = _bounds(shape)
        return min(max(1, low), high)
    if kind in ("double", "float"):
        low, high = _bounds(shape)
        return min(max(1.0, low if low is not None else 1.0), high if high is not None else 1.0)
    if kind == "boolean":
        return True
    if kind == "timestamp":
        return 1_700_000_000
    if kind == "blob":
        return "ZnV6eg=="
    raise AssertionError(f"unhandled shape type {kind}")


def strategy(shape: Shape, depth: int = 0, name: str = "", required: bool = False) -> st.SearchStrategy[Any]:
    """Values the model allows, kept small; below depth 3 only required members are drawn.

    A required list gets at least one item, so requests reach past "the list cannot be empty".
    """
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        if meta.get("document"):
            return st.dictionaries(st.text(max_size=4), st.integers() | st.text(max_size=4), max_size=2)
        needed = {n: strategy(shape.members[n], depth + 1, n, required=True) for n in shape.required_members}
        optional = (
            {n: strategy(m, depth + 1, n) for n, m in shape.members.items() if n not in needed}
            if depth < 3
            else {}
        )
        return st.fixed_dictionaries(needed, optional=optional)
    if kind == "list":
        low = max(meta.get("min", 0), 1 if required else 0)
        return st.lists(strategy(shape.member, depth + 1), min_size=low, max_size=max(low, 2))
    if kind == "map":
        return st.dictionaries(strategy(shape.key, depth + 1), strategy(shape.value, depth + 1), max_size=2)
    if kind == "string":
        if meta.get("enum"):
            return st.sampled_from(meta["enum"])
        low, high = meta.get("min", 0), meta.get("max", 10_000)
        text = st.text(min_size=low, max_size=min(high, low + 16))
        names = st.sampled_from(
            ["fuzz-a", "fuzz-b", f"arn:aws:ecs:us-east-1:000000000000:cluster/fuzz-{name}"]
        )
        values = names | text if high >= 40 else text
        return values.map(lambda v: "fuzz-" + v) if name in CLUSTER_MEMBERS else values
    if kind in ("integer", "long"):
        low, high = _bounds(shape)
        return st.integers(low, high)
    if kind in ("double", "float"):
        low, high = _bounds(shape)
        return st.floats(low, high, allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "timestamp":
        return st.integers(0, 2**33) | st.floats(0, 2e9)
    if kind == "blob":
        return st.binary(max_size=8).map(lambda b: base64.b64encode(b).decode())
    raise AssertionError(f"unhandled shape type {kind}")


# --- mutations -------------------------------------------------------------------------------------

Path = tuple[str | int, ...]


def leaves(shape: Shape, value: Any, path: Path = ()) -> Iterator[tuple[Path, Shape]]:
    """Every (path, shape) in an example value, containers included."""
    yield path, shape
    if shape.type_name == "structure" and isinstance(value, dict) and not shape.metadata.get("document"):
        for key, item in value.items():
            yield from leaves(shape.members[key], item, (*path, key))
    elif shape.type_name == "list" and value:
        yield from leaves(shape.member, value[0], (*path, 0))
    elif shape.type_name == "map" and value:
        key = next(iter(value))
        yield from leaves(shape.value, value[key], (*path, key))


def wrong_types(shape: Shape) -> list[Any]:
    kind = shape.type_name
    if kind in ("structure", "map"):
        return [[1], "object"]
    if kind == "list":
        return [{"a": 1}, "list"]
    if kind == "string":
        return [123, ["s"], True]
    if kind in ("integer", "long"):
        return ["1", 1.5, True]
    if kind in ("double", "float"):
        return ["1.0", False]
    if kind == "boolean":
        return ["true", 1]
    return [{"t": 1}]


def bad_values(shape: Shape, path: Path) -> Iterator[tuple[str, Any]]:
    for value in wrong_types(shape):
        yield f"wrong type {type(value).__name__} at {path}", value
    meta = shape.metadata
    kind = shape.type_name
    if kind in ("integer", "long", "double", "float"):
        low, high = _bounds(shape)
        for value in (low - 1 if low is not None else None, high + 1 if high is not None else None):
            if value is not None:
                yield f"out of range {value} at {path}", value
        yield f"beyond int64 at {path}", 2**64 + 7
        yield f"far beyond int64 at {path}", -(10**30)
    if kind == "string":
        if meta.get("enum"):
            yield f"non-enum at {path}", "NOT_A_MODEL_VALUE"
        if "max" in meta:
            yield f"too long at {path}", "x" * (meta["max"] + 1)
        if meta.get("min", 0) > 0:
            yield f"too short at {path}", ""
        yield f"control characters at {path}", "\x00\x01\u202e\ufeff"
    if kind == "list" and "max" in meta:
        yield f"too many items at {path}", [None] * (meta["max"] + 1)
    if kind == "timestamp":
        yield f"absurd timestamp at {path}", 1e300
        yield f"bad ISO timestamp at {path}", "not-a-date"
    if kind != "structure" or path:
        yield f"10,000-deep arrays at {path}", DEEP_SENTINEL  # refused by the JSON parser
        yield f"500-deep arrays at {path}", NESTED_500  # parses; the model must refuse it


def nest(depth: int) -> Any:
    nested: Any = "x"
    for _ in range(depth):
        nested = [nested]
    return nested


NESTED_500 = nest(500)


def put(document: Any, path: Path, value: Any) -> Any:
    copied = copy.deepcopy(document)
    if not path:
        return value
    target = copied
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copied


def drop(document: Any, path: Path) -> Any:
    copied = copy.deepcopy(document)
    target = copied
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return copied


def mutations(operation: str) -> list[tuple[str, bytes]]:
    """Invalid requests for one operation: all missing-required cases plus a fixed sample of the rest."""
    shape = MODEL.operation_model(operation).input_shape
    if shape is None:
        return [("unexpected members", b'{"surprise": [1, 2, 3]}')]
    full = example(shape, full=True)
    minimal = example(shape, full=False)
    missing = [
        (f"missing required {(*path, name)}", drop(doc, (*path, name)))
        for doc in (minimal, full)
        for path, sub in leaves(shape, doc)
        if sub.type_name == "structure"
        for name in sub.required_members
    ]
    candidates = [
        (what, doc, path, value)
        for doc in (minimal, full)
        for path, sub in leaves(shape, doc)
        for what, value in bad_values(sub, path)
    ]
    random.Random(operation).shuffle(candidates)
    others = [
        (what, put(doc, path, value)) for what, doc, path, value in candidates[:MUTATIONS_PER_OPERATION]
    ]
    return [(what, encode(doc)) for what, doc in missing[:MUTATIONS_PER_OPERATION] + others]


def encode(document: Any) -> bytes:
    """JSON bytes (stdlib json: orjson refuses ints beyond 64 bits); DEEP_SENTINEL becomes 10,000
    nested arrays, too deep for any encoder to write."""
    text = json.dumps(document, ensure_ascii=False).replace(
        json.dumps(DEEP_SENTINEL, ensure_ascii=False), "\0"
    )
    return text.encode().replace(b"\0", DEEP_ARRAYS)


def raw_bodies(operation: str) -> list[tuple[str, bytes]]:
    shape = MODEL.operation_model(operation).input_shape
    member = next(iter(shape.members), "x") if shape is not None else "x"
    key = orjson.dumps(member)
    deep_arrays = DEEP_ARRAYS
    deep_objects = b'{"a":' * DEEP + b"{}" + b"}" * DEEP
    return [
        ("empty body", b""),
        ("null body", b"null"),
        ("array body", b"[1, 2]"),
        ("string body", b'"text"'),
        ("number body", b"42"),
        ("truncated JSON", b'{"' + key[1:-1] + b'": '),
        ("not JSON", b"this is not json"),
        ("invalid UTF-8", b'{"' + key[1:-1] + b'": "\xff\xfe\xfd"}'),
        ("invalid UTF-8 outside strings", b"\xc3\x28"),
        ("lone surrogate escape", b"{" + key + b': "\\ud800"}'),
        ("escaped NUL", b"{" + key + b': "a\\u0000b"}'),
        ("BOM", b"\xef\xbb\xbf{}"),
        ("NaN literal", b"{" + key + b": NaN}"),
        ("overflowing number", b"{" + key + b": 1e400}"),
        ("30-digit integer", b"{" + key + b": 123456789012345678901234567890}"),
        ("duplicate keys", b"{" + key + b": 1, " + key + b": 2}"),
        ("10,000-deep arrays", deep_arrays),
        ("10,000-deep objects", deep_objects),
        ("10,000-deep arrays in a member", b"{" + key + b": " + deep_arrays + b"}"),
    ]


def huge_string(operation: str) -> bytes:
    shape = MODEL.operation_model(operation).input_shape
    body = example(shape, full=True)
    for path, sub in leaves(shape, body):
        if sub.type_name == "string" and not sub.metadata.get("enum"):
            return orjson.dumps(put(body, path, "x" * TEN_MB))
    return orjson.dumps({**body, "unknownMember": "x" * TEN_MB})


# --- the tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", OPERATIONS)
def test_invalid_requests_are_refused_cleanly(fuzzer: Fuzzer, operation: str) -> None:
    for what, body in mutations(operation) + raw_bodies(operation):
        fuzzer.send(operation, body, what=what)
    fuzzer.assert_clean()


@pytest.mark.parametrize("operation", [op for op in OPERATIONS if op not in ACCOUNT_WIDE])
@settings(
    max_examples=GENERATED_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_generated_requests_are_answered_cleanly(fuzzer: Fuzzer, operation: str, data: st.DataObject) -> None:
    shape = MODEL.operation_model(operation).input_shape
    params = data.draw(strategy(shape) if shape is not None else st.just({}), label="params")
    fuzzer.send(operation, orjson.dumps(params), what=f"generated {params!r:.300}")
    fuzzer.assert_clean()


@pytest.mark.parametrize("operation", HUGE_STRING_OPERATIONS)
def test_ten_megabyte_strings(fuzzer: Fuzzer, operation: str) -> None:
    fuzzer.send(operation, huge_string(operation), what="10 MB string")
    fuzzer.assert_clean()


@pytest.mark.parametrize(
    "target",
    [
        "",
        "AmazonEC2ContainerServiceV20141113.",
        "AmazonEC2ContainerServiceV20141113.NoSuchOperation",
        "AmazonEC2ContainerServiceV20141113.listClusters",
        "Route53.ListHostedZones",
        "x" * 10_000,
    ],
)
def test_unknown_targets(fuzzer: Fuzzer, target: str) -> None:
    fuzzer.send("(target)", b"{}", what=repr(target[:60]), target=target)
    fuzzer.assert_clean()


def test_malformed_authentication(fuzzer: Fuzzer) -> None:
    """Broken Authorization headers and dates: refused with a protocol error, never a crash."""
    target = {"X-Amz-Target": TARGET_PREFIX + "ListClusters", "Content-Type": "application/x-amz-json-1.1"}
    today = time.strftime("%Y%m%d", time.gmtime())
    scope = f"Credential={fuzzer.credentials.access_key}/{today}/us-east-1/ecs/aws4_request"
    signed = "host;x-amz-date;x-amz-target"
    cases = {
        "no authorization": {},
        "empty authorization": {"Authorization": ""},
        "sigv2": {"Authorization": "AWS AKIDX:c2lnbmF0dXJl"},
        "bearer": {"Authorization": "Bearer abc.def.ghi"},
        "only algorithm": {"Authorization": "AWS4-HMAC-SHA256"},
        "no equal sign": {"Authorization": "AWS4-HMAC-SHA256 Credential"},
        "short credential": {
            "Authorization": "AWS4-HMAC-SHA256 Credential=/, SignedHeaders=host, Signature=0"
        },
        "no date": {"Authorization": f"AWS4-HMAC-SHA256 {scope}, SignedHeaders=host, Signature=00"},
        "bad date": {
            "Authorization": f"AWS4-HMAC-SHA256 {scope}, SignedHeaders=host;x-amz-date, Signature=00",
            "X-Amz-Date": "yesterday",
        },
        "year zero": {
            "Authorization": f"AWS4-HMAC-SHA256 {scope}, SignedHeaders=host;x-amz-date, Signature=00",
            "X-Amz-Date": "00000101T000000Z",
        },
        "http date far away": {
            "Authorization": f"AWS4-HMAC-SHA256 {scope}, SignedHeaders=date;host, Signature=00",
            "Date": "Sat, 01 Jan 0001 00:00:00 GMT",
        },
        "non-ascii signature": {
            "Authorization": f"AWS4-HMAC-SHA256 {scope}, SignedHeaders={signed}, Signature=\u00e9",
            "X-Amz-Date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        },
        "huge authorization": {"Authorization": "AWS4-HMAC-SHA256 Credential=" + "A" * 60_000},
    }
    for what, headers in cases.items():
        encoded = {k: v.encode("utf-8").decode("latin-1") for k, v in {**target, **headers}.items()}
        fuzzer.send_unsigned(encoded, b"{}", what=what)
    fuzzer.assert_clean()


def test_server_still_answers(fuzzer: Fuzzer) -> None:
    fuzzer.still_answers()
