"""Services with real containers: the real server, real ``dockyard agent`` processes, Docker.

Scaling, replacement of a container killed behind Dockyard's back, a rolling update sampled every
200 ms against the deployment bounds, the circuit breaker rolling back a revision whose container
exits at once, the launch back-off of a crash-looping service, a DAEMON service following instances,
and a server killed with -9 in the middle of a deployment.
"""

from __future__ import annotations

import itertools
import subprocess
import time
from pathlib import Path

from tests.conftest import ServerProcess, wait_until

from .conftest import (
    FAST,
    SETTLE,
    Agents,
    Sampler,
    containers_of,
    describe_service,
    events_of,
    register,
    service_tasks,
    start_service_server,
    wait_stable,
)
from .conftest import needs_docker as _needs_docker

pytestmark = _needs_docker


def cluster_arn(ecs, cluster: str) -> str:  # type: ignore[no-untyped-def]
    return str(ecs.describe_clusters(clusters=[cluster])["clusters"][0]["clusterArn"])


def test_scale_0_3_1_0_and_a_killed_container_is_replaced(server, ecs, cluster, agents: Agents, unique):  # type: ignore[no-untyped-def]
    agents.spawn(server, cluster).wait_registered()
    td = register(ecs, unique)
    ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=td, desiredCount=0)
    assert wait_stable(ecs, cluster, "web")["runningCount"] == 0
    arn = cluster_arn(ecs, cluster)
    for desired in (3, 1):
        ecs.update_service(cluster=cluster, service="web", desiredCount=desired)
        svc = wait_stable(ecs, cluster, "web")
        assert svc["runningCount"] == desired
        wait_until(lambda d=desired: len(containers_of(arn)) == d, timeout=30, what=f"{desired} containers")

    # a container killed behind Dockyard's back: the task stops and the service replaces it
    [victim] = service_tasks(ecs, cluster, "web")
    subprocess.run(["docker", "kill", victim["containers"][0]["runtimeId"]], check=True, capture_output=True)
    replaced = wait_until(
        lambda: [t for t in service_tasks(ecs, cluster, "web") if t["taskArn"] != victim["taskArn"]],
        timeout=30,
        what="a replacement task",
    )
    assert len(replaced) == 1
    stopped = ecs.describe_tasks(cluster=cluster, tasks=[victim["taskArn"]])["tasks"][0]
    assert stopped["lastStatus"] == "STOPPED" and stopped["stopCode"] == "EssentialContainerExited"
    wait_stable(ecs, cluster, "web")
    wait_until(lambda: len(containers_of(arn)) == 1, timeout=30, what="one container again")

    ecs.update_service(cluster=cluster, service="web", desiredCount=0)
    assert wait_stable(ecs, cluster, "web")["runningCount"] == 0
    wait_until(lambda: not containers_of(arn), timeout=30, what="no containers")
    msgs = events_of(ecs, cluster, "web")
    assert any(m.startswith("(service web) has stopped 1 running tasks: (task ") for m in msgs)
    assert any(m.startswith("(service web) has started 3 tasks: ") for m in msgs)
    ecs.delete_service(cluster=cluster, service="web")
    ecs.get_waiter("services_inactive").wait(cluster=cluster, services=["web"], WaiterConfig=FAST)


def test_rolling_update_keeps_the_bounds_sampled_every_200ms(server, ecs, cluster, agents: Agents, unique):  # type: ignore[no-untyped-def]
    agents.spawn(server, cluster).wait_registered()
    v1 = register(ecs, unique)
    v2 = register(ecs, unique, environment=[{"name": "V", "value": "2"}])
    desired, config = 4, {"minimumHealthyPercent": 50, "maximumPercent": 150}
    ecs.create_service(
        cluster=cluster,
        serviceName="web",
        taskDefinition=v1,
        desiredCount=desired,
        deploymentConfiguration=config,
    )
    wait_until(
        lambda: describe_service(ecs, cluster, "web")["deployments"][0]["rolloutState"] == "COMPLETED",
        timeout=60,
        what="the first deployment",
    )
    with Sampler(server.client, cluster, "web") as sampler:
        ecs.update_service(cluster=cluster, service="web", taskDefinition=v2)
        wait_until(
            lambda: (
                (s := describe_service(ecs, cluster, "web"))["deployments"][0]["rolloutState"] == "COMPLETED"
                and len(s["deployments"]) == 1
            ),
            timeout=90,
            what="the rolling update to complete",
        )
    samples = sampler.samples
    assert len(samples) >= 8, "too few samples"
    assert max(s.live for s in samples) <= desired * 150 // 100, samples
    assert min(s.healthy for s in samples) >= (desired * 50 + 99) // 100, samples
    tasks = service_tasks(ecs, cluster, "web")
    assert len(tasks) == desired and all(t["taskDefinitionArn"] == v2 for t in tasks)


def test_breaker_rolls_back_a_revision_that_exits_at_once(server, ecs, cluster, agents: Agents, unique):  # type: ignore[no-untyped-def]
    agents.spawn(server, cluster).wait_registered()
    good = register(ecs, unique)
    bad = register(ecs, unique, command=["sh", "-c", "exit 1"])
    ecs.create_service(
        cluster=cluster,
        serviceName="web",
        taskDefinition=good,
        desiredCount=3,
        deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True}},
    )
    wait_until(
        lambda: describe_service(ecs, cluster, "web")["deployments"][0]["rolloutState"] == "COMPLETED",
        timeout=60,
        what="the first deployment",
    )
    first = describe_service(ecs, cluster, "web")["deployments"][0]["id"]
    failing = ecs.update_service(cluster=cluster, service="web", taskDefinition=bad)["service"][
        "deployments"
    ][0]
    rolled = wait_until(
        lambda: (s := describe_service(ecs, cluster, "web"))["deployments"][0]["id"] == first and s,
        timeout=60,
        what="the rollback",
    )
    assert rolled["taskDefinition"] == good
    # the failed deployment stays listed (FAILED) only until the rolled-back one completes again
    for d in rolled["deployments"][1:]:
        assert d["id"] == failing["id"] and d["rolloutState"] == "FAILED" and d["failedTasks"] >= 3
    msgs = events_of(ecs, cluster, "web")
    assert f"(service web) rolling back to deployment {first}." in msgs
    assert f"(service web) (deployment {failing['id']}) deployment failed: tasks failed to start." in msgs
    svc = wait_stable(ecs, cluster, "web")
    assert svc["runningCount"] == 3 and svc["deployments"][0]["rolloutState"] in ("IN_PROGRESS", "COMPLETED")
    assert all(t["taskDefinitionArn"] == good for t in service_tasks(ecs, cluster, "web"))


def test_a_crash_looping_service_backs_off(server, ecs, cluster, agents: Agents, unique):  # type: ignore[no-untyped-def]
    agents.spawn(server, cluster).wait_registered()
    td = register(ecs, unique, command=["sh", "-c", "exit 3"])
    ecs.create_service(cluster=cluster, serviceName="loop", taskDefinition=td, desiredCount=1)
    throttled = "(service loop) is unable to consistently start tasks successfully."
    wait_until(lambda: throttled in events_of(ecs, cluster, "loop"), timeout=30, what="the throttle event")
    time.sleep(12)  # observe the back-off for a while (1 s, 2 s, 4 s, 8 s between launches)
    created = sorted(
        t["createdAt"].timestamp()
        for t in service_tasks(ecs, cluster, "loop", "STOPPED") + service_tasks(ecs, cluster, "loop")
    )
    gaps = [b - a for a, b in itertools.pairwise(created)]
    assert len(created) <= 10, gaps  # without the back-off, one launch per second or so
    assert max(gaps[-2:]) >= 3.5, gaps  # the delays grow
    assert events_of(ecs, cluster, "loop").count(throttled) == 1
    ecs.delete_service(cluster=cluster, service="loop", force=True)


def test_daemon_follows_instances(server, ecs, cluster, agents: Agents, unique):  # type: ignore[no-untyped-def]
    one = agents.spawn(server, cluster, "one").wait_registered()
    two = agents.spawn(server, cluster, "two").wait_registered()
    td = register(ecs, unique)
    ecs.create_service(cluster=cluster, serviceName="d", taskDefinition=td, schedulingStrategy="DAEMON")

    def on_instances() -> list[str]:
        return sorted(t["containerInstanceArn"] for t in service_tasks(ecs, cluster, "d"))

    svc = wait_stable(ecs, cluster, "d")
    assert svc["desiredCount"] == 2 and on_instances() == sorted([one, two])
    three = agents.spawn(server, cluster, "three").wait_registered()
    wait_until(
        lambda: on_instances() == sorted([one, two, three]), timeout=30, what="a task on the new instance"
    )
    assert wait_stable(ecs, cluster, "d")["desiredCount"] == 3
    ecs.update_container_instances_state(cluster=cluster, containerInstances=[two], status="DRAINING")
    wait_until(
        lambda: on_instances() == sorted([one, three]), timeout=30, what="the draining instance's task gone"
    )
    assert wait_stable(ecs, cluster, "d")["desiredCount"] == 2
    ecs.delete_service(cluster=cluster, service="d")
    ecs.get_waiter("services_inactive").wait(cluster=cluster, services=["d"], WaiterConfig=FAST)
    wait_until(lambda: not containers_of(cluster_arn(ecs, cluster)), timeout=30, what="no containers")


def test_tasks_of_a_disconnected_agent_are_replaced(server, ecs, cluster, agents: Agents, unique):  # type: ignore[no-untyped-def]
    first = agents.spawn(server, cluster, "first")
    one = first.wait_registered()
    td = register(ecs, unique)
    ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=td, desiredCount=2)
    wait_stable(ecs, cluster, "web")
    two = agents.spawn(server, cluster, "second").wait_registered()
    lost = {t["taskArn"] for t in service_tasks(ecs, cluster, "web")}
    first.kill()  # -9: its containers keep running, nobody reports for them
    # agent timeout 10 s, then the 6 s grace: the tasks are STOPPED without the agent and replaced
    wait_until(
        lambda: (
            {t["containerInstanceArn"] for t in service_tasks(ecs, cluster, "web")} == {two}
            and len(service_tasks(ecs, cluster, "web")) == 2
        ),
        timeout=45,
        what="replacements on the connected instance",
    )
    gone = ecs.describe_tasks(cluster=cluster, tasks=sorted(lost))["tasks"]
    assert all(t["lastStatus"] == "STOPPED" and "disconnected" in t["stoppedReason"] for t in gone)
    assert wait_stable(ecs, cluster, "web")["runningCount"] == 2
    first.start()  # back: it stops the containers of the tasks that were replaced
    assert first.wait_registered() == one
    wait_until(lambda: len(containers_of(cluster_arn(ecs, cluster))) == 2, timeout=30, what="2 containers")


def test_server_killed_mid_deployment_resumes_within_the_bounds(agents: Agents, unique, tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "srv").mkdir()
    srv: ServerProcess = start_service_server(tmp_path / "srv")
    arn = ""
    try:
        ecs = srv.client("ecs")
        arn = ecs.create_cluster(clusterName=unique)["cluster"]["clusterArn"]  # type: ignore[attr-defined]
        agents.spawn(srv, unique).wait_registered()
        v1, v2 = register(ecs, unique), register(ecs, unique, environment=[{"name": "V", "value": "2"}])
        desired = 4
        ecs.create_service(
            cluster=unique,
            serviceName="web",
            taskDefinition=v1,
            desiredCount=desired,
            deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 150},
        )
        wait_until(
            lambda: describe_service(ecs, unique, "web")["deployments"][0]["rolloutState"] == "COMPLETED",
            timeout=60,
            what="the first deployment",
        )
        with Sampler(srv.client, unique, "web") as sampler:
            ecs.update_service(cluster=unique, service="web", taskDefinition=v2)
            wait_until(
                lambda: any(t["taskDefinitionArn"] == v2 for t in service_tasks(ecs, unique, "web")),
                timeout=30,
                what="the deployment under way",
            )
            assert describe_service(ecs, unique, "web")["deployments"][0]["rolloutState"] == "IN_PROGRESS"
            srv.kill()  # -9
            time.sleep(SETTLE)  # tasks settle while no controller runs
            srv.start()
            ecs = srv.client("ecs")
            wait_until(
                lambda: (
                    (s := describe_service(ecs, unique, "web"))["deployments"][0]["rolloutState"]
                    == "COMPLETED"
                    and len(s["deployments"]) == 1
                ),
                timeout=90,
                what="the deployment to finish after the restart",
            )
        assert max(s.live for s in sampler.samples) <= desired * 150 // 100, sampler.samples
        # (whether a sample failed while the server was down depends on retries; not asserted)
        tasks = service_tasks(ecs, unique, "web")
        assert len(tasks) == desired and all(t["taskDefinitionArn"] == v2 for t in tasks)
        assert wait_stable(ecs, unique, "web")["runningCount"] == desired
    finally:
        srv.kill()
        if arn:
            subprocess.run(
                f"docker ps -aq --filter label=com.amazonaws.ecs.cluster={arn} | xargs -r docker rm -f",
                shell=True,
                capture_output=True,
            )
