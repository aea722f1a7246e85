"""The agent's own SigV4 signer and credential lookup (no botocore in the agent)."""

from __future__ import annotations

import datetime as dt
import json
from unittest import mock

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from dockyard.api import sigv4 as server_sigv4
from dockyard.client.credentials import find_credentials, find_region
from dockyard.client.sigv4 import Credentials, sign

WHEN = dt.datetime(2024, 5, 1, 12, 30, 0, tzinfo=dt.UTC)
BODY = json.dumps({"cluster": "default"}).encode()


def _ours() -> dict[str, str]:
    return sign(
        method="POST",
        host="127.0.0.1:8080",
        path="/",
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "DockyardAgentV1.Poll"},
        body=BODY,
        credentials=Credentials("AKIDEXAMPLE", "secret"),
        region="us-east-1",
        service="ecs",
        now=WHEN,
    )


def test_signature_matches_botocore():
    req = AWSRequest(
        method="POST",
        url="http://127.0.0.1:8080/",
        data=BODY,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "DockyardAgentV1.Poll"},
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=WHEN.replace(tzinfo=None)):
        SigV4Auth(BotoCredentials("AKIDEXAMPLE", "secret"), "ecs", "us-east-1").add_auth(req)
    assert _ours()["Authorization"] == req.headers["Authorization"]


def test_server_verifies_our_signature():
    headers = {k.lower(): v for k, v in _ours().items()}
    signed = server_sigv4.verify(
        "POST",
        "/",
        "",
        headers,
        BODY,
        lookup_secret=lambda key: "secret" if key == "AKIDEXAMPLE" else None,
        now=WHEN.timestamp(),
        window_seconds=900,
    )
    assert signed.access_key_id == "AKIDEXAMPLE" and signed.region == "us-east-1"


def test_credentials_environment_then_profile(tmp_path):
    creds = tmp_path / "credentials"
    creds.write_text(
        "[default]\naws_access_key_id = A1\naws_secret_access_key = S1\n[dev]\naws_access_key_id = A2\n"
        "aws_secret_access_key = S2\nregion = eu-west-1\n"
    )
    config = tmp_path / "config"
    config.write_text("[profile dev]\nregion = ap-south-1\n")
    files = {"AWS_SHARED_CREDENTIALS_FILE": str(creds), "AWS_CONFIG_FILE": str(config)}
    assert (
        find_credentials({"AWS_ACCESS_KEY_ID": "E", "AWS_SECRET_ACCESS_KEY": "ES", **files}).access_key_id
        == "E"
    )
    assert find_credentials(files).access_key_id == "A1"
    assert find_credentials({**files, "AWS_PROFILE": "dev"}).secret_access_key == "S2"
    assert find_region(None, {**files, "AWS_PROFILE": "dev"}) == "ap-south-1"
    assert (
        find_region(None, {**files, "AWS_PROFILE": "dev", "AWS_DEFAULT_REGION": "us-west-2"}) == "us-west-2"
    )
    assert find_region("eu-north-1", {**files, "AWS_REGION": "x"}) == "eu-north-1"
