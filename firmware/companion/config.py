"""The companion's settings: the defaults for a Raspberry Pi Pico (RP2040) wired as in README.

`make companion BOARD=boards/<board>.yaml` writes this file from the board file's `companion`
section into the build, so the watchdog's timings come from the board file; this copy is what
the tests and a board without that section use. Times in seconds unless the name says ms.
"""

HEARTBEAT_TIMEOUT = 30  # no heartbeat for this long: the board is power-cycled
BOOT_GRACE = 180  # after power-on or a reset, the board has this long to send its first heartbeat
MAX_RESETS = 3  # resets in a row without the agent coming back; then the safe state
POWER_OFF_MS = 2000  # how long the board's power stays off in a power cycle
WDT_MS = 5000  # the companion's own hardware watchdog (RP2040: at most 8388 ms)
UART = (0, 115200, 0, 1)  # UART id, baud, TX pin, RX pin
PINS = {"power": 2, "green": 3, "amber": 4, "blue": 5, "red": 6, "button": 7}
POWER_ON = 1  # the level of the power pin that powers the board
LED_ON = 1  # the level that lights an LED
BUTTON_PRESSED = 0  # the button pulls its pin to ground (internal pull-up)
ADC_SUPPLY = 29  # VSYS through the Pico's 3:1 divider
SUPPLY_SCALE = 3
ADC_TEMPERATURE = 4  # the RP2040's own sensor
