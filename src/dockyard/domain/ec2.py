"""PURE: the EC2 networking subset awsvpc needs: VPCs, subnets, security groups and their rules,
task network interfaces (ENIs), and the errors EC2's protocol names.

Errors (``api/ec2_protocol.py`` renders them as ``<Response><Errors><Error><Code>``)::

    DockyardError
     └── Ec2Error                                   400 unless noted
          ├── InvalidParameterValue, MissingParameter, InvalidParameterCombination
          ├── InvalidVpcRange, InvalidSubnetRange, InvalidSubnetConflict
          ├── InvalidVpcIdNotFound, InvalidSubnetIdNotFound, InvalidGroupNotFound
          ├── InvalidGroupDuplicate, InvalidPermissionDuplicate, InvalidPermissionNotFound
          ├── DependencyViolation, CannotDelete (the default group)
          └── InsufficientFreeAddressesInSubnet

Addresses: AWS reserves the first four addresses and the last one of a subnet; Dockyard does the
same (the ``.1`` is the subnet network's gateway, the host side of its bridge).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dockyard.domain.errors import DockyardError

ALL_PROTOCOLS = "-1"
PROTOCOLS = {"tcp": "tcp", "6": "tcp", "udp": "udp", "17": "udp", "icmp": "icmp", "1": "icmp", "-1": "-1"}
DEFAULT_GROUP_NAME = "default"


class Ec2Error(DockyardError):
    code: ClassVar[str] = "InvalidParameterValue"
    status: ClassVar[int] = 400


class InvalidParameterValue(Ec2Error):
    code = "InvalidParameterValue"


class MissingParameter(Ec2Error):
    code = "MissingParameter"


class InvalidVpcRange(Ec2Error):
    code = "InvalidVpc.Range"


class InvalidSubnetRange(Ec2Error):
    code = "InvalidSubnet.Range"


class InvalidSubnetConflict(Ec2Error):
    code = "InvalidSubnet.Conflict"


class InvalidVpcIdNotFound(Ec2Error):
    code = "InvalidVpcID.NotFound"


class InvalidSubnetIdNotFound(Ec2Error):
    code = "InvalidSubnetID.NotFound"


class InvalidGroupNotFound(Ec2Error):
    code = "InvalidGroup.NotFound"


class InvalidGroupDuplicate(Ec2Error):
    code = "InvalidGroup.Duplicate"


class InvalidPermissionDuplicate(Ec2Error):
    code = "InvalidPermission.Duplicate"


class InvalidPermissionNotFound(Ec2Error):
    code = "InvalidPermission.NotFound"


class DependencyViolation(Ec2Error):
    code = "DependencyViolation"


class CannotDelete(Ec2Error):
    code = "CannotDelete"


class InsufficientFreeAddresses(Ec2Error):
    code = "InsufficientFreeAddressesInSubnet"


# ---- ranges ----------------------------------------------------------------------------------------


def network(cidr: str, error: type[Ec2Error] = InvalidParameterValue) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError:
        raise error(
            f"Value ({cidr}) for parameter cidrBlock is invalid. This is not a valid CIDR block."
        ) from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise error(f"Value ({cidr}) for parameter cidrBlock is invalid: only IPv4 is supported.")
    return net


def check_vpc_range(cidr: str, forbidden: Iterable[str]) -> ipaddress.IPv4Network:
    """A VPC block: /16 to /28 (EC2's limits) and clear of Docker's pools and the host's routes."""
    net = network(cidr, InvalidVpcRange)
    if not 16 <= net.prefixlen <= 28:
        raise InvalidVpcRange(f"The CIDR '{cidr}' is invalid: a VPC block is /16 to /28.")
    _clear_of(net, forbidden, InvalidVpcRange)
    return net


def check_subnet_range(
    cidr: str, vpc_cidr: str, siblings: Iterable[str], forbidden: Iterable[str]
) -> ipaddress.IPv4Network:
    net = network(cidr, InvalidSubnetRange)
    if not 16 <= net.prefixlen <= 28 or not net.subnet_of(ipaddress.IPv4Network(vpc_cidr)):
        raise InvalidSubnetRange(f"The CIDR '{cidr}' is invalid for this VPC ({vpc_cidr}).")
    for other in siblings:
        if net.overlaps(ipaddress.IPv4Network(other)):
            raise InvalidSubnetConflict(f"The CIDR '{cidr}' conflicts with another subnet ({other}).")
    _clear_of(net, forbidden, InvalidSubnetRange)
    return net


def _clear_of(net: ipaddress.IPv4Network, forbidden: Iterable[str], error: type[Ec2Error]) -> None:
    for cidr in forbidden:
        other = ipaddress.ip_network(cidr, strict=False)
        if isinstance(other, ipaddress.IPv4Network) and net.overlaps(other):
            raise error(
                f"The CIDR '{net}' overlaps {other}, which Docker's address pools or this machine's "
                "routes use; choose another range."
            )


def gateway(cidr: str) -> str:
    return str(ipaddress.IPv4Network(cidr).network_address + 1)


def usable(cidr: str) -> range:
    """Offsets of the addresses tasks may get (the first four and the last are reserved)."""
    net = ipaddress.IPv4Network(cidr)
    return range(4, net.num_addresses - 1)


def free_addresses(cidr: str, taken: Iterable[str]) -> int:
    """How many addresses of ``cidr`` tasks may still get."""
    net = ipaddress.IPv4Network(cidr)
    offsets = usable(cidr)
    used = {a for a in taken if ipaddress.IPv4Address(a) in net}
    return len(offsets) - sum(
        1 for a in used if int(ipaddress.IPv4Address(a)) - int(net.network_address) in offsets
    )


def pick_addresses(cidr: str, taken: Iterable[str], count: int, rng: random.Random) -> list[str]:
    """``count`` free addresses of ``cidr``, spread at random so concurrent allocators rarely collide."""
    net = ipaddress.IPv4Network(cidr)
    used = set(taken)
    free = [str(net.network_address + i) for i in usable(cidr)]
    free = [a for a in free if a not in used]
    if len(free) < count:
        raise InsufficientFreeAddresses(f"There are not enough free addresses in subnet {cidr}.")
    return rng.sample(free, count)


def mac_address(ip: str) -> str:
    """A locally administered MAC derived from the address (Docker derives the same way)."""
    octets = ipaddress.IPv4Address(ip).packed
    return "02:42:" + ":".join(f"{b:02x}" for b in octets)


# ---- documents --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vpc:
    id: str
    cidr: str
    owner: str
    is_default: bool = False
    tags: tuple[tuple[str, str], ...] = ()

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "cidr": self.cidr,
            "owner": self.owner,
            "default": self.is_default,
            "tags": [list(t) for t in self.tags],
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> Vpc:
        return Vpc(
            doc["id"],
            doc["cidr"],
            doc["owner"],
            bool(doc.get("default")),
            tuple((str(k), str(v)) for k, v in doc.get("tags") or ()),
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "VpcId": self.id,
            "CidrBlock": self.cidr,
            "State": "available",
            "OwnerId": self.owner,
            "InstanceTenancy": "default",
            "IsDefault": self.is_default,
            "DhcpOptionsId": "default",
            "CidrBlockAssociationSet": [
                {
                    "AssociationId": f"vpc-cidr-assoc-{self.id[4:]}",
                    "CidrBlock": self.cidr,
                    "CidrBlockState": {"State": "associated"},
                }
            ],
            "Tags": [{"Key": k, "Value": v} for k, v in self.tags],
        }


@dataclass(frozen=True)
class Subnet:
    id: str
    vpc_id: str
    cidr: str
    zone: str
    owner: str
    default_for_az: bool = False
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def network_name(self) -> str:
        """The Docker network that carries this subnet on every host."""
        return f"dockyard-{self.id}"

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "vpcId": self.vpc_id,
            "cidr": self.cidr,
            "zone": self.zone,
            "owner": self.owner,
            "default": self.default_for_az,
            "tags": [list(t) for t in self.tags],
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> Subnet:
        return Subnet(
            doc["id"],
            doc["vpcId"],
            doc["cidr"],
            doc["zone"],
            doc["owner"],
            bool(doc.get("default")),
            tuple((str(k), str(v)) for k, v in doc.get("tags") or ()),
        )

    def to_wire(self, region: str, available: int) -> dict[str, Any]:
        return {
            "SubnetId": self.id,
            "VpcId": self.vpc_id,
            "CidrBlock": self.cidr,
            "AvailabilityZone": self.zone,
            "AvailabilityZoneId": f"{region[:3]}-az1",
            "AvailableIpAddressCount": available,
            "DefaultForAz": self.default_for_az,
            "MapPublicIpOnLaunch": False,
            "State": "available",
            "OwnerId": self.owner,
            "SubnetArn": f"arn:aws:ec2:{region}:{self.owner}:subnet/{self.id}",
            "Tags": [{"Key": k, "Value": v} for k, v in self.tags],
        }


@dataclass(frozen=True)
class Rule:
    """One ingress permission: protocol, port range, and one source (a CIDR or a group)."""

    protocol: str  # tcp | udp | icmp | -1
    from_port: int
    to_port: int
    cidr: str | None = None
    group_id: str | None = None
    description: str = ""

    @property
    def identity(self) -> tuple[str, int, int, str | None, str | None]:
        return (self.protocol, self.from_port, self.to_port, self.cidr, self.group_id)

    def to_doc(self) -> dict[str, Any]:
        return {
            "p": self.protocol,
            "f": self.from_port,
            "t": self.to_port,
            "c": self.cidr,
            "g": self.group_id,
            "d": self.description,
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> Rule:
        return Rule(doc["p"], int(doc["f"]), int(doc["t"]), doc.get("c"), doc.get("g"), doc.get("d") or "")


@dataclass(frozen=True)
class SecurityGroup:
    id: str
    name: str
    description: str
    vpc_id: str
    owner: str
    ingress: tuple[Rule, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "vpcId": self.vpc_id,
            "owner": self.owner,
            "ingress": [r.to_doc() for r in self.ingress],
            "tags": [list(t) for t in self.tags],
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> SecurityGroup:
        return SecurityGroup(
            doc["id"],
            doc["name"],
            doc["description"],
            doc["vpcId"],
            doc["owner"],
            tuple(Rule.from_doc(r) for r in doc.get("ingress") or ()),
            tuple((str(k), str(v)) for k, v in doc.get("tags") or ()),
        )

    def to_wire(self, region: str) -> dict[str, Any]:
        return {
            "GroupId": self.id,
            "GroupName": self.name,
            "Description": self.description,
            "VpcId": self.vpc_id,
            "OwnerId": self.owner,
            "SecurityGroupArn": f"arn:aws:ec2:{region}:{self.owner}:security-group/{self.id}",
            "IpPermissions": permissions_wire(self.ingress, self.owner),
            "IpPermissionsEgress": [
                {
                    "IpProtocol": "-1",
                    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                    "UserIdGroupPairs": [],
                    "Ipv6Ranges": [],
                    "PrefixListIds": [],
                }
            ],
            "Tags": [{"Key": k, "Value": v} for k, v in self.tags],
        }


def permissions_wire(rules: Sequence[Rule], owner: str) -> list[dict[str, Any]]:
    """Rules grouped as EC2 shows them: one IpPermission per (protocol, ports)."""
    grouped: dict[tuple[str, int, int], dict[str, Any]] = {}
    for r in rules:
        perm = grouped.setdefault(
            (r.protocol, r.from_port, r.to_port),
            {
                "IpProtocol": r.protocol,
                "IpRanges": [],
                "UserIdGroupPairs": [],
                "Ipv6Ranges": [],
                "PrefixListIds": [],
            },
        )
        if r.protocol != ALL_PROTOCOLS:
            perm["FromPort"], perm["ToPort"] = r.from_port, r.to_port
        if r.cidr is not None:
            perm["IpRanges"].append(
                {"CidrIp": r.cidr, **({"Description": r.description} if r.description else {})}
            )
        if r.group_id is not None:
            perm["UserIdGroupPairs"].append({"GroupId": r.group_id, "UserId": owner})
    return list(grouped.values())


def parse_permissions(perms: Sequence[Mapping[str, Any]]) -> list[Rule]:
    """``IpPermissions`` of Authorize/Revoke as rules, one per source."""
    out: list[Rule] = []
    for p in perms:
        raw = str(p.get("IpProtocol", "")).lower()
        protocol = PROTOCOLS.get(raw)
        if protocol is None:
            raise InvalidParameterValue(f"Invalid value '{raw}' for IP protocol. Unknown protocol.")
        if protocol == ALL_PROTOCOLS:
            low, high = 0, 65535
        else:
            given_low, given_high = p.get("FromPort"), p.get("ToPort")
            if given_low is None or given_high is None:
                raise MissingParameter("The request must contain the parameters FromPort and ToPort.")
            low, high = int(given_low), int(given_high)
            if protocol == "icmp":
                low, high = 0, 65535
            elif not (0 <= low <= high <= 65535):
                raise InvalidParameterValue(f"Invalid port range {low}-{high}.")
        sources = 0
        for r in p.get("IpRanges") or ():
            cidr = str(network(str(r.get("CidrIp", "")).strip()) if "/" in str(r.get("CidrIp", "")) else "")
            if not cidr:
                raise InvalidParameterValue(f"CIDR block {r.get('CidrIp')} is malformed")
            out.append(
                Rule(protocol, low, high, cidr=_normal(cidr), description=str(r.get("Description") or ""))
            )
            sources += 1
        for g in p.get("UserIdGroupPairs") or ():
            if not g.get("GroupId"):
                raise MissingParameter("A source group must be named by GroupId.")
            out.append(Rule(protocol, low, high, group_id=str(g["GroupId"])))
            sources += 1
        if not sources:
            raise MissingParameter("Each permission needs an IpRanges CIDR or a UserIdGroupPairs group.")
    return out


def _normal(cidr: str) -> str:
    return str(ipaddress.ip_network(cidr, strict=False))


@dataclass(frozen=True)
class NetworkInterface:
    """A task's or a load balancer's interface (its address claim in the subnet). A load balancer's
    has its ARN as ``task_arn``, its document's key as ``task_key`` and no instance."""

    id: str
    subnet_id: str
    vpc_id: str
    address: str
    mac: str
    groups: tuple[str, ...]
    task_arn: str
    task_key: str
    instance_arn: str
    zone: str
    owner: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subnetId": self.subnet_id,
            "vpcId": self.vpc_id,
            "address": self.address,
            "mac": self.mac,
            "groups": list(self.groups),
            "taskArn": self.task_arn,
            "taskKey": self.task_key,
            "instanceArn": self.instance_arn,
            "zone": self.zone,
            "owner": self.owner,
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> NetworkInterface:
        return NetworkInterface(
            doc["id"],
            doc["subnetId"],
            doc["vpcId"],
            doc["address"],
            doc["mac"],
            tuple(doc.get("groups") or ()),
            doc["taskArn"],
            doc["taskKey"],
            doc["instanceArn"],
            doc["zone"],
            doc["owner"],
        )

    @property
    def is_load_balancer(self) -> bool:
        """A load balancer's interface: ``task_arn`` is then the load balancer's ARN."""
        return ":elasticloadbalancing:" in self.task_arn

    def description(self, region: str) -> str:
        if self.is_load_balancer:  # ELB's own wording: "ELB app/<name>/<id>"
            kind = "net" if "/net/" in self.task_arn else "app"
            return "ELB " + kind + "/" + self.task_arn.split(f"loadbalancer/{kind}/", 1)[-1]
        return f"arn:aws:ecs:{region}:{self.owner}:attachment/{self.id[4:]}"

    def private_dns_name(self, region: str) -> str:
        return f"ip-{self.address.replace('.', '-')}.{region}.compute.internal"

    def to_wire(self, region: str, group_names: Mapping[str, str]) -> dict[str, Any]:
        return {
            "NetworkInterfaceId": self.id,
            "SubnetId": self.subnet_id,
            "VpcId": self.vpc_id,
            "AvailabilityZone": self.zone,
            "PrivateIpAddress": self.address,
            "PrivateDnsName": self.private_dns_name(region),
            "MacAddress": self.mac,
            "OwnerId": self.owner,
            "RequesterId": "amazon-elb" if self.is_load_balancer else "ecs",
            "RequesterManaged": True,
            "InterfaceType": "interface",
            "Status": "in-use",
            "Description": self.description(region),
            "SourceDestCheck": True,
            "Groups": [{"GroupId": g, "GroupName": group_names.get(g, "")} for g in self.groups],
            "PrivateIpAddresses": [
                {
                    "Primary": True,
                    "PrivateIpAddress": self.address,
                    "PrivateDnsName": self.private_dns_name(region),
                }
            ],
            "TagSet": [] if self.is_load_balancer else [{"Key": "aws:ecs:taskArn", "Value": self.task_arn}],
        }
