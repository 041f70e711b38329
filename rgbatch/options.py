"""Checks of the library's parameters, worded in the library's terms.

Each parameter is checked once, where it enters (a `Codec`, a `Target`, `CompressOptions`),
by one of these functions. An `OptionError` names the parameter as the Python API spells
it ("tile_size", "target.msssim"); a front end maps that name to its own (the CLI: its flags).
"""

from __future__ import annotations


class OptionError(ValueError):
    """A parameter with a value it cannot take: `option` is its name, `reason` what is wrong."""

    def __init__(self, option: str, reason: str):
        super().__init__(f"{option} {reason}")
        self.option, self.reason = option, reason


def check_range(option: str, value, low, high=None, what: str = ""):
    """low <= value (<= high): or an OptionError that says the range."""
    if value < low or (high is not None and value > high):
        span = f"{low}..{high}" if high is not None else f"at least {low}"
        raise OptionError(option, f"must be {span}{what}, not {value}")


def check_positive(option: str, value):
    if value is not None and not value > 0:
        raise OptionError(option, f"must be positive, not {value}")


def check_choice(option: str, value, choices):
    if value not in choices:
        raise OptionError(option, f"must be one of {', '.join(choices)}, not {value!r}")
