"""Fixtures shared by every test tree: the demo site as text, and a way to build variants of it."""

import re
from collections.abc import Callable

import pytest
from vaxelbox.site import demo_site_text


@pytest.fixture
def demo_text() -> str:
    return demo_site_text()


def replace_once(text: str, old: str, new: str) -> str:
    """`text` with `old` replaced by `new`, failing loudly if `old` is not there exactly once."""
    count = len(re.findall(re.escape(old), text))
    assert count == 1, f"{old!r} occurs {count} times in the demo site"
    return text.replace(old, new)


@pytest.fixture
def demo_with(demo_text: str) -> Callable[[str, str], str]:
    return lambda old, new: replace_once(demo_text, old, new)
