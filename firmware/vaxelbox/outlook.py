"""What an assigned device gets next, as `vaxelbox phones assign` and `vaxelctl phones assign` both
say it after the assignment: one wording, whichever command the installer typed."""

from datetime import datetime


def assigned_outlook(
    *, vendor_known: bool, seen: bool, enrolled: bool, until: float | None, vendors: list[str], tool: str
) -> list[str]:
    """The lines to print. A file is promised only where the vendor is known (named in the site, by
    the installer or by the device's own request). `seen`: the device has asked already; `until`:
    the end of an enrolment window open for it now (s since the epoch), or None; `vendors`: what
    --vendor accepts; `tool`: "vaxelbox" or "vaxelctl", whose `enrol open` opens a window."""
    named = f"--vendor VENDOR ({', '.join(vendors)})"
    if not vendor_known and seen:  # it asked already and nothing in its request named a vendor
        return [f"Its vendor is unknown, so it gets no file: assign it again with {named}."]
    window = f"{tool} enrol open"
    when = None if until is None else datetime.fromtimestamp(until).isoformat(timespec="seconds")
    if not vendor_known:  # never seen, nobody named it: its first request may tell
        return [
            "No vendor is known for it yet: it gets its files once provisioning identifies it by its "
            f"User-Agent or MAC, or name its vendor with {named}.",
            f"Enrolment is open until {when}: it gets its configuration at a request that tells its vendor."
            if when
            else f"It fetches its configuration in an enrolment window once its vendor is known: {window}",
        ]
    if enrolled:
        return []
    if when:
        return [f"It gets its configuration at its next request: enrolment is open until {when}."]
    return [f"It fetches its configuration in the next enrolment window: {window}"]
