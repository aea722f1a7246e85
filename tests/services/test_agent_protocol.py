"""docs/agent-protocol.md from the agent's side: Poll, Report, liveness, who may act for what."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from tests.conftest import wait_until
from tests.services.agent_client import AGENT_PREFIX, AgentError, own_server_with_agent
from tests.services.conftest import register_td


def test_poll_answers_at_once_when_newer_else_when_something_changes(ecs, cluster, agents, unique):
    agent = agents(cluster)
    register_td(ecs, unique)
    first = agent.poll(known=0, wait=5)
    assert first["revision"] > 0 and first["tasks"] == [] and first["instanceStatus"] == "ACTIVE"
    # nothing new: waits the whole (short) wait, same revision
    started = time.monotonic()
    assert agent.poll(wait=0.3)["revision"] == first["revision"]
    assert time.monotonic() - started >= 0.25
    # a long-poll returns as soon as a task is placed on the instance (whether it started waiting
    # before the placement or not), not at the end of its wait
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(agent.poll, first["revision"], 10.0)
        [task] = ecs.run_task(cluster=cluster, taskDefinition=unique)["tasks"]
        t0 = time.monotonic()
        answer = waiting.result(timeout=10)
    assert time.monotonic() - t0 < 5
    assert answer["revision"] > first["revision"]
    assert [t["taskArn"] for t in answer["tasks"]] == [task["taskArn"]]
    # any server replica answers from the revision alone: an old revision gets the set at once
    assert agent.poll(known=0, wait=10)["tasks"][0]["taskArn"] == task["taskArn"]


def test_reports_are_sequenced_and_never_move_status_backwards(ecs, cluster, agents, unique):
    agent = agents(cluster)
    register_td(ecs, unique)
    [task] = ecs.run_task(cluster=cluster, taskDefinition=unique)["tasks"]
    arn = task["taskArn"]

    def status() -> str:
        return str(ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]["lastStatus"])

    results = agent.report(
        {"taskArn": arn, "seq": 2, "status": "RUNNING"},
        {"taskArn": arn, "seq": 1, "status": "PENDING"},  # reordered: older, dropped
        {"taskArn": arn, "seq": 2, "status": "RUNNING"},  # duplicate, dropped
    )
    assert [r["accepted"] for r in results] == [True, False, False]
    assert results[1]["reason"] == "STALE" and status() == "RUNNING"
    assert agent.report({"taskArn": arn, "seq": 3, "status": "PENDING"})[0][
        "accepted"
    ]  # newer, but not backwards
    assert status() == "RUNNING"
    assert agent.poll(known=0)["tasks"][0]["reportedSeq"] == 3
    missing = arn.rsplit("/", 1)[0] + "/0123456789abcdef0123456789abcdef"
    assert agent.report({"taskArn": missing, "seq": 1, "status": "RUNNING"}) == [
        {"taskArn": missing, "accepted": False, "reason": "MISSING"}
    ]
    with pytest.raises(AgentError) as e:
        agent.report({"taskArn": arn, "seq": 4, "status": "ACTIVATING"})
    assert e.value.code == "InvalidParameterException" and "reports[0].status" in e.value.message
    with pytest.raises(AgentError) as e:
        agent.report({"taskArn": arn, "status": "RUNNING"})
    assert e.value.code == "InvalidParameterException" and "seq" in e.value.message


def test_an_agent_acts_only_for_its_own_instance(ecs, cluster, agents, unique):
    mine, other = agents(cluster), agents(cluster)
    register_td(ecs, unique)
    [theirs] = ecs.start_task(
        cluster=cluster, taskDefinition=unique, containerInstances=[other.instance_arn]
    )["tasks"]
    with pytest.raises(AgentError) as e:
        mine.poll(containerInstanceArn=other.instance_arn)
    assert e.value.code == "AccessDeniedException"
    with pytest.raises(AgentError) as e:
        mine.report(
            {"taskArn": theirs["taskArn"], "seq": 1, "status": "RUNNING"}, instance_arn=other.instance_arn
        )
    assert e.value.code == "AccessDeniedException"
    with pytest.raises(AgentError) as e:  # for its own instance, about another's task
        mine.report({"taskArn": theirs["taskArn"], "seq": 1, "status": "RUNNING"})
    assert e.value.code == "AccessDeniedException"
    with pytest.raises(ClientError) as ce:
        mine.ecs().submit_task_state_change(cluster=cluster, task=theirs["taskArn"], status="RUNNING")
    assert ce.value.response["Error"]["Code"] == "AccessDeniedException"
    with pytest.raises(ClientError) as ce:
        mine.ecs().discover_poll_endpoint(cluster=cluster, containerInstance=other.instance_arn)
    assert ce.value.response["Error"]["Code"] == "AccessDeniedException"
    assert (
        ecs.describe_tasks(cluster=cluster, tasks=[theirs["taskArn"]])["tasks"][0]["lastStatus"]
        == "PROVISIONING"
    )
    with pytest.raises(AgentError) as e:
        mine.call(AGENT_PREFIX + "Nope", {})
    assert e.value.code == "UnknownOperationException"


def test_ecs_state_change_operations(dockyard_server, ecs, cluster, agents, unique):
    agent = agents(cluster)
    register_td(ecs, unique)
    [task] = ecs.run_task(cluster=cluster, taskDefinition=unique)["tasks"]
    arn = task["taskArn"]
    client = agent.ecs()
    endpoint = client.discover_poll_endpoint(cluster=cluster, containerInstance=agent.instance_arn)
    assert endpoint["endpoint"] == dockyard_server.endpoint
    client.submit_container_state_change(
        cluster=cluster, task=arn, containerName="web", runtimeId="r1", status="RUNNING", networkBindings=[]
    )
    assert (
        client.submit_task_state_change(cluster=cluster, task=arn, status="RUNNING")["acknowledgment"]
        == "ACK"
    )
    [t] = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"]
    assert t["lastStatus"] == "RUNNING" and t["containers"][0]["runtimeId"] == "r1"
    client.submit_task_state_change(
        cluster=cluster,
        task=arn,
        status="STOPPED",
        reason="done",
        containers=[{"containerName": "web", "exitCode": 0, "status": "STOPPED"}],
    )
    [t] = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"]
    assert (t["lastStatus"], t["stoppedReason"], t["containers"][0]["exitCode"]) == ("STOPPED", "done", 0)
    client.submit_task_state_change(cluster=cluster, task=arn, status="RUNNING")  # late: ignored
    assert ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]["lastStatus"] == "STOPPED"


def test_an_agent_that_stops_polling_is_disconnected_and_skipped(tmp_path, unique):
    with own_server_with_agent(tmp_path, unique, "--agent-timeout", "1") as (_, ecs, agent):
        register_td(ecs, unique)

        def connected() -> bool:
            [ci] = ecs.describe_container_instances(cluster=unique, containerInstances=[agent.instance_arn])[
                "containerInstances"
            ]
            return bool(ci["agentConnected"])

        wait_until(lambda: not connected(), timeout=10, what="agentConnected false")
        out = ecs.run_task(cluster=unique, taskDefinition=unique)
        assert out["tasks"] == [] and [(f["arn"], f["reason"]) for f in out["failures"]] == [
            (agent.instance_arn, "AGENT")
        ]
        # polling again brings it back (a new lease), and a long-poll keeps it alive
        agent.poll()
        assert connected()
        agent.poll(wait=2.0)  # longer than the timeout: the server answers within half of it
        assert connected()
        assert len(ecs.run_task(cluster=unique, taskDefinition=unique)["tasks"]) == 1


def test_the_agents_own_reports_do_not_wake_its_long_poll(ecs, cluster, agents, unique):
    """docs/agent-protocol.md section 2: the desired-set revision moves with what the agent must
    learn (a task added, its desiredStatus changed), not with what it reported itself."""
    agent = agents(cluster)
    register_td(ecs, unique)
    [task] = ecs.run_task(cluster=cluster, taskDefinition=unique)["tasks"]
    arn = task["taskArn"]
    placed = agent.poll(known=0)["revision"]
    answer = agent.call(
        AGENT_PREFIX + "Report",
        {
            "cluster": cluster,
            "containerInstanceArn": agent.instance_arn,
            "reports": [{"taskArn": arn, "seq": agent.next_seq(arn), "status": "RUNNING"}],
        },
    )
    assert answer["results"] == [{"taskArn": arn, "accepted": True}]
    assert answer["revision"] == placed  # nothing new for the agent
    started = time.monotonic()
    waited = agent.poll(known=placed, wait=0.5)
    assert time.monotonic() - started >= 0.45 and waited["revision"] == placed
    assert waited["tasks"][0]["reportedSeq"] == 1  # the set itself is always current
    # StopTask is news: the long-poll answers at once
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(agent.poll, placed, 10.0)
        ecs.stop_task(cluster=cluster, task=arn, reason="bye")
        stopping = waiting.result(timeout=10)
    assert stopping["revision"] > placed and stopping["tasks"][0]["desiredStatus"] == "STOPPED"
    # the agent's own STOPPED takes the task out of the set without waking it again
    assert agent.say(arn, "STOPPED")["accepted"]
    waited = agent.poll(known=stopping["revision"], wait=0.5)
    assert waited["revision"] == stopping["revision"] and waited["tasks"] == []
    [t] = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"]
    assert (t["lastStatus"], t["stoppedReason"]) == ("STOPPED", "bye")


def test_a_task_that_leaves_the_set_by_the_control_planes_doing_wakes_the_agent(ecs, cluster, agents, unique):
    agent = agents(cluster)
    register_td(ecs, unique)
    [task] = ecs.start_task(cluster=cluster, taskDefinition=unique, containerInstances=[agent.instance_arn])[
        "tasks"
    ]
    known = agent.poll(known=0)["revision"]
    # the agent never reported: deregistering with force stops the task at once (not by the agent)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(agent.poll, known, 10.0)
        ecs.deregister_container_instance(cluster=cluster, containerInstance=agent.instance_arn, force=True)
        answer = waiting.result(timeout=10)
    assert answer["revision"] > known and answer["instanceStatus"] == "INACTIVE"
    [t] = ecs.describe_tasks(cluster=cluster, tasks=[task["taskArn"]])["tasks"]
    assert t["lastStatus"] == "STOPPED"


def test_reports_ride_a_poll_and_are_applied_before_it_waits(ecs, cluster, agents, unique):
    agent = agents(cluster)
    register_td(ecs, unique)
    arns = [t["taskArn"] for t in ecs.run_task(cluster=cluster, taskDefinition=unique, count=3)["tasks"]]
    known = agent.poll(known=0)["revision"]
    reports = [{"taskArn": a, "seq": 1, "status": "RUNNING"} for a in arns]
    reports.append({"taskArn": arns[0], "seq": 1, "status": "RUNNING"})  # duplicate: dropped
    started = time.monotonic()
    answer = agent.poll(known=known, wait=0.5, reports=reports)
    assert time.monotonic() - started >= 0.45  # its own reports are no news
    assert [t["reportedSeq"] for t in answer["tasks"]] == [1, 1, 1]  # ... but the answer shows them
    assert answer["results"] == [{"taskArn": a, "accepted": True} for a in arns] + [
        {"taskArn": arns[0], "accepted": False, "reason": "STALE"}
    ]
    described = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]
    assert {t["lastStatus"] for t in described} == {"RUNNING"}
    assert agent.poll(known=0)["tasks"][0]["reportedSeq"] == 1
    with pytest.raises(AgentError) as e:  # validated like a Report's, before anything is applied
        agent.poll(reports=[{"taskArn": arns[1], "seq": 2, "status": "ACTIVATING"}])
    assert e.value.code == "InvalidParameterException" and "reports[0].status" in e.value.message
    assert ecs.describe_tasks(cluster=cluster, tasks=[arns[1]])["tasks"][0]["lastStatus"] == "RUNNING"


def test_an_answer_carries_each_task_definition_once(ecs, cluster, agents, unique):
    """Each AgentTask names its definition (``taskDefinitionArn``); the answer's ``taskDefinitions``
    holds every definition its tasks use, exactly once."""
    agent = agents(cluster)
    one = register_td(ecs, unique)
    arns = {t["taskArn"] for t in ecs.run_task(cluster=cluster, taskDefinition=one, count=3)["tasks"]}
    answer = agent.poll(known=0)
    assert {t["taskArn"] for t in answer["tasks"]} == arns
    assert all(t["taskDefinitionArn"] == one and "taskDefinition" not in t for t in answer["tasks"])
    assert list(answer["taskDefinitions"]) == [one]
    described = ecs.describe_task_definition(taskDefinition=one)["taskDefinition"]
    fields = ("taskDefinitionArn", "family", "revision", "containerDefinitions")
    assert {k: answer["taskDefinitions"][one][k] for k in fields} == {k: described[k] for k in fields}

    two = register_td(ecs, unique + "-two", memory=64)
    [other] = ecs.run_task(cluster=cluster, taskDefinition=two)["tasks"]
    answer = agent.poll(known=0)
    uses = {t["taskArn"]: t["taskDefinitionArn"] for t in answer["tasks"]}
    assert uses == {**dict.fromkeys(arns, one), other["taskArn"]: two}
    assert set(answer["taskDefinitions"]) == {one, two}
    assert answer["taskDefinitions"][two]["containerDefinitions"][0]["memory"] == 64


def test_a_deleted_task_definition_is_null_in_the_answer(tmp_path, unique):
    """A revision deleted (and expired) while its task runs: ``null`` in ``taskDefinitions``, in
    every answer; the other definitions are there as usual."""
    with own_server_with_agent(
        tmp_path, unique, "--retention-seconds", "0.5", "--retention-interval", "0.2"
    ) as (_, ecs, agent):
        gone, kept = register_td(ecs, unique), register_td(ecs, unique + "-kept")
        [doomed] = ecs.run_task(cluster=unique, taskDefinition=gone)["tasks"]
        [other] = ecs.run_task(cluster=unique, taskDefinition=kept)["tasks"]
        ecs.deregister_task_definition(taskDefinition=gone)
        ecs.delete_task_definitions(taskDefinitions=[gone])

        def expired() -> bool:
            try:
                ecs.describe_task_definition(taskDefinition=gone)
                return False
            except ClientError:
                return True

        wait_until(expired, timeout=20, what="expiry of the deleted revision")
        for _ in range(2):
            answer = agent.poll(known=0)
            uses = {t["taskArn"]: t["taskDefinitionArn"] for t in answer["tasks"]}
            assert uses == {doomed["taskArn"]: gone, other["taskArn"]: kept}
            assert answer["taskDefinitions"][gone] is None
            assert answer["taskDefinitions"][kept]["taskDefinitionArn"] == kept
