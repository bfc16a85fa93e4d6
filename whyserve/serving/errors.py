"""The error every serving module raises for a request it cannot answer."""

from __future__ import annotations


class ServingError(Exception):
    """A request the server cannot answer, with the HTTP status and what would be valid."""

    def __init__(self, status: int, message: str, valid: list | tuple = (), kind: str = "bad_request") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.valid = [str(v) for v in valid]
        self.kind = kind


def error_body(error: ServingError) -> dict:
    return {"error": {"code": error.status, "message": error.message, "valid": error.valid}}
