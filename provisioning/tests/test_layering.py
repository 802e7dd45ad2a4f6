"""Layering (issue 14, part 4): the store is below phoneprov; importing it must load nothing of
phoneprov, and phoneprov's device records are the store's own."""

import subprocess
import sys

from phoneprov import book
from vaxelbox.store import devices


def test_the_store_imports_nothing_of_phoneprov():
    probe = "import sys, vaxelbox.store; print(sorted(m for m in sys.modules if m.startswith('phoneprov')))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_phoneprov_uses_the_stores_records():
    assert (book.Sighting, book.Enrolment, book.Enrolled) == (
        devices.Sighting,
        devices.Enrolment,
        devices.Enrolled,
    )
