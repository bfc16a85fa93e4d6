"""Resolving a class given by index or by label, with errors that list what is valid."""

from __future__ import annotations

from collections.abc import Sequence

from whyserve.errors import InvalidOption


def resolve_class(value: object, option: str, num_outputs: int, names: Sequence[str] | None) -> int:
    """An output index from an int, a digit string, or a class label (case-insensitive); any
    other value (a float, a bool) is refused."""
    if isinstance(value, bool):
        raise InvalidOption(option, f"{value!r} is not a class index or label", _valid(num_outputs, names))
    if isinstance(value, str):
        digits = value.strip().lstrip("-")
        if digits.isascii() and digits.isdigit() and len(digits) <= 18:  # not '²', not 5,000 digits
            value = int(value)
    if isinstance(value, int):
        if 0 <= value < num_outputs:
            return value
        raise InvalidOption(option, f"class index {value} is out of range", _valid(num_outputs, names))
    if isinstance(value, str) and names is not None:
        wanted = value.strip().casefold()
        for index, name in enumerate(names):
            if name.casefold() == wanted:
                return index
        raise InvalidOption(option, f"unknown class label {value!r}", _valid(num_outputs, names))
    raise InvalidOption(option, f"{value!r} is not a class index or label", _valid(num_outputs, names))


def _valid(num_outputs: int, names: Sequence[str] | None) -> list[str]:
    valid = [f"an integer from 0 to {num_outputs - 1}"]
    if names is not None:
        valid.append("a class label such as " + ", ".join(repr(n) for n in names[:3]))
    return valid
