// Run a script under real MicroPython (the WebAssembly port from npm) in Node, for tests.
//
//   node mpy.mjs PATH[:PATH...] SCRIPT [ARG...]
//
// Each PATH (colon-separated) is a file or a directory whose *.py and *.mpy files are all taken; they are
// copied into the interpreter's file system at /lib,
// which is on sys.path; SCRIPT runs as __main__ with sys.argv = [SCRIPT, ARG...] in /work, a
// writable directory. Its output goes to stdout; an uncaught exception prints the traceback on
// stderr and exits 1.
import fs from "node:fs";
import path from "node:path";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

export async function micropython(paths) {
  const mp = await loadMicroPython({
    heapsize: 8 * 1024 * 1024,
    stdout: (line) => process.stdout.write(line + "\n"),
    stderr: (line) => process.stderr.write(line + "\n"),
  });
  mp.FS.mkdir("/lib");
  mp.FS.mkdir("/work");
  for (const given of paths) {
    const files = fs.statSync(given).isDirectory()
      ? fs.readdirSync(given).filter((n) => n.endsWith(".py") || n.endsWith(".mpy")).map((n) => path.join(given, n))
      : [given];
    for (const file of files) mp.FS.writeFile(`/lib/${path.basename(file)}`, fs.readFileSync(file));
  }
  mp.runPython("import sys, os\nsys.path.insert(0, '/lib')\nos.chdir('/work')");
  return mp;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [paths, script, ...args] = process.argv.slice(2);
  const mp = await micropython(paths.split(":"));
  mp.FS.writeFile("/work/__main__.py", fs.readFileSync(script));
  mp.globals.set("_argv", JSON.stringify([script, ...args]));
  try {
    mp.runPython("import json\nsys.argv[:] = json.loads(_argv)\nexec(open('/work/__main__.py').read(), {'__name__': '__main__'})");
  } catch (error) {
    process.stderr.write(String(error.message ?? error) + "\n");
    process.exit(1);
  }
}
