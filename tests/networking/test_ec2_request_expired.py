"""EC2's ``RequestExpired``: a request signed outside the server's signature window (15 minutes
either way, as AWS) is answered in EC2's own error format, HTTP 400, against a real server."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from unittest import mock

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.conftest import ServerProcess

DESCRIBE_VPCS = b"Action=DescribeVpcs&Version=2016-11-15"
FORM = "application/x-www-form-urlencoded; charset=utf-8"


def _at(when: dt.datetime):  # type: ignore[no-untyped-def]
    """botocore's clock, set to ``when`` (naive UTC, as botocore reads it)."""
    return mock.patch(
        "botocore.auth.get_current_datetime", return_value=when.astimezone(dt.UTC).replace(tzinfo=None)
    )


def describe_vpcs_signed_at(srv: ServerProcess, when: dt.datetime) -> httpx.Response:
    request = AWSRequest(
        method="POST", url=srv.endpoint + "/", data=DESCRIBE_VPCS, headers={"Content-Type": FORM}
    )
    with _at(when):
        SigV4Auth(Credentials(srv.access_key, srv.secret_key), "ec2", srv.region).add_auth(request)
    prepared = request.prepare()
    with httpx.Client(timeout=10) as client:
        return client.post(prepared.url, headers=dict(prepared.headers), content=DESCRIBE_VPCS)


def ec2_error(resp: httpx.Response) -> tuple[int, str, str, str]:
    root = ET.fromstring(resp.content)
    assert root.tag == "Response", resp.text
    error = root.find("./Errors/Error")
    assert error is not None, resp.text
    return (
        resp.status_code,
        error.findtext("Code") or "",
        error.findtext("Message") or "",
        root.findtext("RequestID") or "",
    )


@pytest.mark.parametrize(
    ("skew", "words"),
    [(dt.timedelta(minutes=-16), "Signature expired"), (dt.timedelta(minutes=16), "not yet current")],
)
def test_a_request_signed_outside_the_window_is_request_expired(dockyard_server, skew, words) -> None:  # type: ignore[no-untyped-def]
    resp = describe_vpcs_signed_at(dockyard_server, dt.datetime.now(dt.UTC) + skew)
    status, code, message, request_id = ec2_error(resp)
    assert (status, code) == (400, "RequestExpired"), resp.text
    assert words in message and request_id
    assert resp.headers["content-type"].startswith("text/xml")


def test_the_same_request_inside_the_window_is_answered(dockyard_server) -> None:  # type: ignore[no-untyped-def]
    for skew in (dt.timedelta(0), dt.timedelta(minutes=-10)):
        resp = describe_vpcs_signed_at(dockyard_server, dt.datetime.now(dt.UTC) + skew)
        assert resp.status_code == 200, resp.text
        root = ET.fromstring(resp.content)
        assert root.tag.endswith("DescribeVpcsResponse") and root.find("{*}vpcSet") is not None


def test_boto3_sees_request_expired(dockyard_server) -> None:  # type: ignore[no-untyped-def]
    ec2 = dockyard_server.client("ec2")
    with _at(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)), pytest.raises(ClientError) as raised:
        ec2.describe_vpcs()
    response = raised.value.response
    assert response["Error"]["Code"] == "RequestExpired"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert response["ResponseMetadata"]["RequestId"]
