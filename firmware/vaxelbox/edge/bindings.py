"""The binding mirror: every phone registration the cloud accepted, with the flow it came on.

The cloud's 200 to a REGISTER is the truth: the mirror keeps the contacts it
lists for the registering phone, with their expiry (those it does not list,
as the REGISTER asked), and drops them on expiry or de-registration. It lives in memory for lookups on every
request, and is written to the store in batches so it survives a restart
(local mode, later, authenticates and routes from it).
"""

import json
import logging
import time
from dataclasses import asdict, dataclass

from vaxelbox.sip.address import Address
from vaxelbox.sip.message import Request, Response
from vaxelbox.sip.syntax import is_number
from vaxelbox.sip.transport import Flow
from vaxelbox.sip.uri import SipUri, Uri, parse_uri, uri_equal
from vaxelbox.store import Store

log = logging.getLogger("vaxelbox.edge.bindings")

DEFAULT_EXPIRES = 3600


@dataclass(frozen=True, slots=True)
class Binding:
    aor: str
    contact: str
    transport: str
    remote: tuple[str, int]
    local: tuple[str, int]
    expires_at: float  # wall clock
    user_agent: str
    last_seen: float

    def expires_in(self, now: float | None = None) -> int:
        return max(0, round(self.expires_at - (now or time.time())))


class BindingMirror:
    def __init__(self, store: Store | None = None) -> None:
        self._store = store
        self._bindings: dict[tuple[str, str], Binding] = {}
        self._flows: dict[tuple[str, str], Flow] = {}
        self._by_contact: dict[str, tuple[str, str]] = {}  # contact -> key, for lookups per request
        # key -> the Contact as the phone wrote it (URI and header parameters, no expires), to register
        # it elsewhere on the phone's behalf (edge/failback.py). In memory only: a restart forgets it.
        self._written: dict[tuple[str, str], str] = {}
        self._dirty: set[tuple[str, str]] = set()
        # Bindings whose stream flow the network took away (RFC 5626 §4.4.1: the flow failed): not
        # reachable until the phone registers again, since only its own connection reaches it.
        self._unreachable: set[tuple[str, str]] = set()
        if store is not None:
            self._load(store)

    def __len__(self) -> int:
        return len(self._bindings)

    def all(self) -> list[Binding]:
        return sorted(self._bindings.values(), key=lambda b: (b.aor, b.contact))

    def update(self, request: Request, response: Response, flow: Flow) -> None:
        """Mirror what the registrar's 200 says about the contacts this REGISTER carried.

        The 200's contacts are matched to the REGISTER's as RFC 3261 §19.1.4 compares URIs (a
        registrar may write the host in other case, IPv6 compressed, `transport=UDP`); entries that
        do not parse (another device's binding in a spelling we cannot read) are skipped. A contact
        the 200 does not list is kept as the REGISTER asked (its expires, §10.2.4), and logged."""
        aor = aor_of(request)
        now = time.time()
        default = _int(response.get("Expires")) or _int(request.get("Expires")) or DEFAULT_EXPIRES
        granted, unreadable = response.contacts_lenient()
        if unreadable:
            log.info("registrar's 200 for %s lists contacts we cannot parse: %s", aor, "; ".join(unreadable))
        asked = request.contacts
        written = {bare_uri(a.uri): a for a in asked}
        if (request.get("Contact") or "").strip() == "*":
            sent = [contact for (a, contact) in self._bindings if a == aor]
        else:
            sent = [bare_uri(a.uri) for a in asked]
        for contact in sent:
            address = next((g for g in granted if uri_equal(g.uri, parse_uri(contact))), None)
            if address is None:
                expires = _asked_expires(written.get(contact), request)
                if expires:
                    log.info(
                        "registrar's 200 for %s does not list %s: kept for %s s as asked",
                        aor,
                        contact,
                        expires,
                    )
            else:
                expires = _int(address.params.get("expires"))
                if expires is None:
                    expires = default
            key = (aor, contact)
            if not expires:
                self._drop(key)
            else:
                self._bindings[key] = Binding(
                    aor, contact, flow.transport, flow.remote, flow.local, now + expires,
                    request.get("User-Agent") or "", now,
                )  # fmt: skip
                self._flows[key] = flow
                self._unreachable.discard(key)
                self._by_contact[contact] = key
                if contact in written:
                    self._written[key] = _without_expires(written[contact])
            self._dirty.add(key)

    def grant(
        self,
        aor: str,
        contact: str,
        flow: Flow,
        expires: int,
        user_agent: str,
        *,
        address: Address | None = None,
    ) -> Binding:
        """Store one binding that the local registrar accepted: `contact` (a bare URI) of `aor`,
        reached over `flow`, for `expires` seconds (> 0; drop with `release`). `address` is the
        Contact as the phone wrote it (see `written_contact`)."""
        if expires <= 0:
            raise ValueError("a granted binding needs a positive expiry")
        now = time.time()
        key = (aor, contact)
        binding = Binding(
            aor, contact, flow.transport, flow.remote, flow.local, now + expires, user_agent, now
        )
        self._bindings[key] = binding
        self._flows[key] = flow
        self._unreachable.discard(key)
        self._by_contact[contact] = key
        self._written[key] = _without_expires(address) if address is not None else f"<{contact}>"
        self._dirty.add(key)
        return binding

    def release(self, aor: str, contact: str) -> None:
        """Drop the binding of `contact` (a bare URI) to `aor`, if there is one."""
        self._drop((aor, contact))

    def contacts_of(self, aor: str, now: float | None = None) -> list[tuple[Binding, Flow | None]]:
        """The unexpired bindings of `aor`, by contact, each with its flow if that is known and
        alive. After a restart the flows are unknown (None): reach the phone from the binding's
        transport, remote and local address."""
        now = now or time.time()
        found = sorted(
            (b for (a, _), b in self._bindings.items() if a == aor and b.expires_at > now),
            key=lambda b: b.contact,
        )
        result: list[tuple[Binding, Flow | None]] = []
        for binding in found:
            flow = self._flows.get((binding.aor, binding.contact))
            result.append((binding, flow if flow is not None and flow.alive else None))
        return result

    def get(self, aor: str, contact: str) -> Binding | None:
        """The binding of `contact` (a bare URI) to `aor`, expired or not, if the mirror holds it."""
        return self._bindings.get((aor, contact))

    def written_contact(self, aor: str, contact: str) -> str:
        """The Contact value of `aor`'s binding `contact` (a bare URI) as the phone last wrote it,
        URI parameters (transport, ...) and header parameters (+sip.instance, ...) kept, expires
        dropped: registrars compare contacts with their parameters, so registering the bare URI on
        the phone's behalf would leave a second binding beside the phone's own. `<contact>` when
        the mirror never saw it written (loaded from the store after a restart)."""
        return self._written.get((aor, contact), f"<{contact}>")

    def aor_of_contact(self, contact: str) -> str | None:
        """The address of record `contact` (a bare URI) is bound to, if the mirror holds it."""
        key = self._by_contact.get(contact)
        return key[0] if key is not None else None

    def flow_for(self, contact: str) -> Flow | None:
        """The live flow of the binding whose contact is `contact` (as a bare URI)."""
        key = self._by_contact.get(contact)
        flow = self._flows.get(key) if key is not None else None
        return flow if flow is not None and flow.alive else None

    def flow_lost(self, flow: Flow) -> list[Binding]:
        """The network took `flow` away (a phone's connection reset or timed out): its bindings are
        marked unreachable until they register again; returns them (none for a flow no binding uses)."""
        keys = [key for key, known in self._flows.items() if known is flow]
        for key in keys:
            del self._flows[key]
            self._unreachable.add(key)
        return [self._bindings[key] for key in keys if key in self._bindings]

    def unreachable(self, contact: str) -> bool:
        """Whether the binding of `contact` (a bare URI) lost its flow and has not registered since:
        nothing but that flow can reach it (a NAT's mapping, a connection only the phone can open)."""
        key = self._by_contact.get(contact)
        return key is not None and key in self._unreachable

    def expire(self, now: float | None = None) -> list[Binding]:
        now = now or time.time()
        gone = [b for b in self._bindings.values() if b.expires_at <= now]
        for binding in gone:
            self._drop((binding.aor, binding.contact))
        return gone

    def _drop(self, key: tuple[str, str]) -> None:
        self._bindings.pop(key, None)
        self._flows.pop(key, None)
        self._unreachable.discard(key)
        self._written.pop(key, None)
        if self._by_contact.get(key[1]) == key:
            del self._by_contact[key[1]]
        self._dirty.add(key)

    def flush(self) -> int:
        """Write the changed bindings to the store in one transaction; how many were written."""
        if self._store is None or not self._dirty:
            return 0
        dirty, self._dirty = self._dirty, set()
        with self._store.transaction() as db:
            for key in dirty:
                binding = self._bindings.get(key)
                if binding is None:
                    db.execute("DELETE FROM binding WHERE aor = ? AND contact = ?", key)
                else:
                    row = asdict(binding)
                    row["remote"], row["local"] = json.dumps(binding.remote), json.dumps(binding.local)
                    db.execute(
                        "INSERT OR REPLACE INTO binding VALUES "
                        "(:aor, :contact, :transport, :remote, :local, :expires_at, :user_agent, :last_seen)",
                        row,
                    )
        return len(dirty)

    def _load(self, store: Store) -> None:
        for row in store.read("SELECT * FROM binding"):
            binding = Binding(
                row["aor"], row["contact"], row["transport"], tuple(json.loads(row["remote"])),
                tuple(json.loads(row["local"])), row["expires_at"], row["user_agent"], row["last_seen"],
            )  # fmt: skip
            self._bindings[(binding.aor, binding.contact)] = binding
            self._by_contact[binding.contact] = (binding.aor, binding.contact)


def aor_of(request: Request) -> str:
    """The address of record: the To URI without port, parameters or headers."""
    uri = request.to.uri
    if isinstance(uri, SipUri):
        return (
            f"{uri.scheme}:{uri.user}@{uri.host_reference}"
            if uri.user
            else f"{uri.scheme}:{uri.host_reference}"
        )
    return str(uri)


def bare_uri(uri: Uri) -> str:
    """A URI without its parameters and headers, for comparing contacts."""
    if isinstance(uri, SipUri):
        user = f"{uri.user}@" if uri.user else ""
        port = f":{uri.port}" if uri.port else ""
        return f"{uri.scheme}:{user}{uri.host_reference}{port}"
    return str(uri)


def _without_expires(address: Address) -> str:
    params = {k: v for k, v in address.params.items() if k.lower() != "expires"}
    return str(Address(address.uri, address.display, params))


def _asked_expires(address: Address | None, request: Request) -> int:
    """The seconds a REGISTER asked for one of its contacts (its expires, else the Expires header)."""
    asked = _int(address.params.get("expires")) if address is not None else None
    if asked is None:
        asked = _int(request.get("Expires"))
    return DEFAULT_EXPIRES if asked is None else asked


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and is_number(text.strip()) else None
