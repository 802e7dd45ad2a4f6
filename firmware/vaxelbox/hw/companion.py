"""The agent's side of the companion microcontroller: heartbeats, LEDs, button, telemetry.

`CompanionLink` is the protocol (vaxelbox.hw.companion_protocol) without I/O: it makes the frames
the agent sends and turns received bytes into events and the answers they need. `CompanionService`
runs it on the board file's UART (pyserial) under the supervisor: HELLO, then every second a
HEARTBEAT and the LED state the agent is in. A companion that is missing (no device), silent (no
frame for SILENT_AFTER s) or of another protocol version is a logged fault and an alarm in
`vaxelctl status`, never a crash: the service keeps trying, and says when the companion is back.
"""

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import serial

from vaxelbox.agent.logs import get_logger
from vaxelbox.hw import companion_protocol as wire
from vaxelbox.hw.board import Companion

log = get_logger("vaxelbox.companion")
HEARTBEAT_INTERVAL = 1.0  # s; the companion's timeout is the board file's (at least 3 s)
SILENT_AFTER = 5.0  # s without any frame from the companion: a fault
RETRY_AFTER = 5.0  # s between attempts to open a missing device
NOISE_LOG_INTERVAL = 60.0  # s between log lines about corrupt frames (they are counted in status)


@dataclass(frozen=True)
class Leds:
    """What the companion's LEDs show: link is wire.LINK_*, fault a wire.FAULT_* or 0."""

    link: int = wire.LINK_UNKNOWN
    enrolment: bool = False
    update: bool = False
    fault: int = 0

    def values(self) -> tuple[int, int, int, int]:
        return (self.link, int(self.enrolment), int(self.update), self.fault)


@dataclass(frozen=True)
class Received:
    """One message from the companion: its name (wire.MESSAGES), fields and sequence number."""

    name: str
    fields: dict[str, int]
    seq: int


@dataclass
class LinkCounters:
    corrupt: int = 0  # frames from the companion that failed CRC or framing
    unknown: int = 0  # frames of a type the agent does not take, or whose payload did not fit
    refused: int = 0  # ERROR answers the companion sent about the agent's frames


@dataclass
class CompanionLink:
    """The protocol state of one connection to the companion (sans-I/O)."""

    settings: Companion
    decoder: wire.Decoder = field(default_factory=wire.Decoder)
    counters: LinkCounters = field(default_factory=LinkCounters)
    seq: int = 0
    agreed: bool = False  # the companion answered HELLO with our version
    peer: dict[str, int] | None = None  # its HELLO_REPLY
    telemetry: dict[str, int] | None = None

    def hello(self) -> bytes:
        s = self.settings
        return self._frame("HELLO", (wire.VERSION, s.heartbeat_timeout, s.max_resets))

    def heartbeat(self) -> bytes:
        return self._frame("HEARTBEAT", ())

    def leds(self, leds: Leds) -> bytes:
        return self._frame("LEDS", leds.values())

    def reset_answer(self, confirmed: bool) -> bytes:
        return self._frame("RESET_ANSWER", (int(confirmed),))

    def receive(self, data: bytes) -> tuple[list[Received], bytes]:
        """The messages in `data` and the bytes to answer with (ERROR for what was wrong)."""
        messages, answers = [], b""
        for code, seq, payload in self.decoder.feed(data):
            if code is None:
                self.counters.corrupt += 1
                answers += self._frame("ERROR", (wire.ERROR_CORRUPT, seq), seq)
                continue
            try:
                name, fields = wire.decode(code, payload)
            except (KeyError, ValueError) as exc:
                self.counters.unknown += 1
                error = wire.ERROR_UNKNOWN if isinstance(exc, KeyError) else wire.ERROR_PAYLOAD
                answers += self._frame("ERROR", (error, seq), seq)
                continue
            if wire.MESSAGES[name][3] == "agent":
                self.counters.unknown += 1
                answers += self._frame("ERROR", (wire.ERROR_UNKNOWN, seq), seq)
                continue
            messages.append(self._take(Received(name, fields, seq)))
        return messages, answers

    def _take(self, message: Received) -> Received:
        if message.name == "HELLO_REPLY":
            self.peer = message.fields
            self.agreed = message.fields["version"] == wire.VERSION
        elif message.name == "TELEMETRY":
            self.telemetry = message.fields
        elif message.name == "ERROR":
            self.counters.refused += 1
            if message.fields["code"] == wire.ERROR_VERSION:
                self.agreed = False
        return message

    def _frame(self, name: str, values: tuple[int, ...], seq: int | None = None) -> bytes:
        if seq is None:
            self.seq = (self.seq + 1) & 0xFF
            seq = self.seq
        return wire.encode(name, seq, values)


def telemetry_row(fields: dict[str, int]) -> dict[str, Any]:
    """TELEMETRY in the units support reads: volts, degrees Celsius, the reset counters."""
    return {
        "supply_v": round(fields["supply_mv"] / 1000, 2),
        "temperature_c": fields["temperature_dc"] / 10,
        "board_resets": fields["resets"],
        "resets_in_row": fields["resets_in_row"],
        "last_reset_reason": wire.REASONS.get(fields["reason"], str(fields["reason"])),
        "frames_corrupt": fields["corrupt"],
        "frames_unknown": fields["unknown"],
        "safe_state": bool(fields["safe"]),
    }


class CompanionService:
    """The companion link under the supervisor. `leds()` gives the LED state now; `on_button(event)`
    handles a press (wire.BUTTON_*) and returns whether it was done (the factory reset answer)."""

    def __init__(
        self,
        settings: Companion,
        leds: Callable[[], Leds],
        on_button: Callable[[int], bool],
    ) -> None:
        self.settings = settings
        self.leds = leds
        self.on_button = on_button
        self.link = CompanionLink(settings)
        self.fault: str | None = "not connected yet"
        self.fault_since = time.time()
        self._heard = 0.0  # monotonic time of the last frame from the companion
        self._wake = asyncio.Event()
        self._inbox = bytearray()
        self._noise_logged = -NOISE_LOG_INTERVAL  # monotonic time of the last noise line
        self._broken: Exception | None = None  # what the reader met, raised in the session

    def poke(self) -> None:
        """The agent's state changed: show it on the LEDs now rather than at the next heartbeat."""
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """The companion's part of `vaxelctl status`."""
        link = self.link
        return {
            "device": self.settings.device,
            "state": "ok" if self.fault is None else "fault",
            "fault": self.fault,
            "since": datetime.fromtimestamp(self.fault_since, UTC).isoformat(timespec="seconds"),
            "telemetry": telemetry_row(link.telemetry) if link.telemetry else None,
            "watchdog": {k: link.peer[k] for k in ("heartbeat_timeout", "boot_grace", "max_resets")}
            if link.peer
            else None,
            "link_errors": vars(link.counters).copy(),
        }

    def alarms(self) -> list[dict[str, Any]]:
        if self.fault is None:
            return []
        since = self.status()["since"]
        return [{"kind": "companion", "device": self.settings.device, "fault": self.fault, "since": since}]

    async def run(self) -> None:
        """Keep a link to the companion for ever; every failure is a fault, logged, then retried."""
        while True:
            try:
                port = serial.Serial(self.settings.device, self.settings.baud, timeout=0, write_timeout=0)
            except (OSError, serial.SerialException) as exc:
                self._set_fault(f"missing: cannot open {self.settings.device} ({exc})")
                await asyncio.sleep(RETRY_AFTER)
                continue
            try:
                await self._session(port)
            except (OSError, serial.SerialException) as exc:
                self._set_fault(f"link lost: {exc}")
            finally:
                with contextlib.suppress(Exception):
                    asyncio.get_running_loop().remove_reader(port.fileno())
                port.close()
            await asyncio.sleep(RETRY_AFTER)

    async def _session(self, port: serial.Serial) -> None:
        loop = asyncio.get_running_loop()
        self.link = CompanionLink(self.settings)
        self._heard = time.monotonic()
        loop.add_reader(port.fileno(), self._readable, port)
        hello_at = next_beat = 0.0
        while True:
            now = time.monotonic()
            if not self.link.agreed and now - hello_at >= SILENT_AFTER / 2:
                hello_at = now
                self._write(port, self.link.hello())
            if now >= next_beat or self._wake.is_set():
                self._wake.clear()
                if now >= next_beat:
                    next_beat = now + HEARTBEAT_INTERVAL
                    self._write(port, self.link.heartbeat())
                if self.link.agreed:
                    self._write(port, self.link.leds(self.leds()))
            self._take(port)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, min(next_beat - time.monotonic(), 0.5)))

    def _readable(self, port: serial.Serial) -> None:
        try:
            self._inbox += port.read(4096)
        except (OSError, serial.SerialException) as exc:  # e.g. a USB adapter unplugged
            asyncio.get_running_loop().remove_reader(port.fileno())
            self._broken = exc
        self._wake.set()

    def _take(self, port: serial.Serial) -> None:
        if self._broken is not None:
            broken, self._broken = self._broken, None
            raise broken
        data, self._inbox[:] = bytes(self._inbox), b""
        now = time.monotonic()
        if data:
            corrupt = self.link.counters.corrupt + self.link.counters.unknown
            messages, answers = self.link.receive(data)
            if answers:
                self._write(port, answers)
            if self.link.counters.corrupt + self.link.counters.unknown > corrupt:
                self._report_noise(now)
            for message in messages:
                self._heard = now
                self._handle(port, message)
        if now - self._heard > SILENT_AFTER:
            self._set_fault(f"silent: no answer for {now - self._heard:.0f} s")
        elif self.link.peer is not None and not self.link.agreed:
            self._set_fault(f"protocol version {self.link.peer['version']}, the agent speaks {wire.VERSION}")
        elif self.link.agreed and self.link.telemetry is not None:
            self._set_fault(None)

    def _report_noise(self, now: float) -> None:
        """One log line a minute at most: a noisy line would otherwise flood the log."""
        if now - self._noise_logged >= NOISE_LOG_INTERVAL:
            self._noise_logged = now
            log.warning("companion sent corrupt frames", **vars(self.link.counters))

    def _handle(self, port: serial.Serial, message: Received) -> None:
        if message.name == "HELLO_REPLY":
            log.info("companion hello", **message.fields)
            self._wake.set()  # LEDs at once
        elif message.name == "BUTTON":
            press = message.fields["event"]
            log.info("companion button", press="short" if press == wire.BUTTON_SHORT else "factory-reset")
            try:
                done = self.on_button(press)
            except Exception:  # the press fails, the link to the watchdog must not
                log.exception("companion button not handled", press=press)
                done = False
            if press == wire.BUTTON_FACTORY_RESET:
                self._write(port, self.link.reset_answer(done))
        elif message.name == "ERROR":
            code = message.fields["code"]
            log.warning("companion refused a frame", error=wire.ERRORS.get(code, code), seq=message.seq)

    def _write(self, port: serial.Serial, data: bytes) -> None:
        with contextlib.suppress(serial.SerialTimeoutException):  # nobody reads the other end: drop it
            port.write(data)

    def _set_fault(self, fault: str | None) -> None:
        if fault == self.fault or (fault and self.fault and fault.split(":")[0] == self.fault.split(":")[0]):
            return
        if fault is None:
            log.info("companion ok", device=self.settings.device, after=self.fault)
        else:
            log.error("companion fault", device=self.settings.device, fault=fault)
        self.fault, self.fault_since = fault, time.time()
