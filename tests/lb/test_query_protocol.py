"""The AWS query protocol: form decoding and XML encoding (pure), and the wire on a real server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlencode

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from dockyard.api import validation
from dockyard.api.query_protocol import decode, parse_form, render_error, render_response
from tests.lb.conftest import short

NS = "{http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/}"
AWS = shutil.which("aws") or str(Path(sys.executable).with_name("aws"))


def model_input(operation: str, body: str) -> dict:
    op = validation.service_model("elbv2").operation_model(operation)
    return decode(op.input_shape, parse_form(body))


def test_decode_lists_structures_and_scalars():
    body = urlencode(
        {
            "Name": "tg",
            "Port": "8080",
            "HealthCheckEnabled": "true",
            "Matcher.HttpCode": "200-299",
            "Tags.member.2.Key": "b",
            "Tags.member.1.Key": "a",
            "Tags.member.1.Value": "1",
            "Unknown": "dropped",
        }
    )
    assert model_input("CreateTargetGroup", body) == {
        "Name": "tg",
        "Port": 8080,
        "HealthCheckEnabled": True,
        "Matcher": {"HttpCode": "200-299"},
        "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b"}],
    }
    nested = model_input(
        "CreateRule",
        urlencode(
            {
                "Conditions.member.1.PathPatternConfig.Values.member.1": "/a/*",
                "Actions.member.1.ForwardConfig.TargetGroups.member.1.TargetGroupArn": "arn",
                "Priority": "x",  # not a number: left a string for the model walker to reject
            }
        ),
    )
    assert nested["Conditions"] == [{"PathPatternConfig": {"Values": ["/a/*"]}}]
    assert nested["Actions"][0]["ForwardConfig"]["TargetGroups"] == [{"TargetGroupArn": "arn"}]
    assert nested["Priority"] == "x"
    assert model_input("DescribeLoadBalancers", "Names=") == {"Names": []}  # how an empty list is sent


def test_render_response_and_error():
    op = validation.service_model("elbv2").operation_model("DescribeTargetGroups")
    xml = render_response(
        op,
        {
            "TargetGroups": [
                {"TargetGroupName": "a<b", "Port": 80, "HealthCheckEnabled": True, "LoadBalancerArns": []}
            ]
        },
        "rid",
    )
    root = ET.fromstring(xml)
    assert root.tag == NS + "DescribeTargetGroupsResponse"
    member = root.find(f"{NS}DescribeTargetGroupsResult/{NS}TargetGroups/{NS}member")
    assert member is not None and member.findtext(NS + "TargetGroupName") == "a<b"
    assert member.findtext(NS + "HealthCheckEnabled") == "true" and member.findtext(NS + "Port") == "80"
    assert root.findtext(f"{NS}ResponseMetadata/{NS}RequestId") == "rid"
    err = ET.fromstring(render_error("LoadBalancerNotFound", "gone & away", 400, "r2"))
    assert err.findtext(f"{NS}Error/{NS}Code") == "LoadBalancerNotFound"
    assert (
        err.findtext(f"{NS}Error/{NS}Type") == "Sender"
        and err.findtext(f"{NS}Error/{NS}Message") == "gone & away"
    )
    assert err.findtext(NS + "RequestId") == "r2"


def send(
    srv,
    params: dict[str, str],
    *,
    key: str | None = None,
    secret: str | None = None,
    sign: bool = True,
    service: str = "elasticloadbalancing",
) -> httpx.Response:  # type: ignore[no-untyped-def]
    body = urlencode(params)
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    request = AWSRequest(method="POST", url=srv.endpoint + "/", data=body, headers=headers)
    if sign:
        SigV4Auth(
            Credentials(key or srv.access_key, secret or srv.secret_key), service, "us-east-1"
        ).add_auth(request)
    prepared = request.prepare()
    return httpx.post(prepared.url, content=body, headers=dict(prepared.headers), timeout=10)


def error_of(response: httpx.Response) -> tuple[int, str, str, str]:
    root = ET.fromstring(response.content)
    return (
        response.status_code,
        root.findtext(f"{NS}Error/{NS}Type") or "",
        root.findtext(f"{NS}Error/{NS}Code") or "",
        root.findtext(NS + "RequestId") or "",
    )


def test_errors_on_the_wire(lb_server):
    action = {"Action": "DescribeLoadBalancers", "Version": "2015-12-01"}
    status, kind, code, rid = error_of(send(lb_server, action, sign=False))
    assert (status, kind, code) == (403, "Sender", "MissingAuthenticationToken") and rid
    assert error_of(send(lb_server, action, key="AKIDUNKNOWN0000000"))[:3] == (
        403,
        "Sender",
        "InvalidClientTokenId",
    )
    assert error_of(send(lb_server, action, secret="wrong"))[:3] == (403, "Sender", "SignatureDoesNotMatch")
    assert error_of(send(lb_server, {**action, "Action": "Nope"}))[:3] == (400, "Sender", "InvalidAction")
    assert error_of(send(lb_server, {**action, "Version": "2012-06-01"}))[2] == "InvalidAction"
    bad = {**action, "PageSize": "0"}
    assert error_of(send(lb_server, bad))[:3] == (400, "Sender", "ValidationError")
    ok = send(lb_server, action)
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/xml")
    assert ET.fromstring(ok.content).tag == NS + "DescribeLoadBalancersResponse"
    # the same endpoint still speaks ECS's JSON protocol for requests signed for ecs
    ecs = lb_server.client("ecs")
    assert "clusterArns" in ecs.list_clusters()


def test_aws_cli_elbv2(lb_server, unique):
    def aws(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AWS, "--endpoint-url", lb_server.endpoint, "--output", "json", "elbv2", *args],
            env=lb_server.cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    name = short(unique)
    lb = json.loads(aws("create-load-balancer", "--name", name).stdout)["LoadBalancers"][0]
    tg = json.loads(
        aws(
            "create-target-group",
            "--name",
            name,
            "--protocol",
            "HTTP",
            "--port",
            "80",
            "--vpc-id",
            "vpc-1",
            "--target-type",
            "ip",
            "--health-check-interval-seconds",
            "5",
            "--health-check-timeout-seconds",
            "2",
        ).stdout
    )["TargetGroups"][0]
    try:
        out = json.loads(
            aws(
                "create-listener",
                "--load-balancer-arn",
                lb["LoadBalancerArn"],
                "--protocol",
                "HTTP",
                "--port",
                "80",
                "--default-actions",
                f"Type=forward,TargetGroupArn={tg['TargetGroupArn']}",
            ).stdout
        )
        assert out["Listeners"][0]["Port"] == 80
        aws(
            "register-targets",
            "--target-group-arn",
            tg["TargetGroupArn"],
            "--targets",
            "Id=127.0.0.3,Port=8080",
        )
        health = json.loads(aws("describe-target-health", "--target-group-arn", tg["TargetGroupArn"]).stdout)
        assert health["TargetHealthDescriptions"][0]["Target"] == {"Id": "127.0.0.3", "Port": 8080}
        failed = aws("describe-load-balancers", "--names", name + "-missing", check=False)
        assert failed.returncode != 0 and "LoadBalancerNotFound" in failed.stderr
    finally:
        aws("delete-load-balancer", "--load-balancer-arn", lb["LoadBalancerArn"])
        aws("delete-target-group", "--target-group-arn", tg["TargetGroupArn"])
