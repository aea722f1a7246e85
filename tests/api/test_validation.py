"""Request validation against botocore's service models."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.model import ServiceModel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.api.validation import error_codes, operation_names, service_model, validate
from dockyard.domain.errors import InvalidParameter, SerializationError, UnknownOperation


def task_definition(**container: Any) -> dict[str, Any]:
    return {"family": "web", "containerDefinitions": [{"name": "web", "image": "busybox", **container}]}


def invalid(operation: str, params: object) -> str:
    with pytest.raises(InvalidParameter) as raised:
        validate(operation, params)
    return str(raised.value)


# --- accepted input ------------------------------------------------------------------------------


def test_valid_request_comes_back_equal() -> None:
    body = task_definition(
        cpu=128,
        memory=256,
        essential=True,
        portMappings=[{"containerPort": 80, "hostPort": 0, "protocol": "tcp"}],
        environment=[{"name": "A", "value": "1"}],
        dockerLabels={"a": "b"},
        healthCheck={"command": ["CMD-SHELL", "true"], "interval": 5},
    )
    body.update(networkMode="bridge", cpu="256", requiresCompatibilities=["EC2"], tags=[{"key": "k"}])
    assert validate("RegisterTaskDefinition", body) == body


def test_unknown_members_and_nulls_are_dropped_at_every_level() -> None:
    body = task_definition(newMember={"x": 1}, cpu=None)
    body["fromTheFuture"] = True
    body["taskRoleArn"] = None
    assert validate("RegisterTaskDefinition", body) == task_definition()


def test_empty_body_is_an_empty_request() -> None:
    assert validate("ListClusters", None) == {}
    assert validate("ListClusters", {}) == {}


def test_numbers_timestamps_and_maps() -> None:
    resources = [
        {"name": "CPU", "type": "INTEGER", "integerValue": 2048, "longValue": 2**62, "doubleValue": 1}
    ]
    cleaned = validate("RegisterContainerInstance", {"totalResources": resources})
    assert cleaned["totalResources"][0]["doubleValue"] == 1.0
    assert validate("SubmitTaskStateChange", {"pullStartedAt": 1700000000})["pullStartedAt"] == 1.7e9
    iso = validate("SubmitTaskStateChange", {"pullStartedAt": "2023-11-14T22:13:20Z"})
    assert iso["pullStartedAt"] == 1.7e9
    naive = validate("SubmitTaskStateChange", {"pullStartedAt": "2023-11-14T22:13:20"})
    assert naive["pullStartedAt"] == 1.7e9


def test_document_members_take_any_json() -> None:
    hook = {
        "hookTargetArn": "arn",
        "lifecycleStages": ["PRE_SCALE_UP"],
        "hookDetails": {"a": [1, {"b": None}]},
    }
    body = {"serviceName": "s", "deploymentConfiguration": {"lifecycleHooks": [hook]}}
    assert validate("CreateService", body)["deploymentConfiguration"]["lifecycleHooks"][0] == hook


# --- rejected input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "params", "message"),
    [
        ("RegisterTaskDefinition", {"family": "x"}, "Missing required parameter: containerDefinitions"),
        (
            "RegisterTaskDefinition",
            {"family": "x", "containerDefinitions": [{"portMappings": [{"containerPort": "80"}]}]},
            "Invalid type for parameter containerDefinitions[0].portMappings[0].containerPort: "
            "expected integer, got string.",
        ),
        (
            "RegisterTaskDefinition",
            {"family": "x", "containerDefinitions": [{"name": "a", "secrets": [{"name": "s"}]}]},
            "Missing required parameter: containerDefinitions[0].secrets[0].valueFrom",
        ),
        ("CreateCluster", {"clusterName": 5}, "parameter clusterName: expected string, got integer."),
        ("CreateCluster", {"clusterName": ["a"]}, "expected string, got array."),
        ("CreateCluster", {"tags": {"key": "k"}}, "parameter tags: expected array, got object."),
        ("CreateCluster", {"tags": ["k"]}, "parameter tags[0]: expected object, got string."),
        ("ListClusters", {"maxResults": True}, "maxResults: expected integer, got boolean."),
        ("ListClusters", {"maxResults": 1.5}, "maxResults: expected integer, got number."),
        ("ListClusters", {"maxResults": 2**31}, "maxResults: 2147483648, maximum value: 2147483647."),
        ("ListClusters", {"maxResults": -(2**31) - 1}, "minimum value: -2147483648."),
        (
            "RegisterTaskDefinition",
            task_definition(essential="yes"),
            "containerDefinitions[0].essential: expected boolean, got string.",
        ),
        (
            "RegisterTaskDefinition",
            task_definition(dockerLabels={"k": 1}),
            "parameter containerDefinitions[0].dockerLabels.k: expected string, got integer.",
        ),
        (
            "RegisterTaskDefinition",
            task_definition(dockerLabels=["k"]),
            "containerDefinitions[0].dockerLabels: expected object, got array.",
        ),
        (
            "RegisterTaskDefinition",
            {**task_definition(), "networkMode": "overlay"},
            "Invalid value for parameter networkMode: 'overlay'. Valid values: awsvpc, bridge, host, none.",
        ),
        (
            "CreateCluster",
            {"tags": [{"key": ""}]},
            "Invalid length for parameter tags[0].key: 0, minimum length: 1.",
        ),
        ("CreateCluster", {"tags": [{"key": "k" * 129}]}, "tags[0].key: 129, maximum length: 128."),
        (
            "CreateCluster",
            {"tags": [{"key": "k"}] * 51},
            "Invalid length for parameter tags: 51, maximum length: 50.",
        ),
        (
            "CreateDaemon",
            {"daemonName": "d", "deploymentConfiguration": {"drainPercent": 100.5}},
            "deploymentConfiguration.drainPercent: 100.5, maximum value: 100.0.",
        ),
        (
            "RegisterContainerInstance",
            {"totalResources": [{"longValue": 2**63}]},
            "totalResources[0].longValue: 9223372036854775808, maximum value: 9223372036854775807.",
        ),
        (
            "RegisterContainerInstance",
            {"totalResources": [{"doubleValue": 10**400}]},
            "totalResources[0].doubleValue: the number must be finite.",
        ),
        (
            "SubmitTaskStateChange",
            {"pullStartedAt": "yesterday"},
            "Invalid timestamp for parameter pullStartedAt",
        ),
        ("SubmitTaskStateChange", {"pullStartedAt": 1e20}, "Invalid timestamp for parameter pullStartedAt"),
        ("SubmitTaskStateChange", {"pullStartedAt": [1]}, "pullStartedAt: expected timestamp, got array."),
    ],
)
def test_rejections_name_the_field(operation: str, params: object, message: str) -> None:
    assert message in invalid(operation, params)


def test_long_strings_are_not_echoed_whole() -> None:
    message = invalid("RegisterTaskDefinition", {**task_definition(), "networkMode": "x" * 10_000_000})
    assert len(message) < 300


def test_deep_nesting_is_a_type_error() -> None:
    nested: list[Any] = []
    for _ in range(10_000):
        nested = [nested]
    assert "clusters[0]: expected string, got array" in invalid("DescribeClusters", {"clusters": nested})


def test_body_that_is_not_an_object() -> None:
    bodies: list[object] = [[], "x", 1, True]
    for body in bodies:
        with pytest.raises(SerializationError):
            validate("ListClusters", body)


def test_unknown_operation() -> None:
    with pytest.raises(UnknownOperation):
        validate("LaunchRockets", {})


def test_model_listings() -> None:
    assert {"CreateCluster", "RunTask", "RegisterTaskDefinition"} <= operation_names("ecs")
    assert {"ClusterNotFoundException", "InvalidParameterException", "ClientException"} <= error_codes("ecs")
    assert "CreateLoadBalancer" in operation_names("elbv2")
    assert "CreatePrivateDnsNamespace" in operation_names("servicediscovery")


def test_other_services_validate_too() -> None:
    assert validate("GetNamespace", {"Id": "ns-1", "Extra": 1}, "servicediscovery") == {"Id": "ns-1"}
    with pytest.raises(InvalidParameter, match="Missing required parameter: Id"):
        validate("GetNamespace", {}, "servicediscovery")


# --- shapes ECS does not use: a synthetic model --------------------------------------------------

SYNTHETIC = ServiceModel(
    {
        "metadata": {"protocol": "json", "apiVersion": "2020-01-01", "endpointPrefix": "toy"},
        "operations": {
            "Do": {
                "name": "Do",
                "http": {"method": "POST", "requestUri": "/"},
                "input": {"shape": "DoInput"},
            },
        },
        "shapes": {
            "DoInput": {
                "type": "structure",
                "members": {
                    "choice": {"shape": "Choice"},
                    "data": {"shape": "Data"},
                    "tree": {"shape": "Node"},
                    "ratio": {"shape": "Ratio"},
                },
            },
            "Choice": {
                "type": "structure",
                "union": True,
                "members": {"a": {"shape": "Str"}, "b": {"shape": "Str"}},
            },
            "Data": {"type": "blob"},
            "Node": {
                "type": "structure",
                "members": {"children": {"shape": "Nodes"}, "name": {"shape": "Str"}},
            },
            "Nodes": {"type": "list", "member": {"shape": "Node"}},
            "Ratio": {"type": "float", "min": 0, "max": 1},
            "Str": {"type": "string"},
        },
    },
    service_name="toy",
)


def test_union_blob_float_and_recursive_shapes() -> None:
    tree = {"name": "root", "children": [{"name": "leaf", "children": []}]}
    params = {"choice": {"a": "x"}, "data": "aGVsbG8=", "tree": tree, "ratio": 0.5}
    assert validate("Do", params, SYNTHETIC) == params
    with pytest.raises(InvalidParameter, match="choice: exactly one member must be set, got 2"):
        validate("Do", {"choice": {"a": "x", "b": "y"}}, SYNTHETIC)
    with pytest.raises(InvalidParameter, match="data: not valid base64"):
        validate("Do", {"data": "***"}, SYNTHETIC)
    with pytest.raises(InvalidParameter, match=r"tree.children\[0\].name: expected string"):
        validate("Do", {"tree": {"children": [{"name": 1}]}}, SYNTHETIC)
    with pytest.raises(InvalidParameter, match=r"ratio: 2\.0, maximum value: 1"):
        validate("Do", {"ratio": 2}, SYNTHETIC)


def test_recursion_deeper_than_python_allows_is_a_validation_error() -> None:
    tree: dict[str, Any] = {"name": "leaf"}
    for _ in range(5_000):
        tree = {"children": [tree]}
    with pytest.raises(InvalidParameter, match="nested too deeply"):
        validate("Do", {"tree": tree}, SYNTHETIC)


# --- property: arbitrary JSON never escapes as anything but a validation error -------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
OPERATIONS = sorted(operation_names("ecs"))


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """An operation and a body whose keys are mostly the operation's own member names."""
    operation = draw(st.sampled_from(OPERATIONS))
    shape = service_model("ecs").operation_model(operation).input_shape
    names = sorted(shape.members) if shape is not None else []
    keys = st.sampled_from(names) | st.text(max_size=8) if names else st.text(max_size=8)
    return operation, draw(st.dictionaries(keys, JSON, max_size=4))


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests())
def test_arbitrary_json_is_accepted_or_rejected_cleanly(request: tuple[str, dict[str, Any]]) -> None:
    operation, params = request
    try:
        cleaned = validate(operation, params)
    except InvalidParameter:
        return
    assert set(cleaned) <= set(params)


def test_model_is_loaded_once() -> None:
    assert service_model("ecs") is service_model("ecs")
