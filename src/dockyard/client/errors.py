"""The client's errors (``EcsClient`` and ``AgentSession`` raise them)."""

from __future__ import annotations


class ClientError(Exception):
    """Base of the client's errors."""


class TransportError(ClientError):
    """The server could not be reached or did not answer with JSON."""


class ApiError(ClientError):
    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
