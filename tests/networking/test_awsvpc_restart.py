"""An agent killed with -9 and started again re-adopts its awsvpc tasks: the same pause container
(namespace, address, nft rules), no second one, the task still reachable only as its groups say;
and what a killed agent left for tasks that are gone is removed."""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from pathlib import Path

from tests.agent.agent_process import AgentProcess
from tests.agent.conftest import needs_docker, remove_labelled
from tests.conftest import ServerProcess, wait_until
from tests.networking.test_awsvpc_docker import (
    _address,
    _get,
    _reach,
    _remove_subnet_networks,
    _run,
    _running,
    _web_family,
)

pytestmark = needs_docker


def _pause_containers(instance_arn: str) -> dict[str, str]:
    """{container id: its address on a subnet network ('' for a warm one)} of the instance."""
    ids = subprocess.run(
        ["docker", "ps", "-q", "--no-trunc", "--filter", f"label=com.dockyard.pause-pool={instance_arn}"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    out = {}
    for cid in ids:
        shown = subprocess.run(
            ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", cid],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        networks = json.loads(shown or "{}") or {}
        out[cid] = next((n["IPAddress"] for name, n in networks.items() if name != "bridge"), "")
    return out


def _network_mode(task: dict, container: str) -> str:  # type: ignore[type-arg]
    rid = next(c["runtimeId"] for c in task["containers"] if c["name"] == container)
    return subprocess.run(
        ["docker", "inspect", "-f", "{{.HostConfig.NetworkMode}}", rid],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()


def test_agent_kill_9_readopts_awsvpc_task(
    dockyard_server: ServerProcess, unique: str, tmp_path: Path
) -> None:
    ecs, ec2 = dockyard_server.client("ecs"), dockyard_server.client("ec2")
    cluster_arn = ecs.create_cluster(clusterName=unique)["cluster"]["clusterArn"]  # type: ignore[attr-defined]
    state = tmp_path / "agent"
    agent = AgentProcess(dockyard_server, unique, state, tmp_path / "agent.log").start()
    instance = agent.wait_registered()
    try:
        subnet = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"][0]  # type: ignore[attr-defined]
        tag = uuid.uuid4().hex[:8]
        group = ec2.create_security_group(GroupName=f"re-{tag}", Description="tasks")["GroupId"]  # type: ignore[attr-defined]
        td = _web_family(ecs, f"readopt-{tag}")
        kept = _running(ecs, unique, _run(ecs, unique, td, [group], subnet["SubnetId"]))
        gone = _running(ecs, unique, _run(ecs, unique, td, [group], subnet["SubnetId"]))
        address, gone_address = _address(kept), _address(gone)
        before = _pause_containers(instance)
        (pause,) = [cid for cid, a in before.items() if a == address]
        assert _network_mode(kept, "web") == f"container:{pause}"

        agent.kill(signal.SIGKILL)
        # while the agent is away, one task is stopped: its pause container must not outlive it
        ecs.stop_task(cluster=unique, task=gone["taskArn"])  # type: ignore[attr-defined]
        subprocess.run(["docker", "rm", "-f", *(c["runtimeId"] for c in gone["containers"])], timeout=60)

        agent = AgentProcess(dockyard_server, unique, state, tmp_path / "agent-2.log").start()
        assert agent.wait_registered(previous=instance) == instance

        def settled() -> bool:
            held = _pause_containers(instance)
            return [cid for cid, a in held.items() if a] == [pause] and gone_address not in held.values()

        wait_until(settled, timeout=30, what="one pause container per live task, the same one")
        t = ecs.describe_tasks(cluster=unique, tasks=[kept["taskArn"]])["tasks"][0]  # type: ignore[attr-defined]
        assert t["lastStatus"] == "RUNNING" and _address(t) == address
        assert _network_mode(t, "web") == f"container:{pause}"
        assert _reach(t, "127.0.0.1")  # its containers still share the namespace
        assert not _get(f"http://{address}/")  # its rules are still in place

        # and the adopted task's rules still follow its group
        host_rule = {
            "IpProtocol": "tcp",
            "FromPort": 80,
            "ToPort": 80,
            "IpRanges": [{"CidrIp": subnet["CidrBlock"].rsplit(".", 2)[0] + ".0.1/32"}],
        }
        ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[host_rule])  # type: ignore[attr-defined]
        wait_until(lambda: _get(f"http://{address}/", 0.3), timeout=5, interval=0.1, what="authorize applied")

        # stopping it after the restart removes its (adopted) pause container
        ecs.stop_task(cluster=unique, task=kept["taskArn"])  # type: ignore[attr-defined]
        wait_until(
            lambda: not any(_pause_containers(instance).values()), timeout=60, what="pause container removed"
        )
    finally:
        agent.kill()
        remove_labelled(f"com.amazonaws.ecs.cluster={cluster_arn}")
        remove_labelled(f"com.dockyard.pause-pool={instance}")
        _remove_subnet_networks()
