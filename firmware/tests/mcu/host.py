"""The in-memory world around the companion for the `machine` stand-in (tests only).

A test drives it: bytes the agent "sends" go into `rx`, what the companion writes lands in `tx`,
`levels` holds input pins' levels and the outputs' last values, `adc` raw 16-bit readings,
`history` every output change as (pin, level). Runs under MicroPython and CPython.
"""

import binascii

rx = bytearray()
tx = bytearray()
levels = {}
outputs = set()
history = []
adc = {}
wdt = {"timeout": None, "feeds": 0}


def reset() -> None:
    """A fresh world: nothing received, nothing sent, every pin floating."""
    rx[:] = b""
    tx[:] = b""
    levels.clear()
    outputs.clear()
    history.clear()
    adc.clear()
    wdt["timeout"], wdt["feeds"] = None, 0


def pin_out(number: int) -> None:
    outputs.add(number)


def pin_get(number: int) -> int:
    return levels.get(number, 1)  # an input with its pull-up


def pin_set(number: int, level: int) -> None:
    if levels.get(number) != level:
        history.append((number, level))
    levels[number] = level


def uart_read() -> bytes:
    data = bytes(rx)
    rx[:] = b""
    return data


def uart_write(hex_data: str) -> None:
    tx.extend(binascii.unhexlify(hex_data))


def adc_read(channel: int) -> int:
    return adc.get(channel, 0)


def wdt_start(timeout: int) -> None:
    wdt["timeout"] = timeout


def wdt_feed() -> None:
    wdt["feeds"] += 1
