"""Test knobs: environment variables an end-to-end test sets to shorten one of the product's waits.

Never for an appliance. Each knob is read where its wait is made, refused with ValueError when
it is not a number in range, and logged as a warning when set, so a box that runs with one is
visible in its log.
"""

import logging
import os

log = logging.getLogger("vaxelbox.knobs")


def knob(name: str, default: float, highest: float, what: str) -> float:
    """The environment variable `name` as a number in (0, `highest`], or `default` when unset.
    `what` is the warning's text with `{}` where the value goes ("probe backoff ceiling {} s").
    Raises ValueError for anything else."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number") from None
    if not 0 < value <= highest:
        raise ValueError(f"{name} must be in (0, {highest:g}], not {value:g}")
    log.warning("%s (%s: a test knob)", what.format(f"{value:g}"), name)
    return value
