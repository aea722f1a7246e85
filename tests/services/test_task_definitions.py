"""Task definition use cases against the in-memory store, with a fake clock."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from dockyard.clock import FakeClock
from dockyard.domain.errors import ClientError, InvalidParameter, ResourceNotFound
from dockyard.services import keys
from dockyard.services import task_definitions as td
from dockyard.services.context import Env, Principal, RequestContext
from dockyard.store import open_store
from dockyard.store.base import MAX_TXN_OPS, Compare, Conflict, Delete, ListResult, Put, TxnResult
from dockyard.store.memory import MemoryStore
from dockyard.store.sqlite import SqliteStore

ACCOUNT = "123456789012"
REGION = "us-east-1"
CTX = RequestContext(ACCOUNT, REGION, Principal("admin", "AKIDTEST"), "req-1")
OTHER = RequestContext("210987654321", REGION, Principal("admin", "AKIDOTHER"), "req-2")


def arn(family: str, revision: int) -> str:
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:{revision}"


def definition(family: str = "web", **fields: Any) -> dict[str, Any]:
    return {
        "family": family,
        "containerDefinitions": [{"name": "app", "image": "busybox", "memory": 64}],
        **fields,
    }


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    store = open_store("memory://")
    yield Env(store=store, clock=FakeClock())
    await store.close()


async def register(env: Env, family: str = "web", **fields: Any) -> dict[str, Any]:
    out = await td.register_task_definition(env, CTX, definition(family, **fields))
    return dict(out["taskDefinition"])


async def list_arns(env: Env, **req: Any) -> list[str]:
    """Every ARN ListTaskDefinitions returns, following nextToken."""
    out: list[str] = []
    token = None
    while True:
        page = await td.list_task_definitions(env, CTX, {**req, **({"nextToken": token} if token else {})})
        out += page["taskDefinitionArns"]
        token = page.get("nextToken")
        if not token:
            return out


# ---- RegisterTaskDefinition ----------------------------------------------------------------------


async def test_register_assigns_revisions_and_ecs_fields(env: Env) -> None:
    first = await register(env, cpu="0.5 vCPU", memory="1 GB", tags=[{"key": "team", "value": "a"}])
    second = await register(env)
    assert (first["revision"], second["revision"]) == (1, 2)
    assert first["taskDefinitionArn"] == arn("web", 1)
    assert first["status"] == "ACTIVE"
    assert first["registeredAt"] == env.clock.time()
    assert first["registeredBy"] == f"arn:aws:iam::{ACCOUNT}:root"
    assert (first["cpu"], first["memory"]) == ("512", "1024")
    assert first["compatibilities"] == ["EC2", "EXTERNAL"]
    assert "tags" not in first
    other = await register(env, "api")
    assert other["revision"] == 1


async def test_register_returns_the_tags(env: Env) -> None:
    out = await td.register_task_definition(env, CTX, definition(tags=[{"key": "k", "value": "v"}]))
    assert out["tags"] == [{"key": "k", "value": "v"}]


async def test_register_rejects_invalid_definitions(env: Env) -> None:
    with pytest.raises(ClientError, match="essential"):
        await register(
            env, containerDefinitions=[{"name": "a", "image": "x", "memory": 64, "essential": False}]
        )
    assert await env.store.get(keys.taskdef_family(ACCOUNT, REGION, "web")) is None


async def test_concurrent_registrations_get_each_revision_once(env: Env) -> None:
    results = await asyncio.gather(*(register(env) for _ in range(32)))
    assert sorted(r["revision"] for r in results) == list(range(1, 33))
    assert await list_arns(env, familyPrefix="web") == [arn("web", r) for r in range(1, 33)]


class RecordingStore(MemoryStore):
    """A memory store that counts transactions and conflicts, and can run ``before_next_txn``
    (e.g. another process's write) just before the next transaction."""

    def __init__(self) -> None:
        super().__init__(FakeClock())
        self.txns: list[int] = []  # operations per transaction
        self.conflicts = 0
        self.values_listed = 0  # rows that list() returned with their values
        self.before_next_txn: Callable[[], Awaitable[object]] | None = None

    async def txn(
        self, compares: Sequence[Compare] = (), puts: Sequence[Put] = (), deletes: Sequence[Delete] = ()
    ) -> TxnResult:
        if self.before_next_txn is not None:
            interloper, self.before_next_txn = self.before_next_txn, None
            await interloper()
        self.txns.append(len(compares) + len(puts) + len(deletes))
        try:
            return await super().txn(compares, puts, deletes)
        except Conflict:
            self.conflicts += 1
            raise

    async def list(
        self,
        prefix: str,
        *,
        start_after: str | None = None,
        limit: int | None = None,
        keys_only: bool = False,
    ) -> ListResult:
        page = await super().list(prefix, start_after=start_after, limit=limit, keys_only=keys_only)
        self.values_listed += 0 if keys_only else len(page.kvs)
        return page


async def test_concurrent_registrations_commit_in_few_chunked_transactions() -> None:
    store = RecordingStore()
    env = Env(store=store, clock=FakeClock())
    results = await asyncio.gather(*(register(env) for _ in range(200)))
    assert sorted(r["revision"] for r in results) == list(range(1, 201))
    assert store.conflicts == 0
    assert 4 <= len(store.txns) <= 8 and max(store.txns) <= MAX_TXN_OPS  # 63 registrations a chunk
    assert len(await list_arns(env)) == 200
    assert (await register(env))["revision"] == 201
    await store.close()


async def test_a_conflicting_writer_makes_the_whole_batch_retry() -> None:
    """Two coalescers (two processes) on one store: the other one takes revision 1 between our
    read and our commit; our batch re-reads and retries at once, and no revision is taken twice."""
    store = RecordingStore()
    ours, theirs = Env(store=store, clock=FakeClock()), Env(store=store, clock=FakeClock())
    store.before_next_txn = lambda: register(theirs)
    results = await asyncio.gather(*(register(ours) for _ in range(5)))
    assert sorted(r["revision"] for r in results) == [2, 3, 4, 5, 6]
    assert store.conflicts == 1
    assert await list_arns(ours) == [arn("web", r) for r in range(1, 7)]
    await store.close()


async def test_two_stores_on_one_sqlite_file_never_duplicate_revisions(tmp_path: Path) -> None:
    """Two server processes on one SQLite file: each coalesces its own callers; the family
    record's compare keeps their revisions distinct and consecutive."""
    a = SqliteStore(tmp_path / "state.db", FakeClock())
    b = SqliteStore(tmp_path / "state.db", FakeClock())
    envs = [Env(store=a, clock=FakeClock()), Env(store=b, clock=FakeClock())]
    try:
        revisions: list[int] = []
        for _ in range(3):  # waves, so the two batch in different ways and collide
            results = await asyncio.gather(*(register(envs[i % 2]) for i in range(40)))
            revisions += [r["revision"] for r in results]
        assert sorted(revisions) == list(range(1, 121))
        for env in envs:
            assert await list_arns(env) == [arn("web", r) for r in range(1, 121)]
    finally:
        await a.close()
        await b.close()


async def test_scopes_are_separate(env: Env) -> None:
    await register(env)
    out = await td.register_task_definition(env, OTHER, definition())
    assert out["taskDefinition"]["revision"] == 1
    assert out["taskDefinition"]["taskDefinitionArn"].startswith("arn:aws:ecs:us-east-1:210987654321:")
    with pytest.raises(ClientError):  # an ARN of another account is not found here
        await td.describe_task_definition(
            env, CTX, {"taskDefinition": out["taskDefinition"]["taskDefinitionArn"]}
        )


# ---- DescribeTaskDefinition ----------------------------------------------------------------------


async def test_describe_by_family_revision_and_arn(env: Env) -> None:
    await register(env, tags=[{"key": "a", "value": "1"}])
    await register(env)
    by_family = await td.describe_task_definition(env, CTX, {"taskDefinition": "web"})
    assert by_family["taskDefinition"]["revision"] == 2 and "tags" not in by_family
    by_rev = await td.describe_task_definition(env, CTX, {"taskDefinition": "web:1", "include": ["TAGS"]})
    assert by_rev["taskDefinition"]["revision"] == 1
    assert by_rev["tags"] == [{"key": "a", "value": "1"}]
    by_arn = await td.describe_task_definition(env, CTX, {"taskDefinition": arn("web", 1)})
    assert by_arn["taskDefinition"] == by_rev["taskDefinition"]


async def test_describe_family_means_latest_active(env: Env) -> None:
    for _ in range(3):
        await register(env)
    await td.deregister_task_definition(env, CTX, {"taskDefinition": "web:3"})
    out = await td.describe_task_definition(env, CTX, {"taskDefinition": "web"})
    assert out["taskDefinition"]["revision"] == 2
    inactive = await td.describe_task_definition(env, CTX, {"taskDefinition": "web:3"})
    assert inactive["taskDefinition"]["status"] == "INACTIVE"


async def test_describe_family_after_the_latest_is_deregistered_skips_gaps(env: Env) -> None:
    for _ in range(6):
        await register(env)
    for revision in (5, 4):
        await td.deregister_task_definition(env, CTX, {"taskDefinition": f"web:{revision}"})
    await td.delete_task_definitions(env, CTX, {"taskDefinitions": ["web:5"]})
    assert await td.expire_task_definitions(env, env.clock.time() + 1) == 1
    for revision, latest in ((6, 3), (2, 3), (3, 1), (1, None)):
        await td.deregister_task_definition(env, CTX, {"taskDefinition": f"web:{revision}"})
        if latest is None:
            with pytest.raises(ClientError):
                await td.describe_task_definition(env, CTX, {"taskDefinition": "web"})
        else:
            out = await td.describe_task_definition(env, CTX, {"taskDefinition": "web"})
            assert out["taskDefinition"]["revision"] == latest
    assert (await register(env))["revision"] == 7
    assert (await td.describe_task_definition(env, CTX, {"taskDefinition": "web"}))["taskDefinition"][
        "revision"
    ] == 7


async def test_resolve_reuses_decoded_revisions_but_sees_every_change(env: Env) -> None:
    """RunTask's and the services' reads keep decoded revisions; deregistration, deletion and
    removal still show at once, and a family name still means its latest ACTIVE revision."""
    await register(env)
    await register(env)
    first = await td.resolve_task_definition(env, CTX, "web:1")
    assert first is not None and first is await td.resolve_task_definition(env, CTX, arn("web", 1))
    await td.deregister_task_definition(env, CTX, {"taskDefinition": "web:1"})
    inactive = await td.resolve_task_definition(env, CTX, "web:1")
    assert inactive is not None and inactive.status is td.INACTIVE
    await td.delete_task_definitions(env, CTX, {"taskDefinitions": ["web:1"]})
    deleting = await td.resolve_task_definition(env, CTX, "web:1")
    assert deleting is not None and deleting.status is td.DELETE_IN_PROGRESS
    assert await td.expire_task_definitions(env, env.clock.time() + 1) == 1
    assert await td.resolve_task_definition(env, CTX, "web:1") is None
    latest = await td.resolve_task_definition(env, CTX, "web")
    assert latest is not None and latest.revision == 2
    await td.deregister_task_definition(env, CTX, {"taskDefinition": "web:2"})
    assert await td.resolve_task_definition(env, CTX, "web") is None
    described = await td.describe_task_definition(env, CTX, {"taskDefinition": "web:2"})
    assert described["taskDefinition"]["status"] == "INACTIVE"


async def test_the_family_record_stays_small(env: Env) -> None:
    for _ in range(3):
        await asyncio.gather(*(register(env) for _ in range(100)))
    kv = await env.store.get(keys.taskdef_family(ACCOUNT, REGION, "web"))
    assert kv is not None and len(kv.value) < 200


async def test_an_earlier_family_record_shape_still_reads(env: Env) -> None:
    """Records written before the counts listed every ACTIVE revision in ``activeRevisions``."""
    for _ in range(3):
        await register(env)
    await td.deregister_task_definition(env, CTX, {"taskDefinition": "web:3"})
    key = keys.taskdef_family(ACCOUNT, REGION, "web")
    old = b'{"family":"web","lastRevision":3,"activeRevisions":[1,2],"storedRevisions":3}'
    await env.store.txn(puts=[Put(key, old)])
    out = await td.describe_task_definition(env, CTX, {"taskDefinition": "web"})
    assert out["taskDefinition"]["revision"] == 2
    assert await list_arns(env) == [arn("web", 1), arn("web", 2)]
    assert await list_arns(env, status="INACTIVE") == [arn("web", 3)]
    assert (await register(env))["revision"] == 4


@pytest.mark.parametrize("ref", ["nope", "web:9", "nope:1", arn("nope", 1)])
async def test_describe_missing(env: Env, ref: str) -> None:
    await register(env)
    with pytest.raises(ClientError, match=r"^Unable to describe task definition\.$"):
        await td.describe_task_definition(env, CTX, {"taskDefinition": ref})


async def test_describe_family_with_nothing_active(env: Env) -> None:
    await register(env)
    await td.deregister_task_definition(env, CTX, {"taskDefinition": "web:1"})
    with pytest.raises(ClientError, match="Unable to describe task definition"):
        await td.describe_task_definition(env, CTX, {"taskDefinition": "web"})


async def test_describe_rejects_unknown_include(env: Env) -> None:
    await register(env)
    with pytest.raises(InvalidParameter):
        await td.describe_task_definition(env, CTX, {"taskDefinition": "web", "include": ["SETTINGS"]})


# ---- ListTaskDefinitions -------------------------------------------------------------------------


async def test_list_orders_by_family_then_revision(env: Env) -> None:
    # "a-b" sorts after "a" by name even though "a-b/" sorts before "a/" as a key
    for family in ("b", "a-b", "a", "b", "a"):
        await register(env, family)
    expected = [arn("a", 1), arn("a", 2), arn("a-b", 1), arn("b", 1), arn("b", 2)]
    assert await list_arns(env) == expected
    assert await list_arns(env, sort="DESC") == expected[::-1]
    for size in (1, 2, 3):
        assert await list_arns(env, maxResults=size) == expected
        assert await list_arns(env, maxResults=size, sort="DESC") == expected[::-1]


async def test_list_pages(env: Env) -> None:
    for _ in range(5):
        await register(env)
    first = await td.list_task_definitions(env, CTX, {"maxResults": 2})
    assert first["taskDefinitionArns"] == [arn("web", 1), arn("web", 2)]
    assert isinstance(first["nextToken"], str)
    second = await td.list_task_definitions(env, CTX, {"maxResults": 3, "nextToken": first["nextToken"]})
    assert second["taskDefinitionArns"] == [arn("web", 3), arn("web", 4), arn("web", 5)]
    assert "nextToken" not in second
    everything = await td.list_task_definitions(env, CTX, {})
    assert len(everything["taskDefinitionArns"]) == 5 and "nextToken" not in everything


async def test_list_filters_by_family_and_status(env: Env) -> None:
    for family in ("web", "web", "web", "webapp"):
        await register(env, family)
    await td.deregister_task_definition(env, CTX, {"taskDefinition": "web:2"})
    await td.deregister_task_definition(env, CTX, {"taskDefinition": "web:3"})
    await td.delete_task_definitions(env, CTX, {"taskDefinitions": ["web:3"]})
    # familyPrefix names a whole family in ListTaskDefinitions
    assert await list_arns(env, familyPrefix="web") == [arn("web", 1)]
    assert await list_arns(env, familyPrefix="we") == []
    assert await list_arns(env, status="INACTIVE") == [arn("web", 2)]
    assert await list_arns(env, status="DELETE_IN_PROGRESS") == [arn("web", 3)]
    assert await list_arns(env, status="ACTIVE") == [arn("web", 1), arn("webapp", 1)]


async def test_list_matches_every_revision_status_after_random_changes(env: Env) -> None:
    """Whichever way the family records let the listing read (counts only, keys only, or
    documents), every status, order and page size lists what the revisions themselves say."""
    rng = random.Random(7)
    families = ["a", "a-b", "b"]
    for _ in range(30):
        await register(env, rng.choice(families))
    for _ in range(25):
        family = rng.choice(families)
        page = await td.list_task_definitions(env, CTX, {"familyPrefix": family, "status": "ACTIVE"})
        inactive = await list_arns(env, familyPrefix=family, status="INACTIVE")
        step = rng.random()
        if step < 0.5 and page["taskDefinitionArns"]:
            ref = rng.choice(page["taskDefinitionArns"])
            await td.deregister_task_definition(env, CTX, {"taskDefinition": ref})
        elif step < 0.8 and inactive:
            await td.delete_task_definitions(env, CTX, {"taskDefinitions": [rng.choice(inactive)]})
        elif step < 0.9:
            await td.expire_task_definitions(env, env.clock.time() + 1)
        else:
            await register(env, family)
    truth: dict[str, list[str]] = {"ACTIVE": [], "INACTIVE": [], "DELETE_IN_PROGRESS": []}
    for family in families:  # every stored revision, described one by one
        record = await env.store.get(keys.taskdef_family(ACCOUNT, REGION, family))
        assert record is not None
        for revision in range(1, 40):
            try:
                out = await td.describe_task_definition(env, CTX, {"taskDefinition": f"{family}:{revision}"})
            except ClientError:
                continue
            truth[out["taskDefinition"]["status"]].append(arn(family, revision))
    assert all(truth.values()), "the random changes must leave revisions in every status"
    for status, expected in truth.items():
        for size in (1, 2, 3, 100):
            assert await list_arns(env, status=status, maxResults=size) == expected
            assert await list_arns(env, status=status, maxResults=size, sort="DESC") == expected[::-1]
    for family in families:
        active = [a for a in truth["ACTIVE"] if a.split("/")[1].split(":")[0] == family]
        if active:
            out = await td.describe_task_definition(env, CTX, {"taskDefinition": family})
            assert out["taskDefinition"]["taskDefinitionArn"] == active[-1]


@pytest.mark.parametrize(
    "req",
    [
        {"maxResults": 0},
        {"maxResults": 101},
        {"nextToken": "not a token"},
        {"nextToken": "WyJ3ZWIiXQ"},  # a families token (wrong shape)
        {"status": "DELETED"},
        {"sort": "UP"},
    ],
)
async def test_list_rejects(env: Env, req: dict[str, Any]) -> None:
    with pytest.raises(InvalidParameter):
        await td.list_task_definitions(env, CTX, req)


# ---- ListTaskDefinitionFamilies ------------------------------------------------------------------


async def list_families(env: Env, **req: Any) -> list[str]:
    out: list[str] = []
    token = None
    while True:
        page = await td.list_task_definition_families(
            env, CTX, {**req, **({"nextToken": token} if token else {})}
        )
        out += page["families"]
        token = page.get("nextToken")
        if not token:
            return out


async def test_families(env: Env) -> None:
    for family in ("web", "web-b", "api", "worker"):
        await register(env, family)
    await td.deregister_task_definition(env, CTX, {"taskDefinition": "api:1"})
    assert await list_families(env) == ["api", "web", "web-b", "worker"]
    assert await list_families(env, status="ALL", maxResults=1) == ["api", "web", "web-b", "worker"]
    assert await list_families(env, status="ACTIVE") == ["web", "web-b", "worker"]
    assert await list_families(env, status="INACTIVE") == ["api"]
    assert await list_families(env, familyPrefix="web", maxResults=1) == ["web", "web-b"]
    page = await td.list_task_definition_families(env, CTX, {"maxResults": 3})
    assert page["families"] == ["api", "web", "web-b"] and page["nextToken"]


async def test_families_reject(env: Env) -> None:
    with pytest.raises(InvalidParameter):
        await td.list_task_definition_families(env, CTX, {"status": "DELETE_IN_PROGRESS"})
    with pytest.raises(InvalidParameter):
        await td.list_task_definition_families(env, CTX, {"nextToken": "@@"})


# ---- Deregister, Delete and expiry ---------------------------------------------------------------


async def test_deregister(env: Env) -> None:
    await register(env)
    clock = env.clock
    assert isinstance(clock, FakeClock)
    clock.advance(5)
    out = await td.deregister_task_definition(env, CTX, {"taskDefinition": arn("web", 1)})
    assert out["taskDefinition"]["status"] == "INACTIVE"
    assert out["taskDefinition"]["deregisteredAt"] == clock.time()
    clock.advance(5)
    again = await td.deregister_task_definition(env, CTX, {"taskDefinition": "web:1"})
    assert again == out  # idempotent: deregisteredAt stays


@pytest.mark.parametrize(("ref", "message"), [("web", "revision is required"), ("web:7", "does not exist")])
async def test_deregister_rejects(env: Env, ref: str, message: str) -> None:
    await register(env)
    with pytest.raises(ClientError, match=message):
        await td.deregister_task_definition(env, CTX, {"taskDefinition": ref})


async def test_delete_only_inactive_then_expire(env: Env) -> None:
    clock = env.clock
    assert isinstance(clock, FakeClock)
    for _ in range(3):
        await register(env)
    await td.deregister_task_definition(env, CTX, {"taskDefinition": "web:1"})
    await td.deregister_task_definition(env, CTX, {"taskDefinition": "web:3"})
    clock.advance(10)
    out = await td.delete_task_definitions(
        env, CTX, {"taskDefinitions": ["web:1", arn("web", 2), "web:9", "web", "web:3"]}
    )
    assert [t["revision"] for t in out["taskDefinitions"]] == [1, 3]
    assert all(t["status"] == "DELETE_IN_PROGRESS" for t in out["taskDefinitions"])
    assert out["taskDefinitions"][0]["deleteRequestedAt"] == clock.time()
    reasons = {f["arn"]: f["reason"] for f in out["failures"]}
    assert set(reasons) == {
        arn("web", 2),
        arn("web", 9),
        f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/web",
    }
    assert "deregister" in reasons[arn("web", 2)]
    assert "does not exist" in reasons[arn("web", 9)]

    # deleting again is idempotent; nothing expires before its time
    again = await td.delete_task_definitions(env, CTX, {"taskDefinitions": ["web:1"]})
    assert again["taskDefinitions"][0]["deleteRequestedAt"] == out["taskDefinitions"][0]["deleteRequestedAt"]
    assert await td.expire_task_definitions(env, clock.time() - 1) == 0
    with pytest.raises(ClientError, match="being deleted"):
        await td.deregister_task_definition(env, CTX, {"taskDefinition": "web:1"})

    clock.advance(60)
    assert await td.expire_task_definitions(env, clock.time(), ACCOUNT, REGION) == 2
    assert await td.expire_task_definitions(env, clock.time()) == 0
    assert await env.store.get(keys.taskdef(ACCOUNT, REGION, "web", 1)) is None
    assert await list_arns(env, status="DELETE_IN_PROGRESS") == []
    with pytest.raises(ClientError):
        await td.describe_task_definition(env, CTX, {"taskDefinition": "web:1"})

    # revisions are never reused
    assert (await register(env))["revision"] == 4
    assert await list_arns(env) == [arn("web", 2), arn("web", 4)]


async def test_family_listing_after_everything_is_removed(env: Env) -> None:
    await register(env)
    await td.deregister_task_definition(env, CTX, {"taskDefinition": "web:1"})
    await td.delete_task_definitions(env, CTX, {"taskDefinitions": ["web:1"]})
    # DELETE_IN_PROGRESS revisions keep the family listed
    assert await list_families(env, status="INACTIVE") == ["web"]
    assert await td.expire_task_definitions(env, env.clock.time() + 1) == 1
    assert await list_families(env) == []
    assert (await register(env))["revision"] == 2
    assert await list_families(env) == ["web"]


async def test_expiry_reads_no_revision_of_a_family_with_every_revision_active() -> None:
    store = RecordingStore()
    env = Env(store=store, clock=FakeClock())
    await asyncio.gather(*(register(env, "busy") for _ in range(50)), register(env, "a"), register(env, "z"))
    for family in ("a", "z"):
        await td.deregister_task_definition(env, CTX, {"taskDefinition": f"{family}:1"})
        await td.delete_task_definitions(env, CTX, {"taskDefinitions": [f"{family}:1"]})
    store.values_listed = 0
    assert await td.expire_task_definitions(env, env.clock.time() + 1) == 2
    assert store.values_listed == 2  # the two deleted revisions; none of "busy"'s fifty
    assert await list_arns(env) == [arn("busy", r) for r in range(1, 51)]
    await store.close()


async def test_expire_scans_every_scope(env: Env) -> None:
    for ctx in (CTX, OTHER):
        await td.register_task_definition(env, ctx, definition())
        await td.deregister_task_definition(env, ctx, {"taskDefinition": "web:1"})
        await td.delete_task_definitions(env, ctx, {"taskDefinitions": ["web:1"]})
    assert await td.expire_task_definitions(env, env.clock.time() + 1, ACCOUNT, REGION) == 1
    assert await td.expire_task_definitions(env, env.clock.time() + 1) == 1


async def test_delete_rejects_too_many(env: Env) -> None:
    with pytest.raises(InvalidParameter):
        await td.delete_task_definitions(env, CTX, {"taskDefinitions": [f"web:{i}" for i in range(1, 12)]})
    with pytest.raises(InvalidParameter):
        await td.delete_task_definitions(env, CTX, {"taskDefinitions": []})


# ---- tags ----------------------------------------------------------------------------------------


async def test_tags(env: Env) -> None:
    await register(env, tags=[{"key": "a", "value": "1"}])
    await td.tag_task_definition(
        env, CTX, arn("web", 1), [{"key": "b", "value": "2"}, {"key": "a", "value": "3"}]
    )
    assert await td.list_task_definition_tags(env, CTX, arn("web", 1)) == [
        {"key": "a", "value": "3"},
        {"key": "b", "value": "2"},
    ]
    await td.untag_task_definition(env, CTX, arn("web", 1), ["a", "missing"])
    assert await td.task_definition_tags(env, CTX, arn("web", 1)) == (("b", "2"),)
    out = await td.describe_task_definition(env, CTX, {"taskDefinition": "web:1", "include": ["TAGS"]})
    assert out["tags"] == [{"key": "b", "value": "2"}]


@pytest.mark.parametrize(
    "ref", [arn("web", 2), arn("nope", 1), "arn:aws:ecs:us-east-1:123456789012:task-definition/web"]
)
async def test_tags_of_missing_revision(env: Env, ref: str) -> None:
    await register(env)
    with pytest.raises(ResourceNotFound):
        await td.task_definition_tags(env, CTX, ref)
    with pytest.raises(ResourceNotFound):
        await td.tag_task_definition(env, CTX, ref, [{"key": "a", "value": "b"}])


async def test_tags_rejects_reserved_prefix(env: Env) -> None:
    await register(env)
    with pytest.raises(InvalidParameter):
        await td.tag_task_definition(env, CTX, arn("web", 1), [{"key": "aws:x", "value": "b"}])


async def test_resolve_by_family_follows_the_family_record_whatever_was_decoded_before(env: Env) -> None:
    """A bare family name reads the family record every time (kept decoded only while its bytes
    stay the same): each registration and deregistration moves what it resolves to at once."""
    await register(env)
    assert (await td.resolve_task_definition(env, CTX, "web")).revision == 1  # type: ignore[union-attr]
    await register(env)
    again = await td.resolve_task_definition(env, CTX, "web")
    assert again is not None and again.revision == 2
    assert again is await td.resolve_task_definition(env, CTX, "web")  # nothing changed: nothing decoded
    await td.deregister_task_definition(env, CTX, {"taskDefinition": "web:2"})
    back = await td.resolve_task_definition(env, CTX, "web")
    assert back is not None and back.revision == 1 and back.status is td.ACTIVE
    await td.deregister_task_definition(env, CTX, {"taskDefinition": "web:1"})
    assert await td.resolve_task_definition(env, CTX, "web") is None
    for _ in range(2):  # a malformed reference is refused every time, never remembered
        with pytest.raises(ClientError, match="Invalid revision number"):
            await td.resolve_task_definition(env, CTX, "web:x")
