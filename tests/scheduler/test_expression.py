"""Table tests for the cluster query language: every subject, every operator, the combinators,
and errors that name the position of the problem."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dockyard.domain.errors import InvalidParameter
from dockyard.scheduler import expression
from tests.scheduler.factories import inst

REGISTERED = datetime(2018, 6, 18, 22, 28, 28, tzinfo=UTC).timestamp()

WEB = inst(
    "web",
    attributes={
        "ecs.instance-type": "t2.small",
        "ecs.availability-zone": "us-east-1a",
        "ecs.os-type": "linux",
        "stack": "prod",
        "cores": "8",
        "ecs.capability.foo": None,
    },
    ec2_instance_id="i-abcd1234",
    running_tasks=3,
    groups={"service:production": 2, "database": 0},
    registered_at=REGISTERED + 0.25,
    agent_version="1.70.2",
)
BARE = inst("bare", attributes={}, agent_connected=False, ec2_instance_id="", agent_version="")


def matches(text: str, view=WEB) -> bool:  # type: ignore[no-untyped-def]
    return expression.compile(text).matches(view)


@pytest.mark.parametrize(
    ("text", "web", "bare"),
    [
        # attributes: every operator, absent attributes only satisfy the negative ones
        ("attribute:ecs.instance-type == t2.small", True, False),
        ("attribute:ecs.instance-type equals t2.small", True, False),
        ("attribute:ecs.instance-type != t2.small", False, True),
        ("attribute:ecs.instance-type not_equals t2.micro", True, True),
        ("attribute:ecs.instance-type =~ t2.*", True, False),
        ("attribute:ecs.instance-type matches t2", False, False),  # the whole value must match
        ("attribute:ecs.instance-type !~ g2.*", True, True),
        ("attribute:ecs.instance-type not_matches t2.*", False, True),
        ("attribute:ecs.availability-zone in [us-east-1a, us-east-1b]", True, False),
        ("attribute:ecs.availability-zone in ['us-east-1b']", False, False),
        ("attribute:ecs.availability-zone !in [us-east-1b]", True, True),
        ("attribute:ecs.availability-zone not_in [us-east-1a]", False, True),
        ("attribute:stack exists", True, False),
        ("attribute:stack !exists", False, True),
        ("attribute:stack not_exists", False, True),
        ("attribute:ecs.capability.foo exists", True, False),  # an attribute without a value
        ("attribute:cores > 4", True, False),  # numbers compare as numbers
        ("attribute:cores >= 8", True, False),
        ("attribute:cores greater_than 10", False, False),
        ("attribute:cores < 10", True, False),  # text "8" < "10" would be False
        ("attribute:cores less_than_equal 7", False, False),
        ("attribute:stack > prod", False, False),  # text compares as text
        ("attribute:stack greater_than_equal prod", True, False),
        ('attribute:stack == "prod"', True, False),
        # the other subjects
        ("agentConnected == true", True, False),
        ("agentConnected != true", False, True),
        ("agentConnected in [false]", False, True),
        ("agentConnected =~ f.*", False, True),
        ("ec2InstanceId == i-abcd1234", True, False),
        ("ec2InstanceId in ['i-abcd1234', 'i-wxyx7890']", True, False),
        ("ec2InstanceId !~ i-abcd.*", False, True),
        ("agentVersion >= 1.70.2", True, False),
        ("agentVersion > 1.9.0", True, False),  # 70 > 9 numerically
        ("agentVersion < 1.70.10", True, False),
        ("agentVersion == 1.70.2.0", True, False),
        ("agentVersion != 1.70.2", False, True),
        ("runningTasksCount == 3", True, False),
        ("runningTasksCount > 2", True, False),
        ("runningTasksCount <= 0", False, True),
        ("runningTasksCount != 0", True, False),
        ("registeredAt == 2018-06-18", True, False),  # a date compares by day
        ("registeredAt > 2018-06-17", True, False),
        ("registeredAt < 2018-06-19T00:00:00Z", True, True),  # bare registered at 0 (1970)
        ("registeredAt == 2018-06-18T22:28:28+00:00", True, False),  # to the second
        ("registeredAt >= 2018-06-18T22:28:29", False, False),
        ("registeredAt <= 2018-06-18T23:28:28+01:00", True, True),
        ("task:group == service:production", True, False),
        ("task:group == database", False, False),  # no task of the group reserves here
        ("task:group != service:production", False, True),
        ("task:group in [database, service:production]", True, False),
        ("task:group !in [database]", True, True),
        ("task:group =~ service:.*", True, False),
        ("task:group !~ service:.*", False, True),
        # combinators and precedence
        (
            "attribute:ecs.instance-type =~ t2.* and attribute:ecs.availability-zone != us-east-1d",
            True,
            False,
        ),
        ("attribute:stack == dev && attribute:cores > 4", False, False),
        ("attribute:stack == dev || attribute:cores > 4", True, False),
        ("attribute:stack == dev or runningTasksCount == 3", True, False),
        ("!(attribute:stack == prod)", False, True),
        ("not(task:group == database)", True, True),
        ("not attribute:stack exists", False, True),
        ("attribute:stack == dev and attribute:cores > 4 or agentConnected == false", False, True),
        ("attribute:stack == dev and (attribute:cores > 4 or agentConnected == false)", False, False),
        ("((attribute:stack == prod))", True, False),
        ("attribute:stack==prod&&attribute:cores>4", True, False),
        ("  AND_ME == x or attribute:stack exists  ".replace("AND_ME", "attribute:x"), True, False),
    ],
)
def test_every_subject_and_operator(text: str, web: bool, bare: bool) -> None:
    assert matches(text) is web
    assert matches(text, BARE) is bare


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ("", 1, "empty"),
        ("   ", 4, "empty"),
        ("attribute:stack", 16, "expected an operator"),
        ("attribute:stack ==", 19, "expected a value"),
        ("attribute:stack = prod", 17, "expected an operator"),
        ("attribute:stack >> prod", 18, "expected a value but found '>'"),
        ("color == red", 1, "unknown subject 'color'"),
        ("attribute: == x", 1, "unknown subject"),
        ("runningTasksCount =~ 1", 19, "cannot be used with runningTasksCount"),
        ("registeredAt exists", 14, "cannot be used with registeredAt"),
        ("agentVersion in [1.0]", 14, "cannot be used with agentVersion"),
        ("task:group > a", 12, "cannot be used with task:group"),
        ("runningTasksCount > many", 21, "integer"),
        ("registeredAt > 18/06/2018", 16, "2018-06-18"),
        ("registeredAt > 2018-13-01", 16, "2018-06-18"),
        ("agentVersion > latest", 16, "version"),
        ("attribute:a =~ '('", 16, "regular expression"),
        ("attribute:a in a, b", 16, "list of values"),
        ("attribute:a in [a, b", 21, "',' or ']'"),
        ("attribute:a in []", 17, "expected a value"),
        ("attribute:a == 'open", 16, "quote is never closed"),
        ("(attribute:a exists", 1, "parenthesis is never closed"),
        ("(attribute:a exists ]", 21, "expected ')'"),
        ("attribute:a exists)", 19, "unexpected ')'"),
        ("attribute:a exists and", 23, "expected an expression"),
        ("attribute:a exists attribute:b exists", 20, "unexpected 'a'"),
        ("attribute:a == b ==", 18, "unexpected '='"),
        ("!", 2, "expected an expression"),
    ],
)
def test_malformed_expressions_name_the_position(text: str, position: int, words: str) -> None:
    with pytest.raises(InvalidParameter) as e:
        expression.compile(text)
    assert f"at position {position}:" in e.value.message, e.value.message
    assert words in e.value.message


def test_expressions_are_length_limited_and_compiled_once() -> None:
    with pytest.raises(InvalidParameter, match="2000"):
        expression.compile("attribute:a exists or " * 100 + "attribute:a exists")
    assert expression.compile("attribute:a exists") is expression.compile("attribute:a exists")


def test_a_compiled_expression_keeps_its_parts() -> None:
    tree = expression.compile("attribute:a == 1 and (attribute:b in [x, 'y z'] or not attribute:c exists)")
    assert isinstance(tree, expression.And)
    first, second = tree.parts
    assert isinstance(first, expression.Comparison) and (first.subject, first.operator) == (
        "attribute:a",
        "==",
    )
    assert isinstance(second, expression.Or)
    listed = second.parts[0]
    assert isinstance(listed, expression.Comparison) and listed.arguments == ("x", "y z")
    assert isinstance(second.parts[1], expression.Not)
