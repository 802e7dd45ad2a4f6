"""Checks across the parts of a site: references resolve, numbers and ids are unique, no loops."""

from collections.abc import Iterator

from vaxelbox.problems import Problem
from vaxelbox.site.model import Site
from vaxelbox.site.targets import Target, TargetKind


def check_references(site: Site) -> list[Problem]:
    """All cross-reference problems of a structurally valid site, in file order."""
    return [
        *_unique_ids(site),
        *_unique_dialables(site),
        *_unique_macs(site),
        *_user_refs(site),
        *_target_refs(site),
        *_forward_loops(site),
        *_dect_chain(site),
    ]


def _unique_ids(site: Site) -> Iterator[Problem]:
    for section in ("users", "groups", "menus", "schedules"):
        seen: dict[str, int] = {}
        for i, part in enumerate(getattr(site, section)):
            if part.id in seen:
                yield Problem(
                    (section, i, "id"), f"duplicate id {part.id!r} (also {section}[{seen[part.id]}])"
                )
            seen.setdefault(part.id, i)
    for u, user in enumerate(site.users):
        for field in ("id", "number"):
            seen_values: dict[object, int] = {}
            for a, activity in enumerate(user.activities):
                value = getattr(activity, field)
                if value in seen_values:
                    yield Problem(
                        ("users", u, "activities", a, field),
                        f"duplicate activity {field} {value!r} (also activities[{seen_values[value]}])",
                    )
                seen_values.setdefault(value, a)


def _unique_dialables(site: Site) -> Iterator[Problem]:
    """An extension or a DID must lead to exactly one place."""
    extensions: dict[str, str] = {}
    numbers: dict[str, str] = {}

    def claim(table: dict[str, str], value: str | None, where: str, what: str) -> Iterator[Problem]:
        if value is None:
            return
        if value in table:
            yield Problem(where, f"{what} {value!r} is already used by {table[value]}")
        table.setdefault(value, where)

    yield from claim(numbers, site.main.number, "main.number", "number")
    for i, user in enumerate(site.users):
        yield from claim(extensions, user.extension, f"users[{i}].extension", "extension")
        yield from claim(numbers, user.direct_number, f"users[{i}].direct_number", "number")
    for i, group in enumerate(site.groups):
        yield from claim(extensions, group.extension, f"groups[{i}].extension", "extension")
        yield from claim(numbers, group.number, f"groups[{i}].number", "number")


def _unique_macs(site: Site) -> Iterator[Problem]:
    seen: dict[str, int] = {}
    for i, phone in enumerate(site.phones):
        if phone.mac in seen:
            yield Problem(("phones", i, "mac"), f"duplicate MAC {phone.mac} (also phones[{seen[phone.mac]}])")
        seen.setdefault(phone.mac, i)


def _user_refs(site: Site) -> Iterator[Problem]:
    users = {u.id for u in site.users}
    schedules = {s.id for s in site.schedules}

    def refs(path: tuple[str | int, ...], ids: list[str], unique: bool) -> Iterator[Problem]:
        for i, user_id in enumerate(ids):
            if user_id not in users:
                yield Problem((*path, i), f"unknown user {user_id!r}")
            elif unique and user_id in ids[:i]:
                yield Problem((*path, i), f"user {user_id!r} is listed twice")

    for g, group in enumerate(site.groups):
        yield from refs(("groups", g, "members"), [m.user for m in group.members], unique=True)
        if group.schedule is not None and group.schedule not in schedules:
            yield Problem(("groups", g, "schedule"), f"unknown schedule {group.schedule!r}")
    for p, phone in enumerate(site.phones):
        yield from refs(("phones", p, "lines"), phone.lines, unique=True)
        yield from refs(("phones", p, "handsets"), phone.handsets, unique=False)
        yield from refs(("phones", p, "blf"), phone.blf, unique=True)


def _targets(site: Site) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every (path, target) in the site."""
    yield ("main", "entry"), site.main.entry
    for u, user in enumerate(site.users):
        for field in ("always", "no_answer", "busy"):
            if (value := getattr(user.forwards, field)) is not None:
                yield ("users", u, "forwards", field), value
        for a, activity in enumerate(user.activities):
            yield ("users", u, "activities", a, "forward"), activity.forward
    for g, group in enumerate(site.groups):
        for field in ("overflow", "closed"):
            if (value := getattr(group, field)) is not None:
                yield ("groups", g, field), value
    for m, menu in enumerate(site.menus):
        for digit, value in menu.options.items():
            yield ("menus", m, "options", digit), value
        yield ("menus", m, "default"), menu.default


def _target_refs(site: Site) -> Iterator[Problem]:
    known = {
        TargetKind.USER: {u.id for u in site.users},
        TargetKind.VOICEMAIL: {u.id for u in site.users},
        TargetKind.GROUP: {g.id for g in site.groups},
        TargetKind.MENU: {m.id for m in site.menus},
    }
    for path, text in _targets(site):
        target = Target.parse(text)
        if target.kind in known and target.ref not in known[target.kind]:
            noun = "user" if target.kind is TargetKind.VOICEMAIL else target.kind.value
            yield Problem(path, f"unknown {noun} {target.ref!r}")


def _forward_loops(site: Site) -> Iterator[Problem]:
    """Unconditional hops (always-forward, menu default) must not come back around."""
    hops: dict[str, str] = {}
    where: dict[str, tuple[str | int, ...]] = {}
    for u, user in enumerate(site.users):
        if user.forwards.always:
            hops[f"user:{user.id}"] = user.forwards.always
            where[f"user:{user.id}"] = ("users", u, "forwards", "always")
    for m, menu in enumerate(site.menus):
        hops[f"menu:{menu.id}"] = menu.default
        where[f"menu:{menu.id}"] = ("menus", m, "default")
    reported: set[str] = set()
    for start in hops:
        chain = [start]
        node = hops[start]
        while node in hops and node not in chain:
            chain.append(node)
            node = hops[node]
        if node == start and not reported.intersection(chain):
            reported.update(chain)
            yield Problem(where[start], "forwarding loop: " + " -> ".join([*chain, start]))


def _dect_chain(site: Site) -> Iterator[Problem]:
    """snom DECT multicell: one primary, on a snom DECT base; the chain id is no extension."""
    yield from _chain_primaries(site)
    if site.dect_chain():
        yield from _chain_id(site)


def _chain_primaries(site: Site) -> Iterator[Problem]:
    first: int | None = None
    for p, phone in enumerate(site.phones):
        if not phone.primary:
            continue
        if phone.type != "dect" or phone.vendor != "snom":
            what = (
                f"{phone.vendor or 'vendor-unknown'} {'DECT base' if phone.type == 'dect' else 'desk phone'}"
            )
            message = f"only a snom DECT base can be a multicell primary, not this {what}"
            yield Problem(("phones", p, "primary"), message)
        elif first is not None:
            message = f"phones[{first}] is the chain's primary already: a chain has one"
            yield Problem(("phones", p, "primary"), message)
        else:
            first = p


def _chain_id(site: Site) -> Iterator[Problem]:
    """The bases register the chain id as a SIP account (RTX/snom), so nobody may dial it."""
    chain_id = str(site.provisioning.dect_chain_id)
    dialled = [(f"users[{u}]", user.extension) for u, user in enumerate(site.users)]
    dialled += [(f"groups[{g}]", group.extension) for g, group in enumerate(site.groups)]
    for where, extension in dialled:
        if extension == chain_id:
            message = (
                f"{chain_id} is {where}.extension too: the snom bases use the chain id as a SIP "
                "account, so pick a number nobody dials"
            )
            yield Problem(("provisioning", "dect_chain_id"), message)
