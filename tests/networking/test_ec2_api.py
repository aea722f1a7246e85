"""The EC2 subset through boto3 and the AWS CLI against a real server: defaults, ranges, groups,
rules, and errors in EC2's own format."""

from __future__ import annotations

import json
import subprocess
import uuid

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.conftest import ServerProcess

AWS = "aws"


@pytest.fixture
def ec2(dockyard_server: ServerProcess):  # type: ignore[no-untyped-def]
    return dockyard_server.client("ec2")


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_default_vpc_subnet_and_group(ec2) -> None:  # type: ignore[no-untyped-def]
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    assert len(vpcs) == 1 and vpcs[0]["IsDefault"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpcs[0]["VpcId"]]}])["Subnets"]
    assert subnets and subnets[0]["DefaultForAz"]
    groups = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"]
    assert groups[0]["IpPermissions"][0]["UserIdGroupPairs"][0]["GroupId"] == groups[0]["GroupId"]
    assert groups[0]["IpPermissionsEgress"][0]["IpRanges"] == [{"CidrIp": "0.0.0.0/0"}]


def test_ranges_must_not_overlap_docker_or_routes(ec2) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as e:
        ec2.create_vpc(CidrBlock="172.17.0.0/16")
    assert _code(e) == "InvalidVpc.Range"
    vpc = ec2.create_vpc(CidrBlock=f"10.{200 + uuid.uuid4().int % 10}.0.0/16")["Vpc"]
    with pytest.raises(ClientError) as e:
        ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock="10.99.0.0/24")
    assert _code(e) == "InvalidSubnet.Range"
    net = vpc["CidrBlock"].rsplit(".", 2)[0]
    sub = ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock=f"{net}.1.0/24")["Subnet"]
    assert sub["AvailableIpAddressCount"] == 251
    with pytest.raises(ClientError) as e:
        ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock=f"{net}.1.0/25")
    assert _code(e) == "InvalidSubnet.Conflict"


def test_groups_rules_and_errors(ec2) -> None:  # type: ignore[no-untyped-def]
    name = f"web-{uuid.uuid4().hex[:8]}"
    gid = ec2.create_security_group(GroupName=name, Description="web")["GroupId"]
    with pytest.raises(ClientError) as e:
        ec2.create_security_group(GroupName=name, Description="again")
    assert _code(e) == "InvalidGroup.Duplicate"
    perm = {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}
    ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[perm])
    with pytest.raises(ClientError) as e:
        ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[perm])
    assert _code(e) == "InvalidPermission.Duplicate"
    other = ec2.create_security_group(GroupName=name + "-lb", Description="lb")["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=gid,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "UserIdGroupPairs": [{"GroupId": other}]}
        ],
    )
    got = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]["IpPermissions"]
    assert got[0]["IpRanges"] == [{"CidrIp": "10.0.0.0/8"}]
    assert got[0]["UserIdGroupPairs"][0]["GroupId"] == other
    # a group another group's rule refers to is in use
    with pytest.raises(ClientError) as e:
        ec2.delete_security_group(GroupId=other)
    assert _code(e) == "DependencyViolation"
    ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=[perm])
    with pytest.raises(ClientError) as e:
        ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=[perm])
    assert _code(e) == "InvalidPermission.NotFound"
    ec2.delete_security_group(GroupId=gid)
    ec2.delete_security_group(GroupId=other)
    with pytest.raises(ClientError) as e:
        ec2.describe_security_groups(GroupIds=[gid])
    assert _code(e) == "InvalidGroup.NotFound"
    assert "RequestId" in e.value.response["ResponseMetadata"]


def test_auth_failure_in_ec2_format(dockyard_server: ServerProcess) -> None:
    bad = boto3.client(
        "ec2",
        endpoint_url=dockyard_server.endpoint,
        region_name=dockyard_server.region,
        aws_access_key_id=dockyard_server.access_key,
        aws_secret_access_key="wrong",
    )
    with pytest.raises(ClientError) as e:
        bad.describe_vpcs()
    assert _code(e) == "AuthFailure"


def test_aws_cli(dockyard_server: ServerProcess) -> None:
    def aws(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                AWS,
                "--endpoint-url",
                dockyard_server.endpoint,
                "--region",
                dockyard_server.region,
                "--output",
                "json",
                "ec2",
                *args,
            ],
            env=dockyard_server.cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    name = f"cli-{uuid.uuid4().hex[:8]}"
    made = aws("create-security-group", "--group-name", name, "--description", "from the CLI")
    assert made.returncode == 0, made.stderr
    gid = json.loads(made.stdout)["GroupId"]
    ok = aws(
        "authorize-security-group-ingress",
        "--group-id",
        gid,
        "--protocol",
        "tcp",
        "--port",
        "8080",
        "--cidr",
        "10.1.0.0/16",
    )
    assert ok.returncode == 0, ok.stderr
    missing = aws("delete-security-group", "--group-id", "sg-00000000000000000")
    assert missing.returncode != 0 and "InvalidGroup.NotFound" in missing.stderr
    assert aws("delete-security-group", "--group-id", gid).returncode == 0
