"""Errors a caller can fix; the serving layer turns them into 4xx responses."""

from __future__ import annotations

from collections.abc import Sequence


class InvalidOption(ValueError):
    """A request option (or an API argument) has a value the engine cannot use.

    ``option`` names what was wrong, ``valid`` says what would have been accepted
    (a list of values, or a one-item list describing a range).
    """

    def __init__(self, option: str, message: str, valid: Sequence[object] = ()) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message
        self.valid = list(valid)


class ModelLoadError(ValueError):
    """A model cannot be served as configured (its source, weights, class names or
    preprocessing); the message names what to change. Raised at load, never per request."""
