"""ECS's cluster query language: ``compile(text)`` once, then ``expression.matches(instance)``.

Used by ``memberOf`` placement constraints and by ``ListContainerInstances(filter=...)``::

    expression := or
    or         := and  (("||" | "or")  and)*
    and        := unary (("&&" | "and") unary)*
    unary      := ("!" | "not") unary  |  "(" expression ")"  |  subject operator [argument]
    argument   := value  |  "[" value ("," value)* "]"            (lists for in / not_in)
    value      := 'quoted' | "quoted" | bare-word

Subjects and the operators each accepts (``==``/``equals``, ``!=``/``not_equals``, ``>``/
``greater_than``, ``>=``/``greater_than_equal``, ``<``/``less_than``, ``<=``/``less_than_equal``,
``exists``, ``!exists``/``not_exists``, ``in``, ``!in``/``not_in``, ``=~``/``matches``,
``!~``/``not_matches``):

- ``attribute:NAME`` every operator; ``>``..``<=`` compare as numbers when both sides are numbers,
  else as text. An instance without the attribute satisfies only ``!=``, ``!in``, ``!~``, ``!exists``.
- ``agentConnected`` (``true``/``false``), ``ec2InstanceId``, ``task:group``: ``==``, ``!=``,
  ``in``, ``!in``, ``=~``, ``!~``. ``task:group`` holds for an instance running (reserving) a task
  of that group; its negations hold where no task of the group runs.
- ``agentVersion`` (dotted numbers, compared numerically), ``registeredAt`` (``2018-06-18T22:28:28
  +00:00``, ``...Z``, ``...T22:28:28`` read as UTC, or a date ``2018-06-18``, compared at the
  precision given), ``runningTasksCount`` (an integer): ``==``, ``!=``, ``>``, ``>=``, ``<``, ``<=``.

``=~`` takes a regular expression (Java's syntax in ECS; Python's ``re`` here, which agrees on the
common subset) that must match the whole value. A malformed expression raises
``InvalidParameter`` naming the (1-based) position of the problem. Pure: no I/O, no clock.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from dockyard.domain.errors import InvalidParameter
from dockyard.scheduler.model import InstanceView

MAX_LENGTH = 2000

EQ, NE, GT, GE, LT, LE = "==", "!=", ">", ">=", "<", "<="
EXISTS, NOT_EXISTS, IN, NOT_IN, MATCHES, NOT_MATCHES = "exists", "!exists", "in", "!in", "=~", "!~"

_WORD_OPERATORS = {
    "equals": EQ,
    "not_equals": NE,
    "greater_than": GT,
    "greater_than_equal": GE,
    "less_than": LT,
    "less_than_equal": LE,
    "exists": EXISTS,
    "not_exists": NOT_EXISTS,
    "in": IN,
    "not_in": NOT_IN,
    "matches": MATCHES,
    "not_matches": NOT_MATCHES,
}
_SYMBOLS = ("==", "!=", ">=", "<=", "=~", "!~", ">", "<")  # longest first
_ORDERING = (EQ, NE, GT, GE, LT, LE)
_SET_LIKE = (EQ, NE, IN, NOT_IN, MATCHES, NOT_MATCHES)
_ALL = (*_ORDERING, EXISTS, NOT_EXISTS, IN, NOT_IN, MATCHES, NOT_MATCHES)
_NEGATIVE = (NE, NOT_IN, NOT_MATCHES, NOT_EXISTS)

ATTRIBUTE = "attribute:"
TASK_GROUP = "task:group"
_SUBJECT_OPERATORS: dict[str, tuple[str, ...]] = {
    "agentConnected": _SET_LIKE,
    "agentVersion": _ORDERING,
    "ec2InstanceId": _SET_LIKE,
    "registeredAt": _ORDERING,
    "runningTasksCount": _ORDERING,
    TASK_GROUP: _SET_LIKE,
}
_STOP = set(" \t\r\n()[],'\"")
_WORD_STOP = _STOP | set("!=<>~&|")
_ATTRIBUTE_NAME = re.compile(r"^[A-Za-z0-9_./\\-]{1,128}$")
_VERSION = re.compile(r"^v?(\d+(?:\.\d+)*)$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class Expression:
    """A compiled expression: ``matches(instance)`` says whether the instance is a member."""

    def matches(self, instance: InstanceView) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class Or(Expression):
    parts: tuple[Expression, ...]

    def matches(self, instance: InstanceView) -> bool:
        return any(p.matches(instance) for p in self.parts)


@dataclass(frozen=True)
class And(Expression):
    parts: tuple[Expression, ...]

    def matches(self, instance: InstanceView) -> bool:
        return all(p.matches(instance) for p in self.parts)


@dataclass(frozen=True)
class Not(Expression):
    inner: Expression

    def matches(self, instance: InstanceView) -> bool:
        return not self.inner.matches(instance)


@dataclass(frozen=True)
class Comparison(Expression):
    """``subject operator [arguments]``; ``test`` is the compiled check."""

    subject: str
    operator: str
    arguments: tuple[str, ...]
    test: Callable[[InstanceView], bool]

    def matches(self, instance: InstanceView) -> bool:
        return self.test(instance)


@functools.lru_cache(maxsize=1024)
def compile(text: str) -> Expression:
    """Parse ``text``; raises InvalidParameter naming the position of the first problem."""
    if len(text) > MAX_LENGTH:
        raise InvalidParameter(f"A cluster query expression can be at most {MAX_LENGTH} characters.")
    return _Parser(text).parse()


# ---- parsing ------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, why: str, at: int | None = None) -> InvalidParameter:
        where = (self.pos if at is None else at) + 1
        return InvalidParameter(f"Invalid cluster query expression at position {where}: {why}.")

    def parse(self) -> Expression:
        self.skip()
        if self.at_end():
            raise self.fail("the expression is empty")
        node = self.disjunction()
        self.skip()
        if not self.at_end():
            raise self.fail(f"unexpected '{self.text[self.pos]}'")
        return node

    # -- lexing helpers --

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def boundary(self, at: int) -> bool:
        return at >= len(self.text) or self.text[at].isspace() or self.text[at] in "()[!"

    def take(self, *tokens: str, word: bool = False) -> bool:
        """Consume one of ``tokens`` at the cursor (words: case-insensitive, then a boundary)."""
        self.skip()
        for token in tokens:
            end = self.pos + len(token)
            found = self.text[self.pos : end]
            if word and found.lower() == token and self.boundary(end):
                self.pos = end
                return True
            if not word and found == token:
                self.pos = end
                return True
        return False

    def word(self, stop: set[str]) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in stop:
            if self.text.startswith(("&&", "||"), self.pos):
                break
            self.pos += 1
        return self.text[start : self.pos]

    # -- grammar --

    def disjunction(self) -> Expression:
        parts = [self.conjunction()]
        while self.take("||") or self.take("or", word=True):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def conjunction(self) -> Expression:
        parts = [self.unary()]
        while self.take("&&") or self.take("and", word=True):
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def unary(self) -> Expression:
        self.skip()
        if self.at_end():
            raise self.fail("expected an expression")
        if self.take("!") or self.take("not", word=True):
            return Not(self.unary())
        if self.take("("):
            opened = self.pos - 1
            node = self.disjunction()
            if not self.take(")"):
                if self.at_end():
                    raise self.fail("this parenthesis is never closed", opened)
                raise self.fail(f"expected ')' but found '{self.text[self.pos]}'")
            return node
        return self.comparison()

    def comparison(self) -> Expression:
        start = self.pos
        subject = self.word(_WORD_STOP)
        if not subject:
            raise self.fail(f"expected a subject but found '{self.text[self.pos]}'")
        allowed = _operators_of(subject)
        if allowed is None:
            raise self.fail(
                f"unknown subject '{subject[:100]}' (use attribute:NAME, agentConnected, agentVersion, "
                "ec2InstanceId, registeredAt, runningTasksCount or task:group)",
                start,
            )
        self.skip()
        op_at = self.pos
        operator = self.operator()
        if operator not in allowed:
            raise self.fail(f"operator '{operator}' cannot be used with {subject[:100]}", op_at)
        arguments: tuple[str, ...] = ()
        self.skip()
        arg_at = self.pos
        if operator in (IN, NOT_IN):
            arguments = self.value_list()
        elif operator not in (EXISTS, NOT_EXISTS):
            arguments = (self.value(),)
        test = _compile_test(subject, operator, arguments, lambda why: self.fail(why, arg_at))
        return Comparison(subject, operator, arguments, test)

    def operator(self) -> str:
        if self.at_end():
            raise self.fail("expected an operator")
        for negated in ("!exists", "!in"):
            end = self.pos + len(negated)
            if self.text[self.pos : end].lower() == negated and self.boundary(end):
                self.pos = end
                return NOT_EXISTS if negated == "!exists" else NOT_IN
        for symbol in _SYMBOLS:
            if self.text.startswith(symbol, self.pos):
                self.pos += len(symbol)
                return symbol
        start = self.pos
        found = self.word(_WORD_STOP).lower()
        if found in _WORD_OPERATORS:
            return _WORD_OPERATORS[found]
        self.pos = start
        shown = found or self.text[self.pos]
        raise self.fail(f"expected an operator but found '{shown[:50]}'")

    def value(self) -> str:
        self.skip()
        if self.at_end():
            raise self.fail("expected a value")
        quote = self.text[self.pos]
        if quote in "'\"":
            opened = self.pos
            end = self.text.find(quote, self.pos + 1)
            if end < 0:
                raise self.fail("this quote is never closed", opened)
            self.pos = end + 1
            return self.text[opened + 1 : end]
        start = self.pos
        found = self.word(_STOP)
        if not found or found[0] in "=!<>~":
            raise self.fail(f"expected a value but found '{self.text[start]}'", start)
        return found

    def value_list(self) -> tuple[str, ...]:
        if not self.take("["):
            raise self.fail("expected a list of values like [a, b]")
        values = [self.value()]
        while self.take(","):
            values.append(self.value())
        if not self.take("]"):
            raise self.fail("expected ',' or ']' in the list of values")
        return tuple(values)


def _operators_of(subject: str) -> tuple[str, ...] | None:
    if subject.startswith(ATTRIBUTE):
        return _ALL if _ATTRIBUTE_NAME.match(subject[len(ATTRIBUTE) :]) else None
    return _SUBJECT_OPERATORS.get(subject)


# ---- compiling one comparison -------------------------------------------------------------------

Fail = Callable[[str], InvalidParameter]


def _compile_test(
    subject: str, operator: str, args: tuple[str, ...], fail: Fail
) -> Callable[[InstanceView], bool]:
    if subject == TASK_GROUP:
        return _group_test(operator, args, fail)
    if subject == "runningTasksCount":
        if not args[0].lstrip("-").isdigit():
            raise fail(f"runningTasksCount compares with an integer, not '{args[0][:50]}'")
        count = int(args[0])
        return _ordered(operator, count, lambda i: i.running_tasks)
    if subject == "registeredAt":
        moment, precision = _parse_date(args[0], fail)
        return _ordered(operator, moment // precision, lambda i: int(i.registered_at // precision))
    if subject == "agentVersion":
        wanted = _version(args[0])
        if wanted is None:
            raise fail(f"agentVersion compares with a version like 1.70.2, not '{args[0][:50]}'")
        return _versions(operator, wanted)
    if subject == "agentConnected":
        return _text_test(operator, args, lambda i: "true" if i.agent_connected else "false", fail)
    if subject == "ec2InstanceId":
        return _text_test(operator, args, lambda i: i.ec2_instance_id or None, fail)
    name = subject[len(ATTRIBUTE) :]
    return _text_test(operator, args, lambda i: _attribute(i, name), fail)


def _attribute(instance: InstanceView, name: str) -> str | None:
    if name not in instance.attributes:
        return None
    return instance.attributes[name] or ""


def _text_test(
    operator: str, args: tuple[str, ...], value_of: Callable[[InstanceView], str | None], fail: Fail
) -> Callable[[InstanceView], bool]:
    negative = operator in _NEGATIVE

    def absent_aware(check: Callable[[str], bool]) -> Callable[[InstanceView], bool]:
        def test(instance: InstanceView) -> bool:
            value = value_of(instance)
            return negative if value is None else check(value)

        return test

    if operator == EXISTS:
        return lambda i: value_of(i) is not None
    if operator == NOT_EXISTS:
        return lambda i: value_of(i) is None
    if operator in (MATCHES, NOT_MATCHES):
        pattern = _regex(args[0], fail)
        want = operator == MATCHES
        return absent_aware(lambda v: (pattern.fullmatch(v) is not None) == want)
    if operator in (IN, NOT_IN):
        members = frozenset(args)
        want = operator == IN
        return absent_aware(lambda v: (v in members) == want)
    arg = args[0]
    if operator == EQ:
        return absent_aware(lambda v: v == arg)
    if operator == NE:
        return absent_aware(lambda v: v != arg)
    compare = _ORDER[operator]
    number = _number(arg)
    return absent_aware(lambda v: compare(*_comparable(v, arg, number)))


def _comparable(value: str, arg: str, arg_number: float | None) -> tuple[float, float] | tuple[str, str]:
    """Numbers compare as numbers, anything else as text."""
    if arg_number is not None:
        number = _number(value)
        if number is not None:
            return number, arg_number
    return value, arg


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


_ORDER: dict[str, Callable[[object, object], bool]] = {
    GT: lambda a, b: a > b,  # type: ignore[operator]
    GE: lambda a, b: a >= b,  # type: ignore[operator]
    LT: lambda a, b: a < b,  # type: ignore[operator]
    LE: lambda a, b: a <= b,  # type: ignore[operator]
    EQ: lambda a, b: a == b,
    NE: lambda a, b: a != b,
}


def _ordered(
    operator: str, wanted: int, value_of: Callable[[InstanceView], int]
) -> Callable[[InstanceView], bool]:
    compare = _ORDER[operator]
    return lambda i: compare(value_of(i), wanted)


def _versions(operator: str, wanted: tuple[int, ...]) -> Callable[[InstanceView], bool]:
    compare = _ORDER[operator]

    def test(instance: InstanceView) -> bool:
        have = _version(instance.agent_version)
        if have is None:
            return operator == NE
        width = max(len(have), len(wanted))
        return compare(have + (0,) * (width - len(have)), wanted + (0,) * (width - len(wanted)))

    return test


def _version(text: str) -> tuple[int, ...] | None:
    m = _VERSION.match(text.strip())
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def _group_test(operator: str, args: tuple[str, ...], fail: Fail) -> Callable[[InstanceView], bool]:
    def running(instance: InstanceView) -> Sequence[str]:
        return [g for g, n in instance.groups.items() if n > 0]

    if operator in (MATCHES, NOT_MATCHES):
        pattern = _regex(args[0], fail)
        found: Callable[[InstanceView], bool] = lambda i: any(pattern.fullmatch(g) for g in running(i))  # noqa: E731
    else:
        members = frozenset(args)
        found = lambda i: any(i.groups.get(g, 0) > 0 for g in members)  # noqa: E731
    if operator in _NEGATIVE:
        return lambda i: not found(i)
    return found


def _regex(text: str, fail: Fail) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as e:
        raise fail(f"'{text[:100]}' is not a valid regular expression ({e.msg})") from None


def _parse_date(text: str, fail: Fail) -> tuple[int, int]:
    """(epoch seconds, precision in seconds) of a registeredAt argument."""
    try:
        if _DATE.match(text):
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
            return int(day.timestamp()), 86400
        if "T" in text and len(text) >= 19:
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            if moment.microsecond == 0 and len(text) in (19, 20, 25):
                return int(moment.timestamp()), 1
    except ValueError:
        pass
    raise fail(
        f"registeredAt compares with a date like 2018-06-18T22:28:28+00:00, 2018-06-18T22:28:28Z, "
        f"2018-06-18T22:28:28 or 2018-06-18, not '{text[:50]}'"
    )
