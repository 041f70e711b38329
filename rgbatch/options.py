"""Checks of the library's parameters, worded in the library's terms.

Each parameter is checked once, where it enters (a `Codec`, a `Target`, `CompressOptions`,
an archive command), by one of these functions. An `OptionError` names the parameter as the
Python API spells it ("tile_size", "target.msssim"); a front end maps that name to its own
(the CLI: its flags) with `worded`. `shown` is how any front end shows a name it did not choose,
`figure` a number that may be missing.
"""

from __future__ import annotations

import numbers


def shown(name) -> str:
    """A file name, a path or a reason naming one, as a line of a terminal or a page can show
    it: every character Python calls unprintable as its escape (`\\n`, `\\x1b`, `\\u202e`, `\\xa0`):
    control characters, invisible format characters (until session 61 a right-to-left override
    in a name reversed what a report showed after it), separators but the space (U+2028 broke a
    line), lone surrogates, private and unassigned code points; everything else as it is."""
    text = str(name)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def figure(value, spec: str) -> str:
    """A number as a table shows it (`format(value, spec)`), "-" for none."""
    return "-" if value is None else format(value, spec)


class OptionError(ValueError):
    """A parameter with a value it cannot take: `option` is its name, `reason` what is wrong.

    A reason that names other parameters writes them `{name}` and lists them in `others`, so
    that a front end can name them its own way too (`worded`)."""

    def __init__(self, option: str, reason: str, others: tuple[str, ...] = ()):
        self.option, self.reason, self.others = option, reason, tuple(others)
        super().__init__(self.worded())

    def worded(self, name=lambda option: option) -> str:
        """The message with every parameter called `name(parameter)`."""
        reason = self.reason
        for other in self.others:
            reason = reason.replace("{" + other + "}", name(other))
        return f"{name(self.option)} {reason}"


def check_number(option: str, value):
    """A number (None passes): not text, not a bool (True is 1 to Python, never to a user)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise OptionError(option, f"must be a number, not {value!r}")


def check_range(option: str, value, low, high=None, what: str = ""):
    """low <= value (<= high): or an OptionError that says the range (NaN is in none), or
    that it is no number."""
    check_number(option, value)
    if value is not None and not (low <= value and (high is None or value <= high)):
        span = f"{low}..{high}" if high is not None else f"at least {low}"
        raise OptionError(option, f"must be {span}{what}, not {value}")


def check_count(option: str, value, low, high=None, what: str = ""):
    """`check_range` for a whole number (a depth, a count, pixels): 2.5, 2.0 or True refused
    here, not as a TypeError deep inside (until session 58)."""
    check_number(option, value)
    if value is not None and not isinstance(value, numbers.Integral):
        raise OptionError(option, f"must be a whole number, not {value!r}")
    check_range(option, value, low, high, what)


def check_positive(option: str, value):
    check_number(option, value)
    if value is not None and not value > 0:
        raise OptionError(option, f"must be positive, not {value}")


def check_choice(option: str, value, choices):
    if value not in choices:
        raise OptionError(option, f"must be one of {', '.join(choices)}, not {value!r}")


def check_one_of(option: str, other: str, value, other_value):
    """Two parameters that exclude each other: at most one given."""
    if value is not None and other_value is not None:
        raise OptionError(option, "and {" + other + "} exclude each other: give one, not both", (other,))
