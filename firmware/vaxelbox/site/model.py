"""The site model: the office as the cloud PBX knows it, as one TOML file describes it.

Structure and single values are checked here; references between parts
(members, targets, phones' lines) are checked in `references.py`.
"""

from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from vaxelbox.site.fields import (
    Extension,
    FirmwareUrl,
    Handle,
    HostName,
    Mac,
    Name,
    Password,
    PhoneNumber,
    ProxyUri,
    Seconds,
    TargetRef,
    Text,
    TimeRange,
    TimeZoneName,
)


class _Part(BaseModel):
    """Every part of the site refuses unknown fields: a typo must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SiteInfo(_Part):
    name: Name
    timezone: TimeZoneName = "Europe/Stockholm"
    language: Literal["sv", "en", "no", "da", "fi", "de"] = "sv"


class Cloud(_Part):
    """The cloud PBX the edge relays to."""

    domain: HostName = Field(description="SIP domain of the tenant (the AoR host part)")
    proxies: list[ProxyUri] = Field(min_length=1, description="Outbound proxies, in order")
    probe_interval: float = Field(1.0, ge=0.2, le=60, description="Seconds between OPTIONS probes")


class FallbackTrunk(_Part):
    """Where external calls go while the cloud is unreachable."""

    uri: ProxyUri
    username: str | None = None
    password: Password | None = None
    caller_id: PhoneNumber | None = None


class LocalMode(_Part):
    """Survivable local mode: how the appliance runs the office while the cloud is unreachable."""

    hold_down: float = Field(
        30.0, ge=0, le=3600, description="Seconds the cloud must answer without a break before failback"
    )
    failback_rate: float = Field(
        50.0, gt=0, le=1000, description="At most this many REGISTER/s toward the cloud after failback"
    )


class SipAccount(_Part):
    user: Text = Field(min_length=1, max_length=64, description="SIP digest user name")
    password: Password


class Forwards(_Part):
    always: TargetRef | None = None
    no_answer: TargetRef | None = None
    no_answer_after: Seconds = 20
    busy: TargetRef | None = None


class Activity(_Part):
    """An activity profile (hänvisning): while active, calls forward per the profile."""

    id: Handle
    name: Name
    number: int = Field(ge=1, le=99, description="Profile number dialled in *24*<number>#")
    default_minutes: int = Field(0, ge=0, le=60 * 24 * 31, description="0 = until further notice")
    forward: TargetRef


class User(_Part):
    id: Handle
    name: Name
    extension: Extension
    direct_number: PhoneNumber | None = None
    mobile: PhoneNumber | None = None
    sip: SipAccount
    forwards: Forwards = Forwards()
    activities: list[Activity] = []
    vip: list[PhoneNumber] = Field([], description="Numbers that ring through an activity")


class Vendor(StrEnum):
    YEALINK = "yealink"
    SNOM = "snom"
    POLY = "poly"
    GRANDSTREAM = "grandstream"
    GIGASET = "gigaset"
    FANVIL = "fanvil"


class Provisioning(_Part):
    """How the appliance configures the phones (all optional; the defaults suit an office)."""

    admin_password: Password | None = Field(
        None, description="Phones' web-UI admin password; without it the web UI stays locked"
    )
    phone_transport: Literal["udp", "tcp", "tls"] = Field(
        "udp",
        description="Phones to the appliance; tls: port 5061, the site CA's certificate (see "
        "provisioning/README.md for which vendors trust it by URL)",
    )
    phone_fallback: ProxyUri | None = Field(
        None,
        description="Where phones register when the appliance itself is down (default: the first "
        "cloud proxy). Yealink, Grandstream and Gigaset use one transport per line, so they fall "
        "back only to an address that speaks phone_transport",
    )
    srtp: Literal["off", "optional", "required"] = "optional"
    recheck_minutes: int = Field(1440, ge=5, le=60 * 24 * 7, description="How often phones re-fetch")
    ntp: list[HostName] = Field(["se.pool.ntp.org"], min_length=1, max_length=2)
    pickup_prefix: str = Field("*80*", pattern=r"^[0-9*#]{1,8}$", description="Directed pickup code")
    group_keys: bool = Field(True, description="Keys to log in to and out of the line user's groups")
    plain_http_secrets: bool = Field(
        False, description="Serve files with SIP passwords over plain HTTP too (default: HTTPS only)"
    )
    firmware: dict[str, FirmwareUrl] = Field(
        {}, description='Firmware URL per model, e.g. { T54W = "https://..." }'
    )
    dect_chain_id: int = Field(
        512,
        ge=1,
        le=99999,
        description="snom DECT multicell: the chain id the site's snom DECT bases share when there "
        "are several; the bases use it as a SIP account, so no extension may equal it",
    )


class Phone(_Part):
    """A desk phone (lines, BLF keys) or a DECT base (one account per handset)."""

    mac: Mac
    type: Literal["desk", "dect"] = "desk"
    vendor: Vendor | None = None
    model: Text | None = Field(None, max_length=40)
    location: Text | None = Field(None, max_length=80)
    lines: list[Handle] = Field([], description="Users on the lines, line 1 first (desk)")
    handsets: list[Handle] = Field([], description="User of handset 1, 2, ... (DECT)")
    blf: list[Handle] = Field([], description="Users shown on busy-lamp keys, in key order")
    primary: bool = Field(
        False,
        description="snom DECT multicell: the primary base (data master), whose file carries every "
        "handset of the site's snom bases; default the first snom DECT base",
    )

    @model_validator(mode="after")
    def _lines_match_type(self) -> "Phone":
        if self.type == "desk":
            if self.handsets:
                raise ValueError('a desk phone has lines, not handsets (or set type = "dect")')
            if not self.lines:
                raise ValueError("a desk phone needs at least one line")
        else:
            if self.lines or self.blf:
                raise ValueError("a DECT base has handsets, not lines or blf keys")
            if not self.handsets:
                raise ValueError("a DECT base needs at least one handset")
        return self


def _member_shorthand(value: Any) -> Any:
    return {"user": value} if isinstance(value, str) else value


class GroupMember(_Part):
    user: Handle
    ring_time: Seconds | None = Field(None, description="Overrides the group's ring time")


class Group(_Part):
    """An answer group (svarsgrupp)."""

    id: Handle
    name: Name
    extension: Extension
    number: PhoneNumber | None = None
    strategy: Literal["parallel", "sequential"] = "parallel"
    members: list[
        Annotated[GroupMember, BeforeValidator(_member_shorthand, json_schema_input_type=str | GroupMember)]
    ] = Field(min_length=1, description='User ids, or tables like { user = "anna", ring_time = 15 }')
    ring_time: Seconds = Field(20, description="Total for parallel, per member for sequential")
    overflow: TargetRef | None = Field(None, description="When nobody answers or is logged in")
    schedule: Handle | None = None
    closed: TargetRef | None = Field(None, description="When the schedule is closed; default overflow")


class Menu(_Part):
    """An IVR menu (knappval). Without media, local mode sends callers to `default`."""

    id: Handle
    name: Name
    options: dict[Annotated[str, Field(pattern=r"^[0-9*#]$")], TargetRef] = {}
    default: TargetRef


class WeeklyHours(_Part):
    mon: list[TimeRange] = []
    tue: list[TimeRange] = []
    wed: list[TimeRange] = []
    thu: list[TimeRange] = []
    fri: list[TimeRange] = []
    sat: list[TimeRange] = []
    sun: list[TimeRange] = []

    def for_weekday(self, weekday: int) -> list[str]:
        return getattr(self, ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[weekday])


class TemporarySchedule(_Part):
    """A period with other hours; without `weekly` the period is closed."""

    first: date = Field(alias="from")
    last: date = Field(alias="to")
    reason: str = ""
    weekly: WeeklyHours | None = None

    @model_validator(mode="after")
    def _ordered(self) -> "TemporarySchedule":
        if self.last < self.first:
            raise ValueError(f"ends ({self.last}) before it starts ({self.first})")
        return self


class Schedule(_Part):
    """Opening hours (öppettider), in the site's time zone."""

    id: Handle
    name: Name
    weekly: WeeklyHours
    public_holidays: bool = Field(True, description="Closed on Swedish public holidays and eves")
    temporary: list[TemporarySchedule] = []


class MainNumber(_Part):
    """The company's main number (växelnummer) and where its calls enter."""

    number: PhoneNumber
    entry: TargetRef


class Site(_Part):
    """A whole office. The TOML file's top-level tables and arrays map to these fields."""

    model_config = ConfigDict(title="Vaxelbox site")

    site: SiteInfo
    cloud: Cloud
    fallback_trunk: FallbackTrunk | None = None
    local: LocalMode = LocalMode()
    main: MainNumber
    users: list[User] = Field(min_length=1)
    groups: list[Group] = []
    menus: list[Menu] = []
    schedules: list[Schedule] = []
    phones: list[Phone] = []
    provisioning: Provisioning = Provisioning()

    def secrets(self) -> list[str]:
        """Every secret value in the site, so logs can redact them wherever they appear."""
        found = [u.sip.password.get_secret_value() for u in self.users]
        if self.fallback_trunk and self.fallback_trunk.password:
            found.append(self.fallback_trunk.password.get_secret_value())
        if self.provisioning.admin_password:
            found.append(self.provisioning.admin_password.get_secret_value())
        return found

    def phone(self, mac: str) -> "Phone | None":
        return next((p for p in self.phones if p.mac == mac), None)

    def dect_chain(self) -> list[Phone]:
        """The snom DECT bases that form the site's multicell chain, the primary first (the one
        marked `primary`, else the first in the file), then the others in file order; empty when
        the site has fewer than two."""
        bases = [p for p in self.phones if p.type == "dect" and p.vendor == Vendor.SNOM]
        if len(bases) < 2:
            return []
        primary = next((p for p in bases if p.primary), bases[0])
        return [primary, *(p for p in bases if p is not primary)]

    def user(self, user_id: str) -> User:
        return next(u for u in self.users if u.id == user_id)

    def summary(self) -> str:
        handsets = sum(len(p.handsets) for p in self.phones)
        return (
            f"users: {len(self.users)}, groups: {len(self.groups)}, phones: {len(self.phones)} "
            f"(DECT handsets: {handsets}), schedules: {len(self.schedules)}"
        )
