"""Argument checks shared by the API and the command lines, so each says the same thing."""

from __future__ import annotations

import argparse
from numbers import Integral


def positive_int(value, name: str) -> int:
    """value as an int when it is a whole number >= 1 (a bool is not), else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def positive_int_arg(text: str) -> int:
    """argparse `type=` for options that take a positive integer: a one-line usage error otherwise."""
    try:
        return positive_int(int(text), "the value")
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}") from None
