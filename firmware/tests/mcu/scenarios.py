"""The companion's behaviour, checked on a simulated clock; runs under MicroPython and CPython.

`python scenarios.py [STATE_DIR]` (or the same under MicroPython, see mpy.mjs) runs every
scenario and prints one line each, `ok NAME` or `FAIL NAME: why`; test_companion.py runs it under
both interpreters and asserts every line. Pins, UART, ADC and WDT are the stand-in `machine`
module over the in-memory host.py. Timings come from config.py (the shipped defaults).
"""

import sys

import companion_protocol as wire
import config
import host
import main
from companion import FEEDBACK_MS, LONG_PRESS_MS, LOOP_MS

PIN = config.PINS
STATE_DIR = sys.argv[1] if len(sys.argv) > 1 else "."


class Bench:
    """A companion on the in-memory host, its clock in ms, and a decoder for what it sends."""

    def __init__(self, name: str) -> None:
        host.reset()
        self.path = STATE_DIR + "/" + name + ".json"
        try:
            import os

            os.remove(self.path)
        except OSError:
            pass
        self.now = 0
        self.companion = self.restart()
        self.agent_seq = 0

    def restart(self) -> object:
        main.STATE_FILE = self.path
        self.companion = main.build(self.now)
        return self.companion

    def run(self, ms: int) -> None:
        """Step the companion every LOOP_MS for `ms`."""
        end = self.now + ms
        while self.now < end:
            self.companion.step(self.now)
            self.now += LOOP_MS

    def send(self, name: str, values: tuple = ()) -> int:
        self.agent_seq = (self.agent_seq + 1) & 0xFF
        host.rx.extend(wire.encode(name, self.agent_seq, values))
        return self.agent_seq

    def hello(self) -> None:
        self.send("HELLO", (wire.VERSION, config.HEARTBEAT_TIMEOUT, config.MAX_RESETS))
        self.run(LOOP_MS)

    def received(self) -> list:
        """[(name, fields, seq)] the companion sent since the last call."""
        frames = wire.Decoder().feed(bytes(host.tx))
        host.tx[:] = b""
        return [wire.decode(code, payload) + (seq,) for code, seq, payload in frames]

    def power_changes(self) -> list:
        return [level for pin, level in host.history if pin == PIN["power"]]

    def led(self, name: str, ms: int) -> list:
        """The LED's levels sampled every 100 ms for `ms`."""
        levels = []
        for _ in range(ms // 100):
            self.run(100)
            levels.append(host.levels.get(PIN[name], 0))
        return levels


def check(condition: bool, why: object) -> None:
    if not condition:
        raise AssertionError(why)


def handshake() -> None:
    bench = Bench("handshake")
    seq = bench.send("HELLO", (wire.VERSION, 30, 3))
    bench.run(LOOP_MS)
    name, fields, answered = bench.received()[0]
    check(name == "HELLO_REPLY" and answered == seq, (name, answered))
    check(fields["version"] == wire.VERSION, fields)
    check(fields["heartbeat_timeout"] == config.HEARTBEAT_TIMEOUT, fields)
    check(fields["boot_grace"] == config.BOOT_GRACE and fields["max_resets"] == config.MAX_RESETS, fields)


def version_mismatch_refuses_commands() -> None:
    bench = Bench("mismatch")
    bench.send("HELLO", (wire.VERSION + 1, 30, 3))
    bench.send("LEDS", (wire.LINK_UP, 0, 0, 0))
    bench.run(LOOP_MS)
    got = [(name, fields.get("code")) for name, fields, _ in bench.received()]
    check(got == [("HELLO_REPLY", None), ("ERROR", wire.ERROR_VERSION), ("ERROR", wire.ERROR_VERSION)], got)
    bench.send("HEARTBEAT")  # the watchdog still works across versions
    bench.run(LOOP_MS)
    check(bench.received()[0][0] == "TELEMETRY", "no telemetry")
    check(bench.companion.watchdog.alive, "heartbeat not counted")


def heartbeat_answers_telemetry() -> None:
    bench = Bench("telemetry")
    host.adc[config.ADC_SUPPLY] = 33000  # 1.66 V at the divider: 4.985 V supply
    host.adc[config.ADC_TEMPERATURE] = 14000  # 0.705 V: 27.6 degC
    bench.hello()
    bench.received()
    seq = bench.send("HEARTBEAT")
    bench.run(LOOP_MS)
    name, fields, answered = bench.received()[0]
    check(name == "TELEMETRY" and answered == seq, (name, answered))
    check(fields["supply_mv"] == 4985, fields)
    check(fields["temperature_dc"] == 276, fields)
    check(fields["resets"] == 0 and fields["safe"] == 0, fields)


def no_heartbeat_after_boot_power_cycles_the_board() -> None:
    bench = Bench("boot")
    bench.run(config.BOOT_GRACE * 1000 - 100)
    check(bench.power_changes() == [1], bench.power_changes())  # powered at start, no cycle yet
    bench.run(200)
    check(bench.power_changes() == [1, 0], bench.power_changes())
    bench.run(config.POWER_OFF_MS)
    check(bench.power_changes() == [1, 0, 1], bench.power_changes())
    w = bench.companion.watchdog
    check((w.resets_in_row, w.resets, w.reason) == (1, 1, wire.REASON_BOOT), (w.resets_in_row, w.reason))


def silent_agent_gets_the_board_reset_after_the_timeout() -> None:
    bench = Bench("silent")
    bench.send("HEARTBEAT")
    bench.run(config.HEARTBEAT_TIMEOUT * 1000 - 100)
    check(bench.power_changes() == [1], bench.power_changes())
    bench.run(200)
    check(bench.power_changes() == [1, 0], bench.power_changes())
    check(bench.companion.watchdog.reason == wire.REASON_HEARTBEAT, bench.companion.watchdog.reason)


def heartbeats_keep_the_board_powered() -> None:
    bench = Bench("heartbeats")
    for _ in range(10):
        bench.send("HEARTBEAT")
        bench.run(config.HEARTBEAT_TIMEOUT * 1000 // 2)
    check(bench.power_changes() == [1], bench.power_changes())


def reset_limit_leads_to_the_safe_state() -> None:
    bench = Bench("safe")
    grace = config.BOOT_GRACE * 1000 + config.POWER_OFF_MS
    bench.run(grace * (config.MAX_RESETS + 2))
    cycles = bench.power_changes().count(0)
    check(cycles == config.MAX_RESETS, bench.power_changes())
    check(bench.power_changes()[-1] == 1, "the board must stay powered in the safe state")
    check(bench.companion.watchdog.safe, "not safe")
    red = bench.led("red", 6000)
    pulses = sum(1 for a, b in zip(red, red[1:]) if (a, b) == (0, 1))
    check(pulses in (4, 5), ("fault code 2 blinks twice per 2.4 s", red))
    bench.send("HEARTBEAT")  # the agent came back after all
    bench.run(LOOP_MS)
    w = bench.companion.watchdog
    check(not w.safe and w.resets_in_row == 0 and w.resets == config.MAX_RESETS, (w.safe, w.resets))


def counters_survive_a_companion_restart() -> None:
    bench = Bench("restart")
    bench.run(config.BOOT_GRACE * 1000 + 100)
    bench.restart()
    w = bench.companion.watchdog
    check((w.resets_in_row, w.resets, w.reason) == (1, 1, wire.REASON_BOOT), (w.resets_in_row, w.resets))


def leds_follow_the_agent() -> None:
    bench = Bench("leds")
    check(max(bench.led("amber", 2000)) == 1 and min(bench.led("amber", 2000)) == 0, "no waiting blink")
    bench.hello()
    bench.send("HEARTBEAT")
    bench.send("LEDS", (wire.LINK_UP, 0, 0, 0))
    check(set(bench.led("green", 2000)) == {1} and set(bench.led("amber", 2000)) == {0}, "cloud up")
    bench.send("HEARTBEAT")
    bench.send("LEDS", (wire.LINK_LOCAL, 1, 0, 0))
    check(set(bench.led("amber", 2000)) == {1} and set(bench.led("green", 2000)) == {0}, "local")
    check(set(bench.led("blue", 2000)) == {0, 1}, "enrolment blink")
    bench.send("HEARTBEAT")
    bench.send("LEDS", (wire.LINK_UP, 0, 0, wire.FAULT_AGENT))
    check(set(bench.led("red", 3000)) == {0, 1}, "fault code")
    check(set(bench.led("blue", 1000)) == {0}, "enrolment over")


def short_press_is_debounced() -> None:
    bench = Bench("short")
    bench.hello()
    bench.received()
    for level in (0, 1, 0, 1, 0):  # contact bounce, 10 ms each
        host.levels[PIN["button"]] = level
        bench.run(LOOP_MS)
    bench.run(300)
    host.levels[PIN["button"]] = 1
    bench.run(100)
    host.levels[PIN["button"]] = 0  # a 20 ms glitch is no press
    bench.run(20)
    host.levels[PIN["button"]] = 1
    bench.run(200)
    got = [(name, fields) for name, fields, _ in bench.received()]
    check(got == [("BUTTON", {"event": wire.BUTTON_SHORT})], got)


def long_press_asks_for_a_factory_reset() -> None:
    bench = Bench("long")
    bench.hello()
    bench.received()
    host.levels[PIN["button"]] = 0
    bench.run(FEEDBACK_MS + 200)
    check(set(bench.led("red", 1000)) == {0, 1}, "no feedback blink while held")
    bench.run(LONG_PRESS_MS - FEEDBACK_MS)
    check(set(bench.led("red", 1000)) == {1}, "red not steady at 10 s")
    bench.run(5000)
    host.levels[PIN["button"]] = 1
    bench.run(200)
    got = [fields["event"] for name, fields, _ in bench.received() if name == "BUTTON"]
    check(got == [wire.BUTTON_FACTORY_RESET], got)
    bench.send("RESET_ANSWER", (1,))
    check(set(bench.led("red", 500)) == {1}, "reset not shown")


def a_press_let_go_after_feedback_does_nothing() -> None:
    bench = Bench("cancel")
    bench.hello()
    bench.received()
    host.levels[PIN["button"]] = 0
    bench.run(5000)
    host.levels[PIN["button"]] = 1
    bench.run(200)
    got = bench.received()
    check(got == [], got)


def corrupt_and_unknown_frames_are_counted_and_answered() -> None:
    bench = Bench("corrupt")
    bench.hello()
    bench.received()
    good = wire.encode("HEARTBEAT", 7)
    bad_crc = good[:-1] + bytes([good[-1] ^ 0xFF])
    host.rx.extend(b"\x00\xffnoise" + bad_crc)
    host.rx.extend(wire.frame(0x55, 8, b""))  # unknown type
    host.rx.extend(wire.frame(wire.MESSAGES["LEDS"][0], 9, b"\x01"))  # payload too short
    host.rx.extend(b"VX\x02\x0a\xff")  # impossible length
    host.rx.extend(wire.encode("HEARTBEAT", 11))
    bench.run(LOOP_MS * 3)
    got = [(name, fields.get("code"), seq) for name, fields, seq in bench.received()]
    corrupt = [g for g in got if g[1] == wire.ERROR_CORRUPT]
    check(len(corrupt) == 3, got)  # the noise, the bad CRC, the length
    check(("ERROR", wire.ERROR_UNKNOWN, 8) in got and ("ERROR", wire.ERROR_PAYLOAD, 9) in got, got)
    check(got[-1] == ("TELEMETRY", None, 11), got)
    telemetry = bench.companion.telemetry()
    check(telemetry[5:7] == (3, 2), telemetry)  # corrupt, unknown (a bad payload counts as unknown)


def own_watchdog_is_fed_every_step() -> None:
    bench = Bench("wdt")
    bench.run(LOOP_MS * 50)
    check(host.wdt["timeout"] == config.WDT_MS and host.wdt["feeds"] == 50, host.wdt)


SCENARIOS = [
    handshake,
    version_mismatch_refuses_commands,
    heartbeat_answers_telemetry,
    no_heartbeat_after_boot_power_cycles_the_board,
    silent_agent_gets_the_board_reset_after_the_timeout,
    heartbeats_keep_the_board_powered,
    reset_limit_leads_to_the_safe_state,
    counters_survive_a_companion_restart,
    leds_follow_the_agent,
    short_press_is_debounced,
    long_press_asks_for_a_factory_reset,
    a_press_let_go_after_feedback_does_nothing,
    corrupt_and_unknown_frames_are_counted_and_answered,
    own_watchdog_is_fed_every_step,
]

for scenario in SCENARIOS:
    try:
        scenario()
        print("ok " + scenario.__name__)
    except Exception as exc:
        print(f"FAIL {scenario.__name__}: {type(exc).__name__} {exc}")
