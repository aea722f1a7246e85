"""Resources arithmetic and the registration wire format."""

from __future__ import annotations

import pytest

from dockyard.domain.errors import InvalidParameter
from dockyard.domain.resources import (
    DEFAULT_ENIS,
    DEFAULT_RESERVED_PORTS,
    Resources,
    parse_registered,
    remaining,
    shortfall,
    total,
)

R = Resources


def test_total_adds_amounts_and_unions_ports():
    assert total([R(256, 512, frozenset({80})), R(128, 64, frozenset({80, 81}), frozenset({53}))]) == R(
        384, 576, frozenset({80, 81}), frozenset({53})
    )
    assert total([]) == R()


def test_remaining_subtracts_amounts_and_marks_ports_unavailable():
    registered = R(1024, 2048, frozenset({22}))
    assert remaining(registered, R(256, 512, frozenset({8080}))) == R(768, 1536, frozenset({22, 8080}))


@pytest.mark.parametrize(
    ("left", "need", "resource"),
    [
        (R(100, 100), R(101, 1), "CPU"),
        (R(100, 100), R(100, 101), "MEMORY"),
        (R(100, 100, frozenset({80})), R(1, 1, frozenset({80})), "PORTS"),
        (R(100, 100, ports_udp=frozenset({53})), R(1, 1, ports_udp=frozenset({53})), "PORTS_UDP"),
        (R(100, 100, frozenset({53})), R(1, 1, ports_udp=frozenset({53})), None),  # tcp 53 != udp 53
        (R(100, 100), R(100, 100), None),  # exactly full fits
        (R(100, 100, frozenset({80})), R(200, 200, frozenset({80})), "CPU"),  # cheapest first
    ],
)
def test_shortfall_names_the_first_missing_resource(left, need, resource):
    found = shortfall(left, need)
    assert (found.resource if found else None) == resource


def test_parse_registered_defaults_and_validation():
    wire = [
        {"name": "CPU", "type": "INTEGER", "integerValue": 2048},
        {"name": "MEMORY", "type": "INTEGER", "integerValue": 3900},
        {"name": "PORTS_UDP", "type": "STRINGSET", "stringSetValue": ["53"]},
    ]
    assert parse_registered(wire) == R(2048, 3900, DEFAULT_RESERVED_PORTS, frozenset({53}), DEFAULT_ENIS)
    assert parse_registered([{"name": "ENI", "type": "INTEGER", "integerValue": 2}]).enis == 2
    with pytest.raises(InvalidParameter):
        parse_registered([{"name": "CPU", "integerValue": -1}])
    with pytest.raises(InvalidParameter):
        parse_registered([{"name": "PORTS", "stringSetValue": ["http"]}])
    with pytest.raises(InvalidParameter):
        parse_registered([{"name": "GPU", "integerValue": 1}])


def test_eni_is_a_counted_resource():
    left = R(1024, 1024, enis=1)
    one = R(0, 0, enis=1)
    assert shortfall(left, one) is None
    found = shortfall(R(1024, 1024, enis=1) + R(), one + one)
    assert found is not None and found.resource == "ENI"
    assert Resources.from_document((one + one).to_document()).enis == 2


def test_wire_and_document_round_trip():
    r = R(512, 1024, frozenset({22, 80}), frozenset({53}))
    assert Resources.from_document(r.to_document()) == r
    wire = {w["name"]: w for w in r.to_wire()}
    assert wire["CPU"]["integerValue"] == 512 and wire["MEMORY"]["integerValue"] == 1024
    assert wire["PORTS"]["stringSetValue"] == ["22", "80"] and wire["PORTS_UDP"]["stringSetValue"] == ["53"]
