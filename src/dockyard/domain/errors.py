"""Errors that reach clients, each carrying its AWS error code and HTTP status.

The api layer maps them to ``{"__type": code, "message": message}`` in one place, by class::

    DockyardError                                   (ServerException, 500)
     ├── ProtocolError                              errors of the AWS JSON protocol itself
     │    ├── MissingAuthenticationToken            403
     │    ├── UnrecognizedClient                    403
     │    ├── InvalidSignature                      403
     │    ├── IncompleteSignature                   400
     │    ├── SerializationError                    400
     │    ├── UnknownOperation                      400
     │    └── AccessDenied                          400
     └── EcsError                                   errors named by the ECS service model
          ├── ClientError                           ClientException
          ├── InvalidParameter                      InvalidParameterException
          ├── ClusterNotFound                       ClusterNotFoundException
          ├── ClusterContainsServices / Tasks / ContainerInstances
          ├── ServiceNotFound, ServiceNotActive
          ├── ResourceNotFound, ResourceInUse, LimitExceeded, UnsupportedFeature
          ├── TargetNotFound, AttributeLimitExceeded  (PutAttributes / DeleteAttributes)
          └── ServerError                           ServerException (500)
"""

from __future__ import annotations

from typing import ClassVar


class DockyardError(Exception):
    code: ClassVar[str] = "ServerException"
    status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProtocolError(DockyardError):
    status = 400


class MissingAuthenticationToken(ProtocolError):
    code = "MissingAuthenticationTokenException"
    status = 403


class UnrecognizedClient(ProtocolError):
    code = "UnrecognizedClientException"
    status = 403


class InvalidSignature(ProtocolError):
    code = "InvalidSignatureException"
    status = 403


class SerializationError(ProtocolError):
    code = "SerializationException"


class UnknownOperation(ProtocolError):
    code = "UnknownOperationException"


class AccessDenied(ProtocolError):
    code = "AccessDeniedException"


class EcsError(DockyardError):
    status = 400


class ClientError(EcsError):
    code = "ClientException"


class InvalidParameter(EcsError):
    code = "InvalidParameterException"


class ClusterNotFound(EcsError):
    code = "ClusterNotFoundException"


class ClusterContainsServices(EcsError):
    code = "ClusterContainsServicesException"


class ClusterContainsTasks(EcsError):
    code = "ClusterContainsTasksException"


class ClusterContainsContainerInstances(EcsError):
    code = "ClusterContainsContainerInstancesException"


class ServiceNotFound(EcsError):
    code = "ServiceNotFoundException"


class ServiceNotActive(EcsError):
    code = "ServiceNotActiveException"


class ResourceNotFound(EcsError):
    code = "ResourceNotFoundException"


class ResourceInUse(EcsError):
    code = "ResourceInUseException"


class LimitExceeded(EcsError):
    code = "LimitExceededException"


class TargetNotFound(EcsError):
    code = "TargetNotFoundException"


class AttributeLimitExceeded(EcsError):
    code = "AttributeLimitExceededException"


class UnsupportedFeature(EcsError):
    code = "UnsupportedFeatureException"


class ServerError(EcsError):
    code = "ServerException"
    status = 500


class IncompleteSignature(ProtocolError):
    """A malformed SigV4 ``Authorization`` header or presigned query (AWS answers 400 for it)."""

    code = "IncompleteSignatureException"
