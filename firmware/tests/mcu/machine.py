"""A stand-in for MicroPython's `machine` module (Pin, UART, ADC, WDT), for tests only.

No companion board is on the test machine, so the companion's code meets this instead of the
RP2040's peripherals. It keeps nothing itself: every call goes to a `host` module that plays the
world around the microcontroller. Under MicroPython in Node (the WebAssembly port) the host is
JavaScript (bench.mjs registers it: a pty as the UART, files for the button and the LEDs);
elsewhere it is `host.py` beside this file (in-memory, driven by the test). The same file runs
under MicroPython and CPython.
"""

import binascii

import host


class Pin:
    IN, OUT, PULL_UP = 0, 1, 2

    def __init__(self, number: int, mode: int = -1, pull: int = -1) -> None:
        self.number = number
        if mode == Pin.OUT:
            host.pin_out(number)

    def value(self, level: int | None = None) -> int | None:
        """The input's level (0/1), or set the output's to `level`."""
        if level is None:
            return host.pin_get(self.number)
        host.pin_set(self.number, level)
        return None


class UART:
    def __init__(self, number: int, baudrate: int = 115200, tx: object = None, rx: object = None,
                 timeout: int = 0) -> None:  # fmt: skip
        self.number = number

    def read(self) -> bytes | None:
        """What arrived since the last read, or None (as machine.UART with timeout=0)."""
        data = host.uart_read()
        return bytes(data) if data else None

    def write(self, data: bytes) -> int:
        host.uart_write(binascii.hexlify(data).decode())  # a string crosses into JavaScript as it is
        return len(data)


class ADC:
    def __init__(self, channel: int) -> None:
        self.channel = channel

    def read_u16(self) -> int:
        return host.adc_read(self.channel)


class WDT:
    def __init__(self, id: int = 0, timeout: int = 5000) -> None:
        host.wdt_start(timeout)

    def feed(self) -> None:
        host.wdt_feed()
