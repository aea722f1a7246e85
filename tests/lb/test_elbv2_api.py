"""The ELBv2 API through boto3's ``elbv2`` client against a real server: shapes, behaviour, errors."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.lb.conftest import FAST_CHECKS, short


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


@pytest.fixture
def unchecked(lb_server):  # type: ignore[no-untyped-def]
    """A client that sends what it is given: botocore's own parameter checks are off."""
    return boto3.client(
        "elbv2",
        endpoint_url=lb_server.endpoint,
        region_name=lb_server.region,
        aws_access_key_id=lb_server.access_key,
        aws_secret_access_key=lb_server.secret_key,
        config=Config(parameter_validation=False, retries={"max_attempts": 1}),
    )


@pytest.fixture
def cleanup(elbv2):  # type: ignore[no-untyped-def]
    """Register ARNs to delete after the test: load balancers first, then target groups."""
    arns: list[str] = []
    yield arns
    for arn in sorted(arns, key=lambda a: ":targetgroup/" in a):
        if ":loadbalancer/" in arn:
            elbv2.delete_load_balancer(LoadBalancerArn=arn)
        else:
            elbv2.delete_target_group(TargetGroupArn=arn)


def new_lb(elbv2, cleanup, name: str, **kwargs):  # type: ignore[no-untyped-def]
    lb = elbv2.create_load_balancer(Name=short(name), **kwargs)["LoadBalancers"][0]
    cleanup.append(lb["LoadBalancerArn"])
    return lb


def new_tg(elbv2, cleanup, name: str, **kwargs):  # type: ignore[no-untyped-def]
    args = {"Protocol": "HTTP", "Port": 80, "VpcId": "vpc-1", "TargetType": "ip", **kwargs}
    tg = elbv2.create_target_group(Name=short(name), **args)["TargetGroups"][0]
    cleanup.append(tg["TargetGroupArn"])
    return tg


def forward(tg):  # type: ignore[no-untyped-def]
    return [{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}]


def test_load_balancer_lifecycle(elbv2, lb_server, cleanup, unique):
    name = short(unique)
    group = lb_server.client("ec2").create_security_group(GroupName=f"lb-{unique}", Description="lb")[
        "GroupId"
    ]
    lb = new_lb(elbv2, cleanup, name, SecurityGroups=[group], Tags=[{"Key": "k", "Value": "v"}])
    assert lb["LoadBalancerArn"].startswith(
        "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/"
    )
    assert lb["Type"] == "application" and lb["Scheme"] == "internet-facing"
    assert lb["DNSName"].endswith(".us-east-1.elb.dockyard.internal")
    assert lb["AvailabilityZones"] == []
    assert lb["SecurityGroups"] == [group]
    # the same request again returns the same load balancer; other settings under the name fail
    again = elbv2.create_load_balancer(Name=name, SecurityGroups=[group])["LoadBalancers"]
    assert again[0]["LoadBalancerArn"] == lb["LoadBalancerArn"]
    with pytest.raises(ClientError) as e:
        elbv2.create_load_balancer(Name=name)
    assert code(e) == "DuplicateLoadBalancerName"
    # subnets and security groups must exist
    with pytest.raises(ClientError) as e:
        elbv2.create_load_balancer(Name=short("x" + unique), Subnets=["subnet-0123456789abcdef0"])
    assert code(e) == "SubnetNotFound"
    with pytest.raises(ClientError) as e:
        elbv2.create_load_balancer(Name=short("x" + unique), SecurityGroups=["sg-0123456789abcdef0"])
    assert code(e) == "InvalidSecurityGroup"

    waiter = elbv2.get_waiter("load_balancer_available")
    waiter.wait(LoadBalancerArns=[lb["LoadBalancerArn"]], WaiterConfig={"Delay": 1, "MaxAttempts": 20})
    by_name = elbv2.describe_load_balancers(Names=[name])["LoadBalancers"][0]
    assert by_name["State"] == {"Code": "active"} and by_name["LoadBalancerArn"] == lb["LoadBalancerArn"]
    tags = elbv2.describe_tags(ResourceArns=[lb["LoadBalancerArn"]])["TagDescriptions"][0]["Tags"]
    assert tags == [{"Key": "k", "Value": "v"}]

    elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
    elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])  # deleting again succeeds
    with pytest.raises(ClientError) as e:
        elbv2.describe_load_balancers(LoadBalancerArns=[lb["LoadBalancerArn"]])
    assert code(e) == "LoadBalancerNotFound"
    with pytest.raises(ClientError) as e:
        elbv2.describe_load_balancers(Names=[name])
    assert code(e) == "LoadBalancerNotFound"


def test_describe_load_balancers_pages(elbv2, cleanup, unique):
    for i in range(3):
        new_lb(elbv2, cleanup, f"p{i}-{unique}")
    seen, marker = [], None
    while True:
        args = {"PageSize": 1, **({"Marker": marker} if marker else {})}
        out = elbv2.describe_load_balancers(**args)
        assert len(out["LoadBalancers"]) <= 1
        seen += [lb["LoadBalancerArn"] for lb in out["LoadBalancers"]]
        marker = out.get("NextMarker")
        if not marker:
            break
    assert set(cleanup) <= set(seen) and len(seen) == len(set(seen))
    paginated = [
        lb for p in elbv2.get_paginator("describe_load_balancers").paginate() for lb in p["LoadBalancers"]
    ]
    assert {lb["LoadBalancerArn"] for lb in paginated} == set(seen)


def test_target_group_settings_and_attributes(elbv2, cleanup, unique):
    tg = new_tg(
        elbv2, cleanup, unique, HealthCheckPath="/health", Matcher={"HttpCode": "200-299"}, **FAST_CHECKS
    )
    assert tg["HealthCheckIntervalSeconds"] == 5 and tg["HealthyThresholdCount"] == 2
    assert tg["Matcher"] == {"HttpCode": "200-299"} and tg["HealthCheckPath"] == "/health"
    assert (
        tg["LoadBalancerArns"] == [] and tg["TargetType"] == "ip" and tg["HealthCheckPort"] == "traffic-port"
    )
    defaults = elbv2.create_target_group(Name=short("d-" + unique), Protocol="HTTP", Port=8080, VpcId="vpc-1")
    cleanup.append(defaults["TargetGroups"][0]["TargetGroupArn"])
    d = defaults["TargetGroups"][0]
    assert (d["HealthCheckIntervalSeconds"], d["HealthCheckTimeoutSeconds"], d["HealthyThresholdCount"]) == (
        30,
        5,
        5,
    )
    assert (
        d["TargetType"] == "instance" and d["HealthCheckPath"] == "/" and d["Matcher"] == {"HttpCode": "200"}
    )

    modified = elbv2.modify_target_group(TargetGroupArn=tg["TargetGroupArn"], HealthCheckPort="8081")
    assert modified["TargetGroups"][0]["HealthCheckPort"] == "8081"
    attrs = elbv2.describe_target_group_attributes(TargetGroupArn=tg["TargetGroupArn"])["Attributes"]
    assert {"Key": "deregistration_delay.timeout_seconds", "Value": "300"} in attrs
    out = elbv2.modify_target_group_attributes(
        TargetGroupArn=tg["TargetGroupArn"],
        Attributes=[
            {"Key": "deregistration_delay.timeout_seconds", "Value": "0"},
            {"Key": "load_balancing.algorithm.type", "Value": "least_outstanding_requests"},
        ],
    )["Attributes"]
    assert {"Key": "deregistration_delay.timeout_seconds", "Value": "0"} in out
    for bad in (
        {"Key": "nope", "Value": "1"},
        {"Key": "deregistration_delay.timeout_seconds", "Value": "3601"},
    ):
        with pytest.raises(ClientError) as e:
            elbv2.modify_target_group_attributes(TargetGroupArn=tg["TargetGroupArn"], Attributes=[bad])
        assert code(e) == "ValidationError"
    by_name = elbv2.describe_target_groups(Names=[tg["TargetGroupName"]])["TargetGroups"][0]
    assert by_name["TargetGroupArn"] == tg["TargetGroupArn"]
    with pytest.raises(ClientError) as e:
        elbv2.create_target_group(Name=tg["TargetGroupName"], Protocol="HTTP", Port=81, VpcId="vpc-1")
    assert code(e) == "DuplicateTargetGroupName"


def test_model_and_rule_validation_errors(unchecked, elbv2, cleanup, unique):
    cases = [
        # the botocore model: below the minimum interval, a missing required member, a bad enum
        (lambda: unchecked.create_target_group(Name="x", HealthCheckIntervalSeconds=1), "ValidationError"),
        (lambda: unchecked.create_load_balancer(), "ValidationError"),
        (lambda: unchecked.create_load_balancer(Name="x", Scheme="public"), "ValidationError"),
        # ELBv2's rules
        (lambda: elbv2.create_load_balancer(Name="-bad-"), "ValidationError"),
        (lambda: elbv2.create_target_group(Name=short(unique), Protocol="HTTP", Port=80), "ValidationError"),
        (
            lambda: elbv2.create_target_group(
                Name=short(unique),
                Protocol="HTTP",
                Port=80,
                VpcId="v",
                HealthCheckIntervalSeconds=5,
                HealthCheckTimeoutSeconds=5,
            ),
            "ValidationError",
        ),
        (lambda: elbv2.describe_load_balancers(LoadBalancerArns=["arn:aws:nope"]), "ValidationError"),
    ]
    for call, expected in cases:
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == expected, e.value.response
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_listeners_and_rules(elbv2, cleanup, unique):
    lb = new_lb(elbv2, cleanup, unique)
    tg = new_tg(elbv2, cleanup, "a-" + unique)
    tg2 = new_tg(elbv2, cleanup, "b-" + unique)
    tcp = new_tg(elbv2, cleanup, "t-" + unique, Protocol="TCP")
    listener = elbv2.create_listener(
        LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=8080, DefaultActions=forward(tg)
    )["Listeners"][0]
    assert (
        listener["Port"] == 8080 and listener["DefaultActions"][0]["TargetGroupArn"] == tg["TargetGroupArn"]
    )
    errors = {
        "DuplicateListener": dict(Protocol="HTTP", Port=8080, DefaultActions=forward(tg)),
        "UnsupportedProtocol": dict(Protocol="HTTPS", Port=443, DefaultActions=forward(tg)),
        "IncompatibleProtocols": dict(Protocol="HTTP", Port=81, DefaultActions=forward(tcp)),
        "InvalidLoadBalancerAction": dict(
            Protocol="HTTP",
            Port=82,
            DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "200"}}],
        ),
    }
    for expected, args in errors.items():
        with pytest.raises(ClientError) as e:
            elbv2.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], **args)
        assert code(e) == expected
    assert elbv2.describe_target_groups(TargetGroupArns=[tg["TargetGroupArn"]])["TargetGroups"][0][
        "LoadBalancerArns"
    ] == [lb["LoadBalancerArn"]]

    rule = elbv2.create_rule(
        ListenerArn=listener["ListenerArn"],
        Priority=7,
        Conditions=[{"Field": "path-pattern", "Values": ["/a/*"]}],
        Actions=forward(tg2),
    )["Rules"][0]
    assert rule["Priority"] == "7" and rule["IsDefault"] is False
    assert rule["Conditions"][0]["PathPatternConfig"] == {"Values": ["/a/*"]}
    with pytest.raises(ClientError) as e:
        elbv2.create_rule(
            ListenerArn=listener["ListenerArn"],
            Priority=7,
            Conditions=[{"Field": "path-pattern", "Values": ["/b"]}],
            Actions=forward(tg2),
        )
    assert code(e) == "PriorityInUse"
    rules = elbv2.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"]
    assert [r["Priority"] for r in rules] == ["7", "default"]
    default = rules[-1]
    assert default["IsDefault"] is True and default["Actions"][0]["TargetGroupArn"] == tg["TargetGroupArn"]
    with pytest.raises(ClientError) as e:
        elbv2.delete_rule(RuleArn=default["RuleArn"])
    assert code(e) == "OperationNotPermitted"

    # a group in use cannot be deleted; one load balancer per group
    with pytest.raises(ClientError) as e:
        elbv2.delete_target_group(TargetGroupArn=tg2["TargetGroupArn"])
    assert code(e) == "ResourceInUse"
    other = new_lb(elbv2, cleanup, "o-" + unique)
    with pytest.raises(ClientError) as e:
        elbv2.create_listener(
            LoadBalancerArn=other["LoadBalancerArn"], Protocol="HTTP", Port=80, DefaultActions=forward(tg)
        )
    assert code(e) == "TargetGroupAssociationLimit"

    elbv2.delete_rule(RuleArn=rule["RuleArn"])
    with pytest.raises(ClientError) as e:
        elbv2.describe_rules(RuleArns=[rule["RuleArn"]])
    assert code(e) == "RuleNotFound"
    elbv2.delete_listener(ListenerArn=listener["ListenerArn"])
    with pytest.raises(ClientError) as e:
        elbv2.describe_listeners(ListenerArns=[listener["ListenerArn"]])
    assert code(e) == "ListenerNotFound"
    assert (
        elbv2.describe_target_groups(TargetGroupArns=[tg["TargetGroupArn"]])["TargetGroups"][0][
            "LoadBalancerArns"
        ]
        == []
    )


def test_targets_and_their_health_states(elbv2, ecs_admin, cleanup, unique):
    tg = new_tg(elbv2, cleanup, unique)
    arn = tg["TargetGroupArn"]
    elbv2.register_targets(
        TargetGroupArn=arn, Targets=[{"Id": "127.0.0.9", "Port": 8080}, {"Id": "127.0.0.9"}]
    )
    health = elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    assert sorted(
        (d["Target"]["Port"], d["TargetHealth"]["State"], d["TargetHealth"]["Reason"]) for d in health
    ) == [
        (80, "unused", "Target.NotInUse"),
        (8080, "unused", "Target.NotInUse"),
    ]
    asked = elbv2.describe_target_health(TargetGroupArn=arn, Targets=[{"Id": "127.0.0.10"}])
    assert asked["TargetHealthDescriptions"][0]["TargetHealth"]["Reason"] == "Target.NotRegistered"
    # not in use: deregistering takes effect at once
    elbv2.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": "127.0.0.9", "Port": 8080}])
    left = elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    assert [d["Target"]["Port"] for d in left] == [80]
    with pytest.raises(ClientError) as e:
        elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": "not-an-ip"}])
    assert code(e) == "ValidationError"

    # instance targets name a registered container instance by its ec2InstanceId
    itg = new_tg(elbv2, cleanup, "i-" + unique, TargetType="instance")
    with pytest.raises(ClientError) as e:
        elbv2.register_targets(TargetGroupArn=itg["TargetGroupArn"], Targets=[{"Id": "i-0000000000000dead"}])
    assert code(e) == "InvalidTarget"
    instance = ecs_admin(unique)
    elbv2.register_targets(TargetGroupArn=itg["TargetGroupArn"], Targets=[{"Id": instance, "Port": 32768}])
    got = elbv2.describe_target_health(TargetGroupArn=itg["TargetGroupArn"])["TargetHealthDescriptions"]
    assert got[0]["Target"] == {"Id": instance, "Port": 32768} and got[0]["HealthCheckPort"] == "32768"
    with pytest.raises(ClientError) as e:
        elbv2.describe_target_health(TargetGroupArn=arn.replace(tg["TargetGroupName"], "missing"))
    assert code(e) == "TargetGroupNotFound"


@pytest.fixture
def ecs_admin(lb_server):  # type: ignore[no-untyped-def]
    """Registers a container instance (cluster of its own) and returns its ec2InstanceId."""
    ecs = lb_server.client("ecs")
    made: list[tuple[str, str]] = []

    def register(name: str) -> str:
        cluster = short(name)
        ecs.create_cluster(clusterName=cluster)
        instance_id = "i-0" + format(abs(hash(name)) % 16**15, "015x")
        doc = json.dumps({"instanceId": instance_id, "privateIp": "127.0.0.1", "region": "us-east-1"})
        arn = ecs.register_container_instance(
            cluster=cluster,
            instanceIdentityDocument=doc,
            totalResources=[{"name": "CPU", "type": "INTEGER", "integerValue": 1024}],
        )["containerInstance"]["containerInstanceArn"]
        made.append((cluster, arn))
        return instance_id

    yield register
    for cluster, arn in made:
        ecs.deregister_container_instance(cluster=cluster, containerInstance=arn, force=True)
        ecs.delete_cluster(cluster=cluster)


def test_tags(elbv2, cleanup, unique):
    lb = new_lb(elbv2, cleanup, unique)
    tg = new_tg(elbv2, cleanup, unique)
    arns = [lb["LoadBalancerArn"], tg["TargetGroupArn"]]
    elbv2.add_tags(ResourceArns=arns, Tags=[{"Key": "team", "Value": "a"}, {"Key": "env", "Value": "dev"}])
    elbv2.remove_tags(ResourceArns=arns, TagKeys=["env"])
    out = elbv2.describe_tags(ResourceArns=arns)["TagDescriptions"]
    assert [(d["ResourceArn"], d["Tags"]) for d in out] == [
        (a, [{"Key": "team", "Value": "a"}]) for a in arns
    ]
    with pytest.raises(ClientError) as e:
        elbv2.add_tags(ResourceArns=arns, Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(51)])
    assert code(e) == "TooManyTags"
    with pytest.raises(ClientError) as e:
        elbv2.add_tags(ResourceArns=[lb["LoadBalancerArn"]], Tags=[{"Key": "aws:x", "Value": "v"}])
    assert code(e) == "ValidationError"


def test_load_balancer_attributes_and_deletion_protection(elbv2, cleanup, unique):
    lb = new_lb(elbv2, cleanup, unique)
    arn = lb["LoadBalancerArn"]
    attrs = {
        a["Key"]: a["Value"]
        for a in elbv2.describe_load_balancer_attributes(LoadBalancerArn=arn)["Attributes"]
    }
    assert attrs["idle_timeout.timeout_seconds"] == "60" and attrs["deletion_protection.enabled"] == "false"
    out = elbv2.modify_load_balancer_attributes(
        LoadBalancerArn=arn,
        Attributes=[
            {"Key": "idle_timeout.timeout_seconds", "Value": "120"},
            {"Key": "deletion_protection.enabled", "Value": "true"},
        ],
    )["Attributes"]
    assert {"Key": "idle_timeout.timeout_seconds", "Value": "120"} in out
    with pytest.raises(ClientError) as e:
        elbv2.delete_load_balancer(LoadBalancerArn=arn)
    assert code(e) == "OperationNotPermitted"
    for bad in (
        {"Key": "idle_timeout.timeout_seconds", "Value": "0"},
        {"Key": "access_logs.s3.enabled", "Value": "true"},
    ):
        with pytest.raises(ClientError) as e:
            elbv2.modify_load_balancer_attributes(LoadBalancerArn=arn, Attributes=[bad])
        assert code(e) == "ValidationError"
    elbv2.modify_load_balancer_attributes(
        LoadBalancerArn=arn, Attributes=[{"Key": "deletion_protection.enabled", "Value": "false"}]
    )
