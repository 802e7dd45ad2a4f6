"""The mark `vaxelctl site pull` writes as a site file's first line: the version and ETag the copy was
pulled from (`# vaxelbox-site: version 7, etag 0123456789abcdef`), so a push is refused if the
appliance moved on meanwhile. It is vaxelctl's bookkeeping, not part of the site: the agent and the
store read a site without it, so a pulled file used as `--site` is the same text as its version."""

import re

SITE_MARK = re.compile(r"^# vaxelbox-site: version (\d+), etag ([0-9a-f]{16})\n", re.MULTILINE)


def site_mark(number: int, digest: str) -> str:
    """The mark line for a version (its number and its digest, of which the ETag is the first 16)."""
    return f"# vaxelbox-site: version {number}, etag {digest[:16]}\n"


def without_mark(text: str) -> str:
    return SITE_MARK.sub("", text)
