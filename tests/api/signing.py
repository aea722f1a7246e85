"""Raw signed requests for protocol tests (botocore signs; we send with httpx)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from unittest import mock

import httpx
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

TARGET = "AmazonEC2ContainerServiceV20141113."


def signed_request(
    endpoint: str,
    operation: str,
    body: bytes | dict[str, Any],
    *,
    access_key: str,
    secret_key: str,
    region: str = "us-east-1",
    service: str = "ecs",
    when: dt.datetime | None = None,
    extra_headers: dict[str, str] | None = None,
    target: str | None = None,
) -> httpx.Request:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": target if target is not None else TARGET + operation,
        **(extra_headers or {}),
    }
    req = AWSRequest(method="POST", url=endpoint + "/", data=raw, headers=headers)
    signer = SigV4Auth(Credentials(access_key, secret_key), service, region)
    if when is None:
        signer.add_auth(req)
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
            signer.add_auth(req)
    prepared = req.prepare()
    return httpx.Request("POST", prepared.url, headers=dict(prepared.headers), content=raw)


def send(request: httpx.Request, timeout: float = 10.0) -> httpx.Response:
    with httpx.Client(timeout=timeout) as c:
        return c.send(request)
