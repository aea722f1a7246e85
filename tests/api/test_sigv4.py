"""SigV4 verification: requests signed by botocore's own signer, verified by ours."""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.api import sigv4
from dockyard.domain.errors import (
    IncompleteSignature,
    InvalidSignature,
    MissingAuthenticationToken,
    UnrecognizedClient,
)

ACCESS_KEY = "AKIDDOCKYARDTEST"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEYS = {ACCESS_KEY: SECRET}
TARGET = "AmazonEC2ContainerServiceV20141113.DescribeClusters"
BODY = b'{"clusters": ["default"]}'


@dataclass
class Signed:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    signed_at: float

    def verify(self, **overrides: Any) -> sigv4.SignedRequest:
        args: dict[str, Any] = {
            "lookup_secret": KEYS.get,
            "now": self.signed_at,
            "expected_service": "ecs",
        }
        args.update(overrides)
        return sigv4.verify(self.method, self.path, self.query, self.headers, self.body, **args)


def sign(
    url: str = "http://127.0.0.1:8080/",
    body: bytes = BODY,
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    credentials: Credentials | None = None,
    service: str = "ecs",
    region: str = "us-east-1",
    presign_expires: int | None = None,
    target: str | None = TARGET,
) -> Signed:
    """Sign like boto3 does and return the request as the server would see it."""
    base_headers = {"Content-Type": "application/x-amz-json-1.1"}
    if target is not None:
        base_headers["X-Amz-Target"] = target
    request = AWSRequest(method=method, url=url, data=body, headers={**base_headers, **(headers or {})})
    if params:
        request.params = params
    creds = credentials or Credentials(ACCESS_KEY, SECRET)
    if presign_expires is None:
        SigV4Auth(creds, service, region).add_auth(request)
    else:
        SigV4QueryAuth(creds, service, region, expires=presign_expires).add_auth(request)
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    wire = {name.lower(): value for name, value in prepared.headers.items()}
    wire.setdefault("host", parts.netloc)
    stamp = request.context["timestamp"]
    signed_at = float(calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ")))
    return Signed(method, parts.path, parts.query, wire, body, signed_at)


def replace_auth(signed: Signed, old: str, new: str) -> Signed:
    signed.headers["authorization"] = signed.headers["authorization"].replace(old, new)
    return signed


# --- good signatures ---------------------------------------------------------------------------------


def test_good_signature_returns_the_scope() -> None:
    signed = sign()
    result = signed.verify()
    assert result == sigv4.SignedRequest(
        access_key_id=ACCESS_KEY,
        region="us-east-1",
        service="ecs",
        signed_headers=("content-type", "host", "x-amz-date", "x-amz-target"),
        amz_date=signed.headers["x-amz-date"],
        session_token=None,
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/?b=2&a=1&a=0&empty=&flag",
        "http://127.0.0.1:8080/?x=a%20b&y=%2F%2B%7E&z=caf%C3%A9",
        "http://localhost/a%20b/./c/../d//e/",
        "http://localhost/%E2%82%AC/~user/!$'()*,;=:@/",
        "http://localhost/..%2F../x%25y",
        "http://[::1]:9000/path",
    ],
)
def test_paths_and_queries_as_botocore_signs_them(url: str) -> None:
    assert sign(url).verify().access_key_id == ACCESS_KEY


def test_params_encoded_by_urlencode_verify() -> None:
    """AWSRequest(params=...) puts spaces on the wire as '+': they are read as spaces."""
    signed = sign(params={"name": "a b+c", "q": "x/y~z"})
    assert "+" in signed.query
    assert signed.verify().service == "ecs"


def test_raw_plus_in_query_verifies_as_plus() -> None:
    assert sign("http://localhost/?a=1+2").verify().access_key_id == ACCESS_KEY


def test_session_token_is_signed_and_returned() -> None:
    signed = sign(credentials=Credentials(ACCESS_KEY, SECRET, "token/with+chars=="))
    assert signed.verify().session_token == "token/with+chars=="


def test_date_header_instead_of_x_amz_date() -> None:
    signed = sign(headers={"Date": "Mon, 01 Jan 2024 00:00:00 GMT"})
    assert "x-amz-date" not in signed.headers
    result = signed.verify()
    assert result.amz_date == time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(signed.signed_at))
    assert "date" in result.signed_headers


def test_content_sha256_header_matching_the_body_is_accepted() -> None:
    import hashlib

    signed = sign(headers={"X-Amz-Content-SHA256": hashlib.sha256(BODY).hexdigest()})
    assert "x-amz-content-sha256" in signed.verify().signed_headers


def test_empty_body() -> None:
    assert sign(body=b"").verify().access_key_id == ACCESS_KEY


def test_presigned_query() -> None:
    signed = sign("http://127.0.0.1:8080/", b"", method="GET", presign_expires=300)
    assert "authorization" not in signed.headers
    assert signed.verify().access_key_id == ACCESS_KEY


def test_signing_keys_are_cached() -> None:
    sigv4.signing_key.cache_clear()
    sign().verify()
    sign().verify()
    info = sigv4.signing_key.cache_info()
    assert (info.misses, info.hits) == (1, 1)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    segments=st.lists(st.text(min_size=1, max_size=8), max_size=4),
    params=st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=4),
    body=st.binary(max_size=64),
)
def test_anything_botocore_signs_verifies(segments: list[str], params: dict[str, str], body: bytes) -> None:
    from urllib.parse import quote

    path = "/" + "/".join(quote(segment, safe="") for segment in segments)
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in params.items())
    url = "http://localhost:8080" + path + ("?" + query if query else "")
    assert sign(url, body).verify().access_key_id == ACCESS_KEY


# --- errors -------------------------------------------------------------------------------------------


def _drop(name: str) -> Callable[[Signed], Signed]:
    def apply(signed: Signed) -> Signed:
        del signed.headers[name]
        return signed

    return apply


def _set(name: str, value: str) -> Callable[[Signed], Signed]:
    def apply(signed: Signed) -> Signed:
        signed.headers[name] = value
        return signed

    return apply


def _tamper_body(signed: Signed) -> Signed:
    signed.body = signed.body.replace(b"default", b"other")
    return signed


def _unsign(header: str) -> Callable[[Signed], Signed]:
    def apply(signed: Signed) -> Signed:
        auth = signed.headers["authorization"]
        names = auth.split("SignedHeaders=")[1].split(",")[0]
        kept = ";".join(name for name in names.split(";") if name != header)
        return replace_auth(signed, f"SignedHeaders={names}", f"SignedHeaders={kept}")

    return apply


ERROR_CASES: list[tuple[str, Callable[[Signed], Signed], type[Exception], str]] = [
    ("no authorization", _drop("authorization"), MissingAuthenticationToken, "Missing Authentication Token"),
    (
        "blank authorization",
        _set("authorization", "  "),
        MissingAuthenticationToken,
        "Missing Authentication",
    ),
    (
        "sigv2 header",
        _set("authorization", "AWS AKID:abc="),
        IncompleteSignature,
        "Authorization header requires 'Credential' parameter.",
    ),
    ("bearer token", _set("authorization", "Bearer xyz"), IncompleteSignature, "requires 'Signature'"),
    (
        "unsupported algorithm",
        lambda s: replace_auth(s, "AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256"),
        IncompleteSignature,
        "Unsupported AWS 'algorithm'",
    ),
    (
        "missing equal sign",
        lambda s: replace_auth(s, "Credential=", "Credential "),
        IncompleteSignature,
        "not a valid key=value pair (missing equal-sign)",
    ),
    ("no signature", lambda s: replace_auth(s, "Signature=", "Sig="), IncompleteSignature, "'Signature'"),
    (
        "no date",
        _drop("x-amz-date"),
        IncompleteSignature,
        "requires existence of either a 'X-Amz-Date' or a 'Date' header",
    ),
    ("malformed date", _set("x-amz-date", "2024-01-01T00:00:00Z"), IncompleteSignature, "ISO-8601"),
    (
        "short credential",
        lambda s: replace_auth(s, "/us-east-1/", "/"),
        IncompleteSignature,
        "Credential must",
    ),
    (
        "bad terminator",
        lambda s: replace_auth(s, "/aws4_request", "/aws5_request"),
        InvalidSignature,
        "valid terminator",
    ),
    (
        "wrong service",
        lambda s: replace_auth(s, "/ecs/", "/ec2/"),
        InvalidSignature,
        "correct service: 'ecs'",
    ),
    (
        "credential date differs",
        lambda s: replace_auth(s, "Credential=" + ACCESS_KEY + "/", "Credential=" + ACCESS_KEY + "/1999"),
        InvalidSignature,
        "Date in Credential scope does not match",
    ),
    ("host unsigned", _unsign("host"), InvalidSignature, "'Host' or ':authority' must be a 'SignedHeader'"),
    ("date unsigned", _unsign("x-amz-date"), InvalidSignature, "'X-Amz-Date' must be a 'SignedHeader'"),
    ("target unsigned", _unsign("x-amz-target"), InvalidSignature, "'X-Amz-Target' must be a 'SignedHeader'"),
    (
        "unknown access key",
        lambda s: replace_auth(s, ACCESS_KEY, "AKIDUNKNOWN"),
        UnrecognizedClient,
        "The security token included in the request is invalid.",
    ),
    ("tampered body", _tamper_body, InvalidSignature, "does not match the signature you provided"),
    (
        "tampered target",
        _set("x-amz-target", "AmazonEC2ContainerServiceV20141113.DeleteCluster"),
        InvalidSignature,
        "does not match the signature you provided",
    ),
    ("wrong region", lambda s: replace_auth(s, "/us-east-1/", "/eu-west-1/"), InvalidSignature, "calculated"),
    ("tampered host", _set("host", "evil:8080"), InvalidSignature, "calculated"),
    ("lone surrogate in a header", _set("host", "h\udcff"), InvalidSignature, "calculated"),
    ("non-ascii signature", lambda s: replace_auth(s, "Signature=", "Signature=é"), InvalidSignature, "calc"),
    (
        "content hash mismatch",
        _set("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        InvalidSignature,
        "'x-amz-content-sha256' header does not match",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_errors(mutate: Callable[[Signed], Signed], error: type[Exception], message: str) -> None:
    signed = mutate(sign())
    with pytest.raises(error) as raised:
        signed.verify()
    assert message in str(raised.value)


def test_unsigned_target_sent_after_signing() -> None:
    signed = sign(target=None)
    signed.headers["x-amz-target"] = TARGET
    with pytest.raises(InvalidSignature, match="'X-Amz-Target' must be a 'SignedHeader'"):
        signed.verify()


def test_wrong_secret() -> None:
    with pytest.raises(InvalidSignature, match="does not match the signature you provided"):
        sign().verify(lookup_secret={ACCESS_KEY: "not-the-secret"}.get)


@pytest.mark.parametrize(
    ("offset", "outcome"),
    [
        (0.0, None),
        (899.0, None),
        (-899.0, None),
        (901.0, "Signature expired: "),
        (-901.0, "Signature not yet current: "),
    ],
)
def test_time_window(offset: float, outcome: str | None) -> None:
    signed = sign()
    if outcome is None:
        signed.verify(now=signed.signed_at + offset)
        return
    with pytest.raises(InvalidSignature) as raised:
        signed.verify(now=signed.signed_at + offset)
    assert raised.value.message.startswith(outcome + signed.headers["x-amz-date"])
    assert "15 min.)" in raised.value.message


def test_expired_message_reads_like_aws() -> None:
    signed = sign()
    with pytest.raises(InvalidSignature) as raised:
        signed.verify(now=signed.signed_at + 600, window_seconds=300)

    def stamp(t: float) -> str:
        return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))

    amz_date = signed.headers["x-amz-date"]
    now = signed.signed_at + 600
    assert raised.value.message == (
        f"Signature expired: {amz_date} is now earlier than {stamp(now - 300)} ({stamp(now)} - 5 min.)"
    )


def test_presigned_expiry() -> None:
    signed = sign("http://127.0.0.1:8080/", b"", method="GET", presign_expires=60)
    signed.verify(now=signed.signed_at + 60)
    with pytest.raises(InvalidSignature, match="Signature expired"):
        signed.verify(now=signed.signed_at + 61)


def test_presigned_missing_parameters() -> None:
    with pytest.raises(IncompleteSignature, match="'X-Amz-Credential'"):
        sigv4.verify("GET", "/", "X-Amz-Signature=abc", {"host": "h"}, b"", lookup_secret=KEYS.get, now=0.0)


def test_canonical_path_double_encodes() -> None:
    assert sigv4.canonical_path("/a%20b/./c/../d//") == "/a%2520b/d/"
    assert sigv4.canonical_path("") == "/"
    assert sigv4.canonical_path("/~x/é") == "/~x/%C3%A9"
