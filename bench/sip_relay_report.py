"""The results file of bench/sip_relay.py: bench/results/sip-relay-<date>-<host>[-<parts>].md and .json.

The Markdown opens with each goal of issue 12 against what was measured, then one section per
part that ran. A run of only some parts gets their names in the file name, so a trial never
overwrites a full run's file.
"""

import datetime
import json
import platform
from pathlib import Path
from typing import Any

PARTS = ("ladder", "overload", "memory", "soak", "latency", "profile")  # a plain run's
OPTIONAL_PARTS = ("split",)  # only when asked for
GOAL_RATE = 600  # calls/s clean through the edge (issue 12)
FLAT_MB = 2.0  # soak: growth from minute 2 to the end at most this counts as flat (allocator noise)


def write(results: dict[str, Any], out: Path) -> Path:
    """Write results as JSON and Markdown under `out`; print the Markdown; return the .md path."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    name = f"sip-relay-{stamp}-{platform.node()}"
    if tuple(results["parts"]) != PARTS:
        name += "-" + "-".join(results["parts"])
    base = out / name
    base.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    text = "\n".join(markdown(results)) + "\n"
    base.with_suffix(".md").write_text(text)
    print(text)
    print(f"results: {base}.md and .json")
    return base.with_suffix(".md")


def markdown(r: dict[str, Any]) -> list[str]:
    m, v = r["machine"], r["versions"]
    lines = [
        f"# SIP relay benchmark, {r['date']}",
        "",
        f"Machine: {m['host']}, {m['cpus']} CPUs ({m['cpu']}), {m['memory_gb']} GB, Linux {m['kernel']}; "
        f"load average at start {m['load_at_start']}.",
        f"Versions: Python {v['python']}, {v['kamailio']}, {v['sipp']}, {v['py-spy']}, Vaxelbox {v['vaxelbox']}.",
        f"Command: `{r['command']}` (parts: {', '.join(r['parts'])}).",
        f"Parameters: {r['parameters']}",
        "",
        "Loopback only. sipp phones (caller and callee) behind the edge, the cloud a Kamailio over TCP that",
        "challenges every INVITE (407, answered); each call crosses the edge twice. Edge A: the Vaxelbox agent;",
        "edge B: Kamailio as a record-routing outbound proxy with Path (bench/kamailio-edge.cfg).",
        "",
        "## Goals (issue 12)",
        "",
        "| goal | measure | Vaxelbox | Kamailio edge | met |",
        "|---|---|---|---|---|",
        *goal_rows(r),
        "",
    ]
    for part, section in (("ladder", ladder), ("overload", overload), ("memory", memory), ("soak", soak),
                          ("latency", latency), ("profile", profile), ("split", split)):  # fmt: skip
        if part in r:
            lines += section(r)
    return lines


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def goal_rows(r: dict[str, Any]) -> list[str]:
    rows = []
    if "ladder" in r:
        lad = r["ladder"]
        vax, kam = lad["vaxelbox"]["clean_rate"], lad["kamailio"]["clean_rate"]
        rows.append(
            f"| throughput >= {GOAL_RATE} calls/s | highest clean rate | {vax} | {kam} | {verdict(vax >= GOAL_RATE)} |"
        )
        ratio = lad["ratio"]
        rows.append(f"| ratio >= 0.75 (aim 1.0) | Vaxelbox / Kamailio clean rate | {ratio} | 1 | "
                    f"{verdict(None if ratio is None else ratio >= 0.75)} |")  # fmt: skip
    if "overload" in r:
        o = r["overload"]
        vax, kam = o["vaxelbox"], o["kamailio"]
        share = vax["goodput_share_of_clean"]
        rows.append(f"| no collapse: goodput >= 90 % of clean at 2x | goodput / clean rate | "
                    f"{pct(share)} ({vax['goodput_cps']} of {vax['clean_rate']}/s) | "
                    f"{pct(kam['goodput_share_of_clean'])} ({kam['goodput_cps']} of {kam['clean_rate']}/s) | "
                    f"{verdict(None if share is None else share >= 0.9)} |")  # fmt: skip
        rec = vax["recovery_s"]
        rows.append(f"| clean again <= 5 s after the load drops | seconds at half the clean rate | "
                    f"{secs(rec)} | {secs(kam['recovery_s'])} | {verdict(rec is not None and rec <= 5)} |")  # fmt: skip
    if "memory" in r:
        mem = r["memory"]
        rows.append(f"| RSS idle with 2,000 phones <= 80 MB | MiB | {mem['rss_mb_2000_phones']} | | "
                    f"{verdict(mem['rss_mb_2000_phones'] <= 80)} |")  # fmt: skip
        rows.append(f"| peak RSS at the clean rate <= 150 MB | MiB over {r['parameters']['peak_seconds']} s at "
                    f"{mem['peak_rate']}/s | {mem['rss_mb_peak']} | | {verdict(mem['rss_mb_peak'] <= 150)} |")  # fmt: skip
    if "soak" in r:
        s = r["soak"]
        rows.append(f"| soak at 100 calls/s: flat RSS from minute 2 | growth MiB ({s['minutes']} min; flat: "
                    f"<= {FLAT_MB}) | {s['growth_mb']} ({s['slope_mb_per_min']} MiB/min) | | "
                    f"{verdict(s['growth_mb'] <= FLAT_MB)} |")  # fmt: skip
    if "latency" in r:
        lat = r["latency"]
        vax, kam = lat["vaxelbox"].get("added_ms", {}), lat["kamailio"].get("added_ms", {})
        rows.append(f"| added INVITE->200 p99 < 5 ms (aim 2) at 100 calls/s | ms over direct | "
                    f"{vax.get('p99', 'n/a')} | {kam.get('p99', 'n/a')} | "
                    f"{verdict(vax['p99'] < 5 if vax else None)} |")  # fmt: skip
    return rows


def pct(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.0f} %"


def secs(value: float | None) -> str:
    return "not clean" if value is None else f"{value} s"


def ladder(r: dict[str, Any]) -> list[str]:
    lad = r["ladder"]
    lines = [f"## Call-rate ladder ({r['parameters']['step_seconds']} s per step)", "",
             "| calls/s | Vaxelbox edge | Kamailio edge |", "|---|---|---|"]  # fmt: skip
    by_rate: dict[int, dict[str, str]] = {}
    for name in ("vaxelbox", "kamailio"):
        for s in lad[name]["steps"]:
            by_rate.setdefault(s["rate"], {})[name] = (
                f"{s['successful']} ok, {s['failed']} failed, {s['retransmissions']} retransmissions"
                + (f", {s['503']} 503" if s["503"] else "")
                + (" (clean)" if s["clean"] else "")
                + (f"; CPU/call: edge {s['edge_cpu_ms_per_call']} ms, machine {s['box_cpu_ms_per_call']} ms"
                   if "edge_cpu_ms_per_call" in s else "")
            )  # fmt: skip
    for rate in sorted(by_rate):
        lines.append(
            f"| {rate} | {by_rate[rate].get('vaxelbox', '')} | {by_rate[rate].get('kamailio', '')} |"
        )
    top = max(by_rate)
    capped = [n for n in ("vaxelbox", "kamailio") if lad[n]["clean_rate"] == top]
    lines += ["", f"Highest clean rate: Vaxelbox {lad['vaxelbox']['clean_rate']}, Kamailio "
              f"{lad['kamailio']['clean_rate']}, ratio {lad['ratio']}. A ladder stops at its first unclean step"
              + (f"; {' and '.join(capped)} was clean at the top of the ladder (its rate is a lower bound: "
                 "add rates with --rates)" if capped else "") + ". Each step's wall time, sipp's drain included, "
              "is in the JSON (`seconds`).", ""]  # fmt: skip
    lines += cpu_budget(lad, r["machine"]["cpus"])
    return lines


def cpu_budget(lad: dict[str, Any], cpus: int) -> list[str]:
    """Each edge's CPU per call at the highest rate both ran clean, and what the rest of the machine
    (sipp, the cloud, the kernel) used: what an edge may spend per call to be clean at GOAL_RATE."""
    clean = {n: {s["rate"]: s for s in lad[n]["steps"] if s["clean"] and "edge_cpu_ms_per_call" in s}
             for n in ("vaxelbox", "kamailio")}  # fmt: skip
    common = set(clean["vaxelbox"]) & set(clean["kamailio"])
    if not common:
        return []
    rate = max(common)
    vax, kam = clean["vaxelbox"][rate], clean["kamailio"][rate]
    rest = vax["box_cpu_ms_per_call"] - vax["edge_cpu_ms_per_call"]
    budget = 1000 / GOAL_RATE  # one core's ms per call: the agent is one process
    return [f"CPU per completed call at {rate} calls/s (the highest rate both edges ran clean): Vaxelbox "
            f"{vax['edge_cpu_ms_per_call']} ms, Kamailio {kam['edge_cpu_ms_per_call']} ms (all its processes), "
            f"{vax['edge_cpu_ms_per_call'] / kam['edge_cpu_ms_per_call']:.1f}x; the rest of the machine "
            f"(sipp, the cloud, the kernel) {rest:.2f} ms. The agent is one process: at {GOAL_RATE} calls/s it has "
            f"{budget:.2f} ms of one core per call, and the rest then needs {rest * GOAL_RATE / 1000:.2f} of the "
            f"{cpus} cores.", ""]  # fmt: skip


def split(r: dict[str, Any]) -> list[str]:
    sp = r["split"]
    count = sp["agents"]
    lines = [f"## Split: {count} independent agents, each 1/{count} of the load "
             f"({r['parameters']['step_seconds']} s per step)", "",
             "An upper bound for an edge spread over that many processes on this machine: each agent has its own",
             "caller and callee, and they share no state (a real split would). sipp and the cloud run beside them.",
             "", "| calls/s (total) | the agents together |", "|---|---|"]  # fmt: skip
    for s in sp["steps"]:
        lines.append(f"| {s['rate']} | {s['successful']} ok, {s['failed']} failed, {s['retransmissions']} "
                     f"retransmissions" + (f", {s['503']} 503" if s["503"] else "") + (" (clean)" if s["clean"] else "")
                     + " |")  # fmt: skip
    one = r.get("ladder", {}).get("vaxelbox", {}).get("clean_rate")
    lines += ["", f"Highest clean total rate: {sp['clean_rate']}"
              + (f" (one agent in the ladder: {one})." if one is not None else "."), ""]  # fmt: skip
    return lines


def overload(r: dict[str, Any]) -> list[str]:
    p = r["parameters"]
    lines = [f"## Overload: twice the clean rate for {p['overload_seconds']} s, then half for "
             f"{p['recovery_seconds']} s", "",
             "| | Vaxelbox edge | Kamailio edge |", "|---|---|---|"]  # fmt: skip
    o = r["overload"]
    for label, key in (("clean rate (calls/s)", "clean_rate"), ("offered (calls/s)", "offered_rate"),
                       ("goodput within the step (calls/s)", "goodput_cps"),
                       ("goodput / clean rate", "goodput_share_of_clean"), ("successful calls", "successful"),
                       ("failed calls", "failed"), ("retransmissions", "retransmissions"), ("503 seen", "503"),
                       ("then calls/s", "recovery_rate"), ("seconds until clean again", "recovery_s"),
                       ("that run's calls ok / failed / retransmissions", "recovery_run")):  # fmt: skip
        cells = [cell(o[name][key]) for name in ("vaxelbox", "kamailio")]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    lines += ["", "Goodput counts the calls sipp completed within the step (its per-second statistics).",
              "Clean again: the start of the first second from which every second of the half-rate run has",
              "no failed call and no retransmission (1 s resolution).",
              "At twice a fast edge's clean rate, the cloud and sipp share the same cores and may saturate",
              "first: read the Kamailio column as indicative.", ""]  # fmt: skip
    return lines


def cell(value: Any) -> str:
    if isinstance(value, dict):
        return " / ".join(str(x) for x in value.values())
    return "not within the run" if value is None else str(value)


def memory(r: dict[str, Any]) -> list[str]:
    mem = r["memory"]
    reg = mem["registrations"]
    return [
        "## Memory (a fresh agent)",
        "",
        f"- RSS idle, no phones: {mem['rss_mb_idle']} MiB",
        f"- {reg['phones']} phones registered at {reg['rate']}/s in {reg['seconds']} s: {reg['successful']} ok, "
        f"{reg['failed']} failed, {reg['retransmissions']} retransmissions",
        f"- RSS with them, {r['parameters']['settle_seconds']} s later (transactions ended): "
        f"{mem['rss_mb_2000_phones']} MiB",
        f"- peak RSS during {r['parameters']['peak_seconds']} s at {mem['peak_rate']} calls/s (psutil every 0.5 s): "
        f"{mem['rss_mb_peak']} MiB; right after: {mem['rss_mb_after_peak_run']} MiB; that run: {mem['peak_run']}",
        "",
    ]


def soak(r: dict[str, Any]) -> list[str]:
    s = r["soak"]
    samples = ", ".join(f"{t:.0f}s {mb}" for t, mb in s["samples"])
    return [
        f"## Soak: {s['rate']} calls/s for {s['minutes']} min (a fresh agent)",
        "",
        f"Calls: {s['successful']} ok, {s['failed']} failed, {s['retransmissions']} retransmissions.",
        f"RSS from {s['from_s']:.0f} s to {s['to_s']:.0f} s: {s['rss_mb_from']} -> {s['rss_mb_to']} MiB "
        f"(growth {s['growth_mb']} MiB, least-squares slope {s['slope_mb_per_min']} MiB/min).",
        "",
        f"Samples (every 10 s, MiB): {samples}",
        "",
    ]


def latency(r: dict[str, Any]) -> list[str]:
    lat = r["latency"]
    lines = [f"## Latency: INVITE (with credentials) -> 200 at 100 calls/s, {r['parameters']['latency_seconds']} s "
             "per target (perf_counter_ns, bench/sip_latency.py)", "",
             "| target | median ms | p90 ms | p99 ms | max ms | added median | added p99 | INVITE->407 median | "
             "ok / failed / retrans |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in ("direct", "vaxelbox", "kamailio"):
        x = lat[name]
        t, added, auth = x["invite_200_ms"], x.get("added_ms", {}), x["invite_407_ms"]
        lines.append(f"| {name} | {t.get('median')} | {t.get('p90')} | {t.get('p99')} | {t.get('max')} | "
                     f"{added.get('median', '')} | {added.get('p99', '')} | {auth.get('median')} | "
                     f"{x['ok']} / {x['failed']} / {x['retransmissions']} |")  # fmt: skip
    lines += [
        "",
        "Added = through the edge minus straight to the cloud (the edge is crossed twice per call).",
        "",
    ]
    return lines


def profile(r: dict[str, Any]) -> list[str]:
    p = r["profile"]
    return [
        f"## Where the agent's time goes (py-spy, {p['rate']} calls/s for {p['seconds']} s, {p['samples']} samples)",
        "",
        f"That run: {p['run']}. Shares are of py-spy's non-idle samples of every thread (the event loop and",
        "the store's worker threads); waits py-spy does not see as idle still show (EpollSelector.select,",
        "_worker).",
        "",
        "By self samples (the function itself on CPU):",
        "",
        "```",
        *p["top_self"],
        "```",
        "",
        "By inclusive samples (the function or what it calls):",
        "",
        "```",
        *p["top_inclusive"],
        "```",
        "",
    ]
