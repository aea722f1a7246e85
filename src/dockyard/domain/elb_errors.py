"""Errors of the ELBv2 API, each carrying the wire code botocore's ``elbv2`` model gives it.

The query protocol layer (``api/query_protocol.py``) turns them into
``<ErrorResponse><Error><Type>Sender</Type><Code>..</Code><Message>..`` by class, in one place::

    DockyardError
     └── ElbError                                  400, Type Sender
          ├── ValidationError                      input the model or ELBv2's rules reject
          ├── LoadBalancerNotFound, TargetGroupNotFound, ListenerNotFound, RuleNotFound
          ├── DuplicateLoadBalancerName, DuplicateTargetGroupName, DuplicateListener, DuplicateTagKeys
          ├── PriorityInUse, ResourceInUse, OperationNotPermitted
          ├── InvalidTarget, InvalidConfigurationRequest, InvalidLoadBalancerAction
          ├── IncompatibleProtocols, UnsupportedProtocol, TargetGroupAssociationLimit
          └── TooManyTags, TooManyTargets, TooManyLoadBalancers, TooManyRules, TooManyListeners

``InvalidParameter`` raised by the shared model walker (``api/validation.py``) is reported as
``ValidationError`` too; the mapping lives in the protocol layer.
"""

from __future__ import annotations

from typing import ClassVar

from dockyard.domain.errors import DockyardError


class ElbError(DockyardError):
    code: ClassVar[str] = "ValidationError"
    status: ClassVar[int] = 400


class ValidationError(ElbError):
    code = "ValidationError"


class LoadBalancerNotFound(ElbError):
    code = "LoadBalancerNotFound"


class TargetGroupNotFound(ElbError):
    code = "TargetGroupNotFound"


class ListenerNotFound(ElbError):
    code = "ListenerNotFound"


class RuleNotFound(ElbError):
    code = "RuleNotFound"


class DuplicateLoadBalancerName(ElbError):
    code = "DuplicateLoadBalancerName"


class DuplicateTargetGroupName(ElbError):
    code = "DuplicateTargetGroupName"


class DuplicateListener(ElbError):
    code = "DuplicateListener"


class DuplicateTagKeys(ElbError):
    code = "DuplicateTagKeys"


class PriorityInUse(ElbError):
    code = "PriorityInUse"


class ResourceInUse(ElbError):
    code = "ResourceInUse"


class OperationNotPermitted(ElbError):
    code = "OperationNotPermitted"


class InvalidTarget(ElbError):
    code = "InvalidTarget"


class InvalidConfigurationRequest(ElbError):
    code = "InvalidConfigurationRequest"


class InvalidLoadBalancerAction(ElbError):
    code = "InvalidLoadBalancerAction"


class IncompatibleProtocols(ElbError):
    code = "IncompatibleProtocols"


class UnsupportedProtocol(ElbError):
    code = "UnsupportedProtocol"


class TargetGroupAssociationLimit(ElbError):
    code = "TargetGroupAssociationLimit"


class TooManyTags(ElbError):
    code = "TooManyTags"


class TooManyTargets(ElbError):
    code = "TooManyTargets"


class TooManyLoadBalancers(ElbError):
    code = "TooManyLoadBalancers"


class TooManyRules(ElbError):
    code = "TooManyRules"


class TooManyListeners(ElbError):
    code = "TooManyListeners"


class SubnetNotFound(ElbError):
    code = "SubnetNotFound"


class InvalidSubnet(ElbError):
    code = "InvalidSubnet"


class InvalidSecurityGroup(ElbError):
    code = "InvalidSecurityGroup"
