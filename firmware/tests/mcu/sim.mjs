// The simulated companion: the real companion code under real MicroPython (WebAssembly, in Node),
// its `machine` stand-in wired to this machine instead of an RP2040's pins. Tests only.
//
//   node sim.mjs --dir DIR [--uart-fd N] [--long-press-ms MS]
//
// --long-press-ms sets the companion's LONG_PRESS_MS (10 s, proven on a simulated clock in
// mcu/scenarios.py), so an end-to-end test can ask for a factory reset without holding 10 s.
//
// DIR holds the companion's sources (*.py, config.py among them, as `make companion` lays them
// out) and is where the world around the microcontroller is played with files:
//   uart-fd N  the companion's UART is file descriptor N (a pty master; the agent has the slave)
//   button     exists while the button is held down
//   noise      bytes in it are sent on the UART once (then it is removed): line noise
//   events     one line per output change: "<epoch ms> <name> <level>" (LEDs, power)
//   power.cmd  if present, run with "on" or "off" as its argument when the power pin changes
// The companion's hardware watchdog (machine.WDT) is kept: a step that throws or a loop that
// stops feeding it restarts the companion (a fresh interpreter), as the RP2040 would.
import fs from "node:fs";
import path from "node:path";
import { spawn } from "node:child_process";
import { micropython } from "./mpy.mjs";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (i % 2 ? pairs : [...pairs, [arg.replace(/^--/, ""), all[i + 1]]]), []),
);
const dir = path.resolve(args.dir);
const uartFd = args["uart-fd"] !== undefined ? Number(args["uart-fd"]) : null;
const events = fs.openSync(path.join(dir, "events"), "a");
const buffer = Buffer.alloc(4096);
let pins = {}; // number -> name, from config.PINS
let wdt = { timeout: null, fed: Date.now() };

function log(name, level) {
  fs.writeSync(events, `${Date.now()} ${name} ${level}\n`);
}

function power(level) {
  const command = path.join(dir, "power.cmd");
  if (fs.existsSync(command)) {
    spawn(command, [level ? "on" : "off"], { detached: true, stdio: "ignore" }).unref();
  }
}

const host = {
  pin_out: (number) => {},
  pin_get: (number) => (pins[number] === "button" && fs.existsSync(path.join(dir, "button")) ? 0 : 1),
  pin_set: (number, level) => {
    const name = pins[number] ?? `pin${number}`;
    log(name, level);
    if (name === "power") power(level);
  },
  uart_read: () => {
    const noise = path.join(dir, "noise");
    if (fs.existsSync(noise)) {
      const data = fs.readFileSync(noise);
      fs.unlinkSync(noise);
      host.uart_write(data.toString("hex"));
    }
    if (uartFd === null) return null;
    try {
      const count = fs.readSync(uartFd, buffer, 0, buffer.length, null);
      return count ? new Uint8Array(buffer.subarray(0, count)) : null;
    } catch (error) {
      return null; // EAGAIN: nothing there; EIO: nobody holds the other end yet
    }
  },
  uart_write: (hex) => {
    if (uartFd === null) return;
    try {
      fs.writeSync(uartFd, Buffer.from(hex, "hex"));
    } catch (error) {
      // EAGAIN: the line's buffer is full (nobody reads); a real UART drops the bytes too
    }
  },
  adc_read: (channel) => (channel === 4 ? 14000 : 33000), // 27.6 degC, 4.985 V
  wdt_start: (timeout) => { wdt = { timeout, fed: Date.now() }; },
  wdt_feed: () => { wdt.fed = Date.now(); },
};

async function boot() {
  const mp = await micropython([dir, path.join(import.meta.dirname, "machine.py")]);
  mp.registerJsModule("host", host);
  mp.runPython("import config\nimport json\n_pins = json.dumps(config.PINS)");
  pins = Object.fromEntries(Object.entries(JSON.parse(mp.globals.get("_pins"))).map(([k, v]) => [v, k]));
  if (args["long-press-ms"] !== undefined) {
    mp.runPython(`import companion as _firmware\n_firmware.LONG_PRESS_MS = ${Number(args["long-press-ms"])}`);
  }
  mp.runPython("import main\ncompanion = main.build(0)\nimport time\n_start = time.ticks_ms()");
  log("companion", "boot");
  return mp;
}

let mp = await boot();
const started = Date.now();
setInterval(async () => {
  if (wdt.timeout !== null && Date.now() - wdt.fed > wdt.timeout) {
    log("companion", "wdt-reset");
    mp = await boot();
    return;
  }
  try {
    mp.runPython(`companion.step(${Date.now() - started})`);
  } catch (error) {
    process.stderr.write(`companion step failed: ${error.message ?? error}\n`); // the WDT restarts it
  }
}, 10);
