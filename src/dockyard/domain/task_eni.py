"""PURE: an awsvpc task's network interface as ECS shows it (the ``ElasticNetworkInterface``
attachment and each container's ``networkInterfaces``) and as the agent receives it.

The task document keeps ``eni``: {id, subnetId, vpcId, networkInterfaceId, macAddress,
privateDnsName, privateIPv4Address, securityGroups, subnetCidr, gateway, networkName}.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dockyard.domain.ec2 import NetworkInterface, Subnet, gateway
from dockyard.domain.task_status import TaskStatus

ATTACHMENT_TYPE = "ElasticNetworkInterface"
_DETAILS = ("subnetId", "networkInterfaceId", "macAddress", "privateDnsName", "privateIPv4Address")


def eni_document(eni: NetworkInterface, subnet: Subnet, region: str) -> dict[str, Any]:
    return {
        "id": eni.id[4:] + "-attachment",
        "subnetId": eni.subnet_id,
        "vpcId": eni.vpc_id,
        "networkInterfaceId": eni.id,
        "macAddress": eni.mac,
        "privateDnsName": eni.private_dns_name(region),
        "privateIPv4Address": eni.address,
        "securityGroups": list(eni.groups),
        "subnetCidr": subnet.cidr,
        "gateway": gateway(subnet.cidr),
        "networkName": subnet.network_name,
    }


def attachment_status(last: TaskStatus) -> str:
    if last is TaskStatus.STOPPED:
        return "DELETED"
    if last is TaskStatus.DEPROVISIONING:
        return "DETACHING"
    if last is TaskStatus.PROVISIONING:
        return "PRECREATED"
    return "ATTACHED"


def attachment_wire(eni: Mapping[str, Any], last: TaskStatus) -> dict[str, Any]:
    return {
        "id": eni["id"],
        "type": ATTACHMENT_TYPE,
        "status": attachment_status(last),
        "details": [{"name": n, "value": str(eni[n])} for n in _DETAILS],
    }


def container_interfaces(eni: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"attachmentId": eni["id"], "privateIpv4Address": eni["privateIPv4Address"]}]


LABEL_SUBNET = "com.dockyard.subnet"


def subnet_network_config(name: str, cidr: str, gateway_address: str, subnet_id: str) -> dict[str, Any]:
    """The Docker network that carries a subnet on a host (agents and load balancers create it alike)."""
    return {
        "Name": name,
        "Driver": "bridge",
        "CheckDuplicate": True,
        "IPAM": {"Config": [{"Subnet": cidr, "Gateway": gateway_address}]},
        "Options": {"com.docker.network.bridge.enable_ip_masquerade": "false"},
        "Labels": {LABEL_SUBNET: subnet_id},
    }
