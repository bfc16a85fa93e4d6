"""The error every serving module raises for a request it cannot answer."""

from __future__ import annotations

MAX_MESSAGE_CHARS = 500


class ServingError(Exception):
    """A request the server cannot answer, with the HTTP status and what would be valid.

    Messages quote the offending value; a longer message is cut to ``MAX_MESSAGE_CHARS`` so that
    a multi-megabyte option cannot come back as a multi-megabyte error (past TorchServe's
    max_response_size, a 4xx would turn into a 5xx)."""

    def __init__(self, status: int, message: str, valid: list | tuple = (), kind: str = "bad_request") -> None:
        if len(message) > MAX_MESSAGE_CHARS:
            message = f"{message[:MAX_MESSAGE_CHARS]}... (cut: {len(message):,} characters)"
        super().__init__(message)
        self.status = status
        self.message = message
        self.valid = [str(v) for v in valid]
        self.kind = kind


def error_body(error: ServingError) -> dict:
    return {"error": {"code": error.status, "message": error.message, "valid": error.valid}}
