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


def bounded_int(option: str, value: object, high: int) -> int:
    """``value`` (an int or its text; not a bool or a float) as an integer from 1 to ``high``."""
    valid = [f"an integer from 1 to {high}"]
    try:
        if isinstance(value, (bool, float)):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidOption(option, f"{value!r} is not an integer", valid) from None
    if not 1 <= number <= high:
        raise InvalidOption(option, f"{number} is out of range", valid)
    return number


class ModelLoadError(ValueError):
    """A model cannot be served as configured (its source, weights, class names or
    preprocessing); the message names what to change. Raised at load, never per request."""
