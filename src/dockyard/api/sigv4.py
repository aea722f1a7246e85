"""AWS Signature Version 4 verification, the server side of what botocore's ``SigV4Auth`` signs.

``verify()`` is pure: the request's parts, a secret lookup and the time go in; a ``SignedRequest``
comes out or an error from ``dockyard.domain.errors`` is raised. Order of checks, cheapest first,
so that a bad request never costs a body hash::

    Authorization header (or presigned X-Amz-* query)   none       -> MissingAuthenticationToken
      parse algorithm, Credential, SignedHeaders, Signature  bad   -> IncompleteSignature
      credential scope (terminator, service, date)          bad    -> InvalidSignature
      host / x-amz-date / x-amz-target signed               no     -> InvalidSignature
      x-amz-date within +-window (or presigned expiry)      no     -> InvalidSignature
      access key known                                      no     -> UnrecognizedClient
      X-Amz-Content-Sha256 equals the body's hash           no     -> InvalidSignature
      signature equals ours (hmac.compare_digest)           no     -> InvalidSignature

Canonical request, as botocore builds it for every service but S3:

- path: the raw path *as sent on the wire* (still percent-encoded; Starlette's
  ``scope["raw_path"]``), dot segments and empty segments removed, then percent-encoded once more
  with ``/`` and ``~`` safe. Encoding the already-encoded path is SigV4's "double encoding" for
  non-S3 services: ``/a%20b`` is signed as ``/a%2520b``.
- query: ``&``-separated pairs, each name and value decoded and re-encoded with only ``-_.~`` safe,
  sorted by (name, value); a name without ``=`` gets an empty value. ``X-Amz-Signature`` is left out
  for presigned requests. A ``+`` is read as a space (form encoding, what urllib's ``urlencode``
  writes). botocore signs a URL's own query string literally (sorted, not re-encoded), so when that
  literal form differs (``+``, ``%7E``) and the normalised one fails, the literal one is tried.
- headers: the names listed in SignedHeaders, in that order, each value trimmed with runs of
  whitespace collapsed to one space. ``headers`` must map lower-cased names to values decoded as
  Latin-1 (what Starlette does); repeated headers joined with ``,`` by the caller.
- payload: the hex SHA-256 of the body. A client may send it in ``X-Amz-Content-Sha256``; it must
  then match the body (``UNSIGNED-PAYLOAD`` is not accepted: JSON bodies are always signed).

Derived signing keys (four chained HMACs) depend only on (secret, date, region, service); they are
kept in a bounded LRU so a verification costs two SHA-256 hashes and one HMAC.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_tz
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import quote, unquote_plus

from dockyard.domain.errors import (
    IncompleteSignature,
    InvalidSignature,
    MissingAuthenticationToken,
    UnrecognizedClient,
)

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
MAX_PRESIGN_EXPIRES = 604800  # one week, as AWS allows
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)
_ECHO_LIMIT = 512  # characters of a client's header echoed back in an error message


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """Who signed a verified request and for what scope.

    ``session_token`` is the X-Amz-Security-Token the client sent (temporary credentials); the caller
    checks it belongs to ``access_key_id``.
    """

    access_key_id: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    amz_date: str
    session_token: str | None = None


class _Auth(NamedTuple):
    """The four parts of a SigV4 signature, from the Authorization header or the query."""

    credential: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str  # ISO-8601 basic format, 'YYYYMMDDTHHMMSSZ'
    date_header: str  # the header that carried the date: 'x-amz-date' or 'date' ('' when presigned)
    expires: int | None  # presigned only
    session_token: str | None
    presigned: bool


def verify(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    lookup_secret: Callable[[str], str | None],
    now: float,
    window_seconds: float = 900.0,
    expected_service: str | None = None,
) -> SignedRequest:
    """Check a request's SigV4 signature; return who signed it or raise a ``ProtocolError``."""
    query_params = _split_query(query) if query else []
    auth = _read_auth(headers, query_params)
    access_key, date, region, service, signed_at = _parse_credential(auth, expected_service)
    _require_signed(auth, headers)
    _check_time(auth, signed_at, now, window_seconds)

    secret = lookup_secret(access_key)
    if secret is None:
        raise UnrecognizedClient("The security token included in the request is invalid.")

    payload_hash = hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256
    claimed = headers.get("x-amz-content-sha256")
    if claimed is not None and claimed.strip().lower() != payload_hash:
        raise InvalidSignature("The provided 'x-amz-content-sha256' header does not match what was computed.")

    try:
        matched = _signature_matches(
            auth, secret, date, region, service, method, path, query, query_params, headers, payload_hash
        )
    except UnicodeError:  # lone surrogates from a caller's decoding: cannot have been signed
        matched = False
    if not matched:
        raise InvalidSignature(_MISMATCH)
    return SignedRequest(
        access_key_id=access_key,
        region=region,
        service=service,
        signed_headers=auth.signed_headers,
        amz_date=auth.amz_date,
        session_token=auth.session_token,
    )


def _signature_matches(
    auth: _Auth,
    secret: str,
    date: str,
    region: str,
    service: str,
    method: str,
    path: str,
    query: str,
    query_params: list[tuple[str, str]],
    headers: Mapping[str, str],
    payload_hash: str,
) -> bool:
    key = signing_key(secret, date, region, service)
    head = f"{ALGORITHM}\n{auth.amz_date}\n{date}/{region}/{service}/{TERMINATOR}\n"
    method_and_path = f"{method.upper()}\n{canonical_path(path)}\n"
    canonical_headers = "".join([f"{name}:{_trim(headers.get(name, ''))}\n" for name in auth.signed_headers])
    rest = f"\n{canonical_headers}\n{';'.join(auth.signed_headers)}\n{payload_hash}"
    given = auth.signature.encode("utf-8", "surrogatepass")
    # SigV4 signs a normalised query, but botocore signs a URL's query string exactly as written
    # (sorted, not re-encoded): when the two differ ('+', '%7E', ...) try the literal form too.
    normalised = _canonical_query(query_params, auth.presigned)
    if _matches(key, head, method_and_path + normalised + rest, given):
        return True
    literal = _literal_query(query, auth.presigned)
    return literal != normalised and _matches(key, head, method_and_path + literal + rest, given)


def _matches(key: bytes, head: str, canonical: str, given: bytes) -> bool:
    string_to_sign = head + hashlib.sha256(canonical.encode()).hexdigest()
    expected = hmac.digest(key, string_to_sign.encode(), "sha256").hex()
    return hmac.compare_digest(expected.encode(), given)


@lru_cache(maxsize=4096)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")."""
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, TERMINATOR):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def canonical_path(raw_path: str) -> str:
    """The path as botocore signs it for non-S3 services: normalised, then encoded again."""
    if raw_path in ("", "/"):
        return "/"
    segments = [s for s in raw_path.split("/") if s and s != "."]
    kept: list[str] = []
    for segment in segments:
        if segment == "..":
            if kept:
                kept.pop()
        else:
            kept.append(segment)
    normalised = "/" + "/".join(kept)
    if raw_path.endswith("/") and kept:
        normalised += "/"
    if not raw_path.startswith("/"):
        normalised = normalised[1:]
    return quote(normalised, safe="/~")


# --- parsing ---------------------------------------------------------------------------------------


def _echo(text: str) -> str:
    return text if len(text) <= _ECHO_LIMIT else text[:_ECHO_LIMIT] + "..."


def _split_query(query: str) -> list[tuple[str, str]]:
    """Decoded (name, value) pairs of a raw query string; '+' is a space, as in form encoding."""
    pairs = []
    for piece in query.split("&"):
        if piece:
            name, _, value = piece.partition("=")
            pairs.append((unquote_plus(name), unquote_plus(value)))
    return pairs


def _literal_query(query: str, presigned: bool) -> str:
    """The query as written, pairs sorted: what botocore signs for a URL that carries its query."""
    if not query:
        return ""
    pairs = sorted(piece.partition("=")[::2] for piece in query.split("&"))
    return "&".join(
        f"{name}={value}" for name, value in pairs if not (presigned and name == "X-Amz-Signature")
    )


def _canonical_query(pairs: list[tuple[str, str]], presigned: bool) -> str:
    if not pairs:
        return ""
    encoded = sorted(
        (quote(name, safe="-_.~"), quote(value, safe="-_.~"))
        for name, value in pairs
        if not (presigned and name == "X-Amz-Signature")
    )
    return "&".join(f"{name}={value}" for name, value in encoded)


def _read_auth(headers: Mapping[str, str], query: list[tuple[str, str]]) -> _Auth:
    header = headers.get("authorization")
    if header is not None and header.strip():
        return _parse_header(header, headers)
    params = dict(query)
    if "X-Amz-Signature" in params or "X-Amz-Algorithm" in params or "X-Amz-Credential" in params:
        return _parse_presigned(params)
    raise MissingAuthenticationToken("Missing Authentication Token")


def _parse_header(header: str, headers: Mapping[str, str]) -> _Auth:
    algorithm, _, rest = header.strip().partition(" ")
    fields: dict[str, str] = {}
    if algorithm == ALGORITHM:
        for part in rest.split(","):
            part = part.strip()
            if not part:
                continue
            name, eq, value = part.partition("=")
            if not eq:
                raise IncompleteSignature(
                    f"'{_echo(part)}' not a valid key=value pair (missing equal-sign) in "
                    f"Authorization header: '{_echo(header)}'."
                )
            fields[name.strip()] = value.strip()
    amz_date, date_header = _request_date(headers)
    if not (
        fields.get("Credential") and fields.get("Signature") and fields.get("SignedHeaders") and amz_date
    ):
        problems = [
            f"Authorization header requires '{name}' parameter."
            for name in ("Credential", "Signature", "SignedHeaders")
            if not fields.get(name)
        ]
        if not amz_date:
            problems.append(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
            )
        if algorithm.startswith("AWS4-") and algorithm != ALGORITHM and rest:
            problems = [f"Unsupported AWS 'algorithm': '{_echo(algorithm)}'."]
        raise IncompleteSignature(" ".join(problems) + f" Authorization={_echo(header)}")
    return _Auth(
        credential=fields["Credential"],
        signed_headers=tuple(fields["SignedHeaders"].split(";")),
        signature=fields["Signature"],
        amz_date=amz_date,
        date_header=date_header,
        expires=None,
        session_token=headers.get("x-amz-security-token"),
        presigned=False,
    )


def _parse_presigned(params: dict[str, str]) -> _Auth:
    required = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature")
    missing = [name for name in required if not params.get(name)]
    if missing:
        raise IncompleteSignature(
            " ".join(f"AWS query-string parameters must include '{name}'." for name in missing)
            + " Re-examine the query-string parameters."
        )
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise IncompleteSignature(f"Unsupported AWS 'algorithm': '{_echo(params['X-Amz-Algorithm'])}'.")
    expires: int | None = None
    raw_expires = params.get("X-Amz-Expires")
    if raw_expires is not None:
        if not raw_expires.isdigit() or not 1 <= int(raw_expires) <= MAX_PRESIGN_EXPIRES:
            raise IncompleteSignature(
                f"X-Amz-Expires must be a whole number of seconds from 1 to {MAX_PRESIGN_EXPIRES}, "
                f"not '{_echo(raw_expires)}'."
            )
        expires = int(raw_expires)
    return _Auth(
        credential=params["X-Amz-Credential"],
        signed_headers=tuple(params["X-Amz-SignedHeaders"].split(";")),
        signature=params["X-Amz-Signature"],
        amz_date=params["X-Amz-Date"],
        date_header="",
        expires=expires,
        session_token=params.get("X-Amz-Security-Token"),
        presigned=True,
    )


def _request_date(headers: Mapping[str, str]) -> tuple[str, str]:
    """The request time in ISO-8601 basic format and the header it came from ('', '') if none.

    ``X-Amz-Date`` wins; an RFC 1123 ``Date`` header is converted (botocore signs the converted
    form when it dates a request with ``Date``). A ``Date`` that does not parse is returned as-is,
    so the format check reports it.
    """
    amz_date = headers.get("x-amz-date")
    if amz_date is not None:
        return amz_date.strip(), "x-amz-date"
    http_date = headers.get("date")
    if http_date is None:
        return "", ""
    parsed = parsedate_tz(http_date)
    try:
        if parsed is None or not 1 <= parsed[0] <= 9999:
            raise ValueError(http_date)
        return _format_time(calendar.timegm(parsed[:9]) - (parsed[9] or 0)), "date"
    except (ValueError, OverflowError, OSError):
        return http_date.strip(), "date"


def _parse_credential(auth: _Auth, expected_service: str | None) -> tuple[str, str, str, str, int]:
    """Access key, date, region and service of the credential scope, and when the request was signed."""
    parts = auth.credential.split("/")
    if len(parts) != 5 or not all(parts[:4]):
        raise IncompleteSignature(
            "Credential must have the form '<access key>/<YYYYMMDD>/<region>/<service>/aws4_request', "
            f"not '{_echo(auth.credential)}'."
        )
    access_key, date, region, service, terminator = parts
    if terminator != TERMINATOR:
        raise InvalidSignature(
            f"Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{_echo(terminator)}'."
        )
    if expected_service is not None and service != expected_service:
        raise InvalidSignature(f"Credential should be scoped to correct service: '{expected_service}'.")
    signed_at = _parse_time(auth.amz_date)
    if signed_at is None:
        raise IncompleteSignature(
            f"Date must be in ISO-8601 'basic format' (YYYYMMDD'T'HHMMSS'Z'). Got '{_echo(auth.amz_date)}'."
        )
    if date != auth.amz_date[:8]:
        raise InvalidSignature(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{_echo(date)}' != '{auth.amz_date[:8]}', from '{auth.amz_date}'."
        )
    return access_key, date, region, service, signed_at


def _require_signed(auth: _Auth, headers: Mapping[str, str]) -> None:
    """host, the header that dates the request, x-amz-target and the session token must be signed.

    Unsigned, a replayed signature could be re-aimed at another operation (x-amz-target) or another
    time (date). A presigned request carries its date and token in the signed query instead.
    """
    signed = auth.signed_headers
    if "host" not in signed:
        raise InvalidSignature("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
    must = []
    if auth.date_header == "x-amz-date":
        must.append(("x-amz-date", "X-Amz-Date"))
    elif auth.date_header == "date":
        must.append(("date", "Date"))
    if "x-amz-target" in headers:
        must.append(("x-amz-target", "X-Amz-Target"))
    if not auth.presigned and "x-amz-security-token" in headers:
        must.append(("x-amz-security-token", "X-Amz-Security-Token"))
    for name, title in must:
        if name not in signed:
            raise InvalidSignature(f"'{title}' must be a 'SignedHeader' in the AWS Authorization.")


def _check_time(auth: _Auth, signed_at: int, now: float, window: float) -> None:
    if signed_at > now + window:
        raise InvalidSignature(
            f"Signature not yet current: {auth.amz_date} is still later than "
            f"{_format_time(now + window)} ({_format_time(now)} + {window / 60:g} min.)"
        )
    if auth.expires is not None:
        if now > signed_at + auth.expires:
            raise InvalidSignature(
                f"Signature expired: {auth.amz_date} is now earlier than "
                f"{_format_time(now - auth.expires)} ({_format_time(now)} - {auth.expires} sec.)"
            )
    elif signed_at < now - window:
        raise InvalidSignature(
            f"Signature expired: {auth.amz_date} is now earlier than "
            f"{_format_time(now - window)} ({_format_time(now)} - {window / 60:g} min.)"
        )


def _parse_time(text: str) -> int | None:
    """Seconds since the epoch of 'YYYYMMDDTHHMMSSZ', or None (a hand parser: strptime is slow)."""
    if len(text) != 16:
        return None
    return _parse_time16(text)


@lru_cache(maxsize=1024)  # the requests of one second share their date: parse it once
def _parse_time16(text: str) -> int | None:
    if text[8] != "T" or text[15] != "Z":
        return None
    digits = text[:8] + text[9:15]
    if not (digits.isascii() and digits.isdigit()):
        return None
    year, month, day = int(text[0:4]), int(text[4:6]), int(text[6:8])
    hour, minute, second = int(text[9:11]), int(text[11:13]), int(text[13:15])
    if not (
        year >= 1 and 1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 60
    ):
        return None
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


def _format_time(seconds: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(seconds))


def _trim(value: str) -> str:
    return " ".join(value.split())
