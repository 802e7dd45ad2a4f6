"""The companion microcontroller's logic: watchdog for the board, LEDs, button, telemetry, link.

Sans-I/O in time: `Companion.step(now_ms)` does one round (read the UART, answer frames, debounce
the button, watch the heartbeat, drive the LEDs) with the time passed in, so tests run it on a
simulated clock under MicroPython and CPython alike; `main.py` calls it from the MCU's loop.
The hardware comes in as objects with the `machine` module's shapes (Pin, UART, ADC, WDT).

Watchdog: a board that sent no heartbeat for HEARTBEAT_TIMEOUT s (BOOT_GRACE s after power-on or
a reset) is power-cycled through the power pin, and the reason is kept in `state.json`; after
MAX_RESETS resets without a heartbeat in between the companion stops resetting (the safe state:
the board stays powered for support) and blinks fault code 2. A heartbeat ends it all.
"""

import json

import companion_protocol as wire

LOOP_MS = 10  # main.py's step interval
DEBOUNCE_MS = 40  # the button's level must hold this long to count
LONG_PRESS_MS = 10000  # factory reset request
FEEDBACK_MS = 2000  # from here on the red LED tells the person that holding resets
LEDS = ("green", "amber", "blue", "red")


def blink(now: int, period: int, on: int) -> int:
    """1 during the first `on` ms of each `period` ms, else 0."""
    return 1 if now % period < on else 0


def blink_code(now: int, count: int) -> int:
    """`count` blinks of 200 ms (400 ms apart), then 1.6 s dark, repeating."""
    period = count * 400 + 1600
    phase = now % period
    return 1 if phase < count * 400 and phase % 400 < 200 else 0


class Button:
    """A debounced push button: `poll(level, now)` returns BUTTON_SHORT on release of a short
    press, BUTTON_FACTORY_RESET once when held LONG_PRESS_MS, else None."""

    def __init__(self, pressed_level: int) -> None:
        self.pressed_level = pressed_level
        self.pressed = False
        self.since = 0  # when the debounced state last changed, ms
        self._raw = None
        self._raw_since = 0
        self._long_sent = False

    def poll(self, level: int, now: int) -> int | None:
        raw = level == self.pressed_level
        if raw != self._raw:
            self._raw, self._raw_since = raw, now
        if raw != self.pressed and now - self._raw_since >= DEBOUNCE_MS:
            held = now - self.since
            self.pressed, self.since = raw, now
            if not raw and not self._long_sent and held < FEEDBACK_MS:
                return wire.BUTTON_SHORT
            self._long_sent = False if raw else self._long_sent
        if self.pressed and not self._long_sent and self.held(now) >= LONG_PRESS_MS:
            self._long_sent = True
            return wire.BUTTON_FACTORY_RESET
        return None

    def held(self, now: int) -> int:
        """How long the button has been held down, ms (0 when it is up)."""
        return now - self.since if self.pressed else 0


class Watchdog:
    """The board's watchdog: heartbeats in, power cycles out. Counters persist in `path`."""

    def __init__(self, config: object, path: str, now: int) -> None:
        self.timeout = config.HEARTBEAT_TIMEOUT * 1000
        self.grace = config.BOOT_GRACE * 1000
        self.max_resets = config.MAX_RESETS
        self.path = path
        self.resets_in_row, self.resets, self.reason = self._load()
        self.deadline = now + self.grace
        self.alive = False  # a heartbeat came since power-on or the last reset
        self.safe = False

    def heartbeat(self, now: int) -> None:
        self.deadline = now + self.timeout
        self.alive, self.safe = True, False
        if self.resets_in_row:
            self.resets_in_row = 0
            self._save()

    def due(self, now: int) -> bool:
        """True when the board must be power-cycled now (the caller does it, then `reset`)."""
        if self.safe or now < self.deadline:
            return False
        if self.resets_in_row >= self.max_resets:
            self.safe = True
            return False
        return True

    def reset(self, now: int) -> None:
        self.reason = wire.REASON_HEARTBEAT if self.alive else wire.REASON_BOOT
        self.resets_in_row += 1
        self.resets += 1
        self.alive = False
        self.deadline = now + self.grace
        self._save()

    def _load(self) -> tuple:
        try:
            with open(self.path) as file:
                saved = json.load(file)
            return saved["resets_in_row"], saved["resets"], saved["reason"]
        except (OSError, ValueError, KeyError):
            return 0, 0, wire.REASON_NONE

    def _save(self) -> None:
        saved = {"resets_in_row": self.resets_in_row, "resets": self.resets, "reason": self.reason}
        with open(self.path, "w") as file:
            json.dump(saved, file)


class Companion:
    """One companion: `hw` has uart, pins (name -> Pin), adc_supply, adc_temperature, wdt."""

    def __init__(self, hw: object, config: object, state_path: str, now: int) -> None:
        self.hw = hw
        self.config = config
        self.decoder = wire.Decoder()
        self.watchdog = Watchdog(config, state_path, now)
        self.button = Button(config.BUTTON_PRESSED)
        self.shown = (wire.LINK_UNKNOWN, 0, 0, 0)  # the agent's last LEDS values
        self.agreed = False  # a HELLO of our VERSION came
        self.unknown = 0
        self.seq = 0
        self.power_back_at = None  # while the board's power is cut: when it comes back, ms
        self.reset_confirmed = False
        self.lit = {}
        self._power(True)

    @property
    def corrupt(self) -> int:
        return self.decoder.corrupt

    def step(self, now: int) -> None:
        """One round of the loop at `now` (ms, monotonic)."""
        self.hw.wdt.feed()
        data = self.hw.uart.read()
        if data:
            for code, seq, payload in self.decoder.feed(data):
                self._receive(code, seq, payload, now)
        event = self.button.poll(self.hw.pins["button"].value(), now)
        if event is not None:
            self.send("BUTTON", (event,))
        self._watch(now)
        self._show(now)

    def send(self, name: str, values: tuple = (), seq: int | None = None) -> None:
        if seq is None:
            self.seq = (self.seq + 1) & 0xFF
            seq = self.seq
        self.hw.uart.write(wire.encode(name, seq, values))

    def telemetry(self) -> tuple:
        """TELEMETRY's values (see companion_protocol.MESSAGES)."""
        w = self.watchdog
        return (
            self.supply_mv(),
            self.temperature_dc(),
            w.resets_in_row,
            w.resets,
            w.reason,
            min(self.corrupt, 0xFFFF),
            min(self.unknown, 0xFFFF),
            1 if w.safe else 0,
        )

    def supply_mv(self) -> int:
        raw = self.hw.adc_supply.read_u16()
        return raw * 3300 * self.config.SUPPLY_SCALE // 65535

    def temperature_dc(self) -> int:
        """The RP2040's sensor: 27 degC at 0.706 V, -1.721 mV/degC; in 0.1 degC."""
        volts = self.hw.adc_temperature.read_u16() * 3.3 / 65535
        return round((27 - (volts - 0.706) / 0.001721) * 10)

    def _receive(self, code: int | None, seq: int, payload: bytes, now: int) -> None:
        if code is None:
            self.send("ERROR", (wire.ERROR_CORRUPT, seq), seq)
            return
        try:
            name, fields = wire.decode(code, payload)
        except KeyError:
            self.unknown += 1
            self.send("ERROR", (wire.ERROR_UNKNOWN, seq), seq)
            return
        except ValueError:
            self.unknown += 1
            self.send("ERROR", (wire.ERROR_PAYLOAD, seq), seq)
            return
        self._handle(name, fields, seq, now)

    def _handle(self, name: str, fields: dict, seq: int, now: int) -> None:
        if name == "HEARTBEAT":
            self.watchdog.heartbeat(now)
            self.send("TELEMETRY", self.telemetry(), seq)
        elif name == "HELLO":
            self.agreed = fields["version"] == wire.VERSION
            self.reset_confirmed = False
            w, c = self.watchdog, self.config
            settings = (wire.VERSION, c.HEARTBEAT_TIMEOUT, c.BOOT_GRACE, c.MAX_RESETS)
            self.send("HELLO_REPLY", settings + (w.resets_in_row, w.resets, w.reason), seq)
            if not self.agreed:
                self.send("ERROR", (wire.ERROR_VERSION, seq), seq)
        elif not self.agreed or wire.MESSAGES[name][3] == "companion":
            self.unknown += 1
            code = wire.ERROR_VERSION if not self.agreed else wire.ERROR_UNKNOWN
            self.send("ERROR", (code, seq), seq)
        elif name == "LEDS":
            self.shown = (fields["link"], fields["enrolment"], fields["update"], fields["fault"])
        elif name == "RESET_ANSWER":
            self.reset_confirmed = fields["confirmed"] == 1

    def _watch(self, now: int) -> None:
        if self.power_back_at is not None and now >= self.power_back_at:
            self.power_back_at = None
            self._power(True)
        if self.power_back_at is None and self.watchdog.due(now):
            self.watchdog.reset(now)
            self.agreed = False
            self.shown = (wire.LINK_UNKNOWN, 0, 0, 0)
            self._power(False)
            self.power_back_at = now + self.config.POWER_OFF_MS

    def _power(self, on: bool) -> None:
        level = self.config.POWER_ON if on else 1 - self.config.POWER_ON
        self.hw.pins["power"].value(level)

    def _show(self, now: int) -> None:
        for name, on in zip(LEDS, self.pattern(now)):
            if self.lit.get(name) != on:
                self.lit[name] = on
                self.hw.pins[name].value(self.config.LED_ON if on else 1 - self.config.LED_ON)

    def pattern(self, now: int) -> tuple:
        """(green, amber, blue, red) at `now`, 0 or 1 each: the LED table in README."""
        link, enrolment, update, fault = self.shown
        w = self.watchdog
        if not w.alive and not w.safe:  # waiting for the agent: amber slow blink
            green, amber, blue = 0, blink(now, 2000, 1000), 0
        elif update:
            green = blue = blink(now, 250, 125)
            amber = 0
        else:
            green = 1 if link == wire.LINK_UP else blink(now, 2000, 1000) if link == wire.LINK_DEGRADED else 0
            amber = 1 if link == wire.LINK_LOCAL else 0
            blue = blink(now, 1000, 500) if enrolment else 0
        return (green, amber, blue, self._red(now, fault))

    def _red(self, now: int, fault: int) -> int:
        held = self.button.held(now)
        if self.reset_confirmed or held >= LONG_PRESS_MS:
            return 1
        if held >= FEEDBACK_MS:
            return blink(now, 200, 100)
        if self.watchdog.safe:
            return blink_code(now, wire.FAULT_SAFE_STATE)
        if self.watchdog.alive and now > self.watchdog.deadline - self.watchdog.timeout // 2:
            return blink_code(now, wire.FAULT_AGENT_SILENT)  # half the timeout without a heartbeat
        return blink_code(now, fault) if fault else 0
