"""What the provisioning server adds to h11 (which does all of HTTP/1.1's framing): the path the
service is asked for, found in the request target and decoded as it was before.
"""

import re

_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+")


class BadRequest(ValueError):
    """h11 read the request but it cannot be served (its target names no path, or it is not
    HTTP/1.x); the message says why (it goes back in the 400's body)."""


def target_path(method: str, target: str) -> str:
    """The path of a request target (origin-form, absolute-form, or `*` for OPTIONS), without its
    query or fragment, percent-decoded by `decoded_path`. Raises BadRequest for other targets."""
    if target == "*":
        if method != "OPTIONS":
            raise BadRequest("only OPTIONS may ask for *")
        return target
    if target.startswith("/"):
        raw = target
    elif (scheme_end := target.find("://")) > 0:  # absolute-form: the path after the authority
        after = target[scheme_end + 3 :]
        cut = min((i for i in (after.find(c) for c in "/?#") if i >= 0), default=len(after))
        raw = after[cut:] if after[cut:].startswith("/") else "/" + after[cut:]
    else:
        raise BadRequest("invalid request target")
    return decoded_path(re.split(r"[?#]", raw, maxsplit=1)[0])


def decoded_path(path: str) -> str:
    """`path` with its percent-escapes decoded where they spell UTF-8; an escape of a byte that is
    not part of valid UTF-8 stays as written (`/%ff.cfg` stays; `/%c3%a9%ff` is `/é%ff`), and `+`
    stays `+`: as aiohttp (yarl) decoded paths, so the service sees what it saw before."""
    return _ESCAPES.sub(_decoded_run, path)


def _decoded_run(run: re.Match[str]) -> str:
    written = run.group()
    escapes = [written[i : i + 3] for i in range(0, len(written), 3)]
    text = bytes(int(e[1:], 16) for e in escapes).decode("utf-8", "surrogateescape")
    decoded, at = [], 0
    for char in text:
        if "\udc80" <= char <= "\udcff":  # a byte that is not valid UTF-8 here: keep its escape
            decoded.append(escapes[at])
            at += 1
        else:
            decoded.append(char)
            at += len(char.encode())
    return "".join(decoded)
