"""The companion's entry point on the microcontroller: MicroPython runs main.py after boot.

`build()` makes the Companion from `machine` and `config`; `run()` steps it forever. The tests'
simulated companion calls `build()` with a stand-in `machine` and steps it from its own loop.
"""

import time

import config
import machine
from companion import LOOP_MS, Companion

STATE_FILE = "state.json"


class Hardware:
    """The pins, UART, ADCs and hardware watchdog that config.py names."""

    def __init__(self) -> None:
        uart_id, baud, tx, rx = config.UART
        self.uart = machine.UART(uart_id, baudrate=baud, tx=machine.Pin(tx), rx=machine.Pin(rx), timeout=0)
        self.pins = {}
        for name, number in config.PINS.items():
            if name == "button":
                self.pins[name] = machine.Pin(number, machine.Pin.IN, machine.Pin.PULL_UP)
            else:
                self.pins[name] = machine.Pin(number, machine.Pin.OUT)
        self.adc_supply = machine.ADC(config.ADC_SUPPLY)
        self.adc_temperature = machine.ADC(config.ADC_TEMPERATURE)
        self.wdt = machine.WDT(timeout=config.WDT_MS)


def build(now: int) -> Companion:
    """The companion on this board's hardware, started at `now` (ms)."""
    return Companion(Hardware(), config, STATE_FILE, now)


def run() -> None:
    """Step the companion every LOOP_MS for ever; the WDT resets the MCU if a step hangs."""
    started = time.ticks_ms()
    elapsed = 0  # ms since start; ticks_ms wraps, this does not
    companion = build(0)
    while True:
        ticks = time.ticks_ms()
        elapsed += time.ticks_diff(ticks, started)
        started = ticks
        companion.step(elapsed)
        time.sleep_ms(LOOP_MS)


if __name__ == "__main__":
    run()
