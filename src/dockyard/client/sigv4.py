"""AWS Signature Version 4 for the agent's JSON POSTs, with hashlib and hmac only.

The agent must stay small (ARCHITECTURE.md: one HTTP client stack, no botocore), so it signs its
own requests. Only what the agent sends is covered: ``POST /`` (or a path without special
characters) with an empty query string and a JSON body. Signed headers: ``content-type``, ``host``,
``x-amz-date``, ``x-amz-target`` (and ``x-amz-security-token`` with temporary credentials), which is
what botocore signs for the same request and what the server requires (``api/sigv4.py``).

    canonical request = method \\n path \\n query \\n headers \\n signed-headers \\n sha256(body)
    string to sign    = AWS4-HMAC-SHA256 \\n amz-date \\n scope \\n sha256(canonical request)
    signing key       = HMAC chain over (date, region, service, "aws4_request")
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


@lru_cache(maxsize=16)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    k = _hmac(("AWS4" + secret).encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def sign(
    *,
    method: str,
    host: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    credentials: Credentials,
    region: str,
    service: str,
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """The headers to send: ``headers`` plus Host, X-Amz-Date, (token) and Authorization."""
    when = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    out = dict(headers)
    out["Host"] = host
    out["X-Amz-Date"] = amz_date
    if credentials.session_token:
        out["X-Amz-Security-Token"] = credentials.session_token
    canonical_headers = {k.lower(): " ".join(str(v).split()) for k, v in out.items()}
    names = sorted(canonical_headers)
    signed = ";".join(names)
    canonical = "\n".join(
        [
            method.upper(),
            quote(path or "/", safe="/~"),
            "",
            "".join(f"{n}:{canonical_headers[n]}\n" for n in names),
            signed,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = signing_key(credentials.secret_access_key, date, region, service)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["Authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    return out
