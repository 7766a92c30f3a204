"""The agency's policy from the file: [agency], [sla], [[staff]], [[accounts]], [[leave]],
[automation], [threading] and [nudges], cross-checked and turned into a core `Policy`."""

from __future__ import annotations

import functools
import re
from collections.abc import Container
from datetime import date
from importlib import resources

import holidays

from mailwatch.config.reader import Reader
from mailwatch.core.model import (
    Account,
    BusinessHours,
    Leave,
    NudgePolicy,
    NudgeStage,
    Policy,
    StaffMember,
    Tier,
)

_DEFAULT_POLICY = Policy()
_STANDARD_TIER = "standard"  # the tier of mail that no [[sla.tiers]] entry matches


def build_policy(root: Reader) -> Policy:
    agency = root.table("agency")
    timezone = agency.timezone("timezone")
    agency_domains = agency.domains("domains")
    for index, domain in enumerate(agency_domains):
        _refuse_public_domain(agency, f"domains[{index}]", domain)
    staff = _staff(root)
    people = _People(agency_domains, staff)
    head = tuple(
        people.require(agency, f"head_of_client_management[{index}]", address)
        for index, address in enumerate(agency.addresses("head_of_client_management"))
    )
    directors = tuple(
        people.require(agency, f"directors[{index}]", address)
        for index, address in enumerate(agency.addresses("directors"))
    )
    sla = root.table("sla")
    hours = _business_hours(sla.table("business_hours"), BusinessHours(timezone=timezone))
    tiers = _tiers(sla)
    automation = root.table("automation")
    threading = root.table("threading")
    return Policy(
        agency_domains=agency_domains,
        timezone=timezone,
        staff=staff,
        accounts=_accounts(root, people, hours),
        head_of_client_management=head,
        directors=directors,
        target=sla.duration("target", _DEFAULT_POLICY.target),
        clock=sla.clock("clock", _DEFAULT_POLICY.clock),
        business_hours=hours,
        tiers=tiers,
        request_expiry=sla.duration("request_expiry", _DEFAULT_POLICY.request_expiry),
        subject_window=threading.duration("subject_window", _DEFAULT_POLICY.subject_window),
        generic_subjects=frozenset(
            subject.strip().lower()
            for subject in threading.texts("generic_subjects", _DEFAULT_POLICY.generic_subjects)
        ),
        human_lists=tuple(_list_id(value) for value in automation.texts("human_lists", ())),
        courtesy=automation.boolean("courtesy", _DEFAULT_POLICY.courtesy),
        leave=_leave(root, people),
        nudges=_nudges(root.table("nudges"), {tier.name for tier in tiers}),
    )


class _People:
    """Who counts as staff while the file is read: [[staff]] addresses and agency domains."""

    def __init__(self, agency_domains: tuple[str, ...], staff: tuple[StaffMember, ...]) -> None:
        self.agency_domains = frozenset(agency_domains)
        self.listed = {
            address: member.email for member in staff for address in (member.email, *member.aliases)
        }

    def staff_address(self, address: str) -> str | None:
        """The staff member's main address (an alias maps to its email), or None."""
        if address in self.listed:
            return self.listed[address]
        return address if address.rpartition("@")[2] in self.agency_domains else None

    def require(self, reader: Reader, key: str, address: str) -> str:
        main = self.staff_address(address)
        if main is None:
            raise reader.error(
                key, f"not a staff address: {address} (list it under [[staff]] or agency.domains)"
            )
        return main


@functools.cache
def public_mail_domains() -> frozenset[str]:
    """The large public mail providers, whose domains never identify one client or agency."""
    listing = resources.files("mailwatch").joinpath("data/public_mail_domains.txt")
    lines = (line.strip().lower() for line in listing.read_text(encoding="utf-8").splitlines())
    return frozenset(line for line in lines if line and not line.startswith("#"))


def _refuse_public_domain(reader: Reader, key: str, domain: str) -> None:
    if domain in public_mail_domains():
        raise reader.error(
            key,
            f"{domain} is a public mail provider: list those people's exact addresses instead",
        )


def _staff(root: Reader) -> tuple[StaffMember, ...]:
    members = []
    listed_at: dict[str, str] = {}
    for entry in root.tables("staff"):
        email = entry.address("email")
        aliases = entry.addresses("aliases")
        keyed = [("email", email), *((f"aliases[{i}]", alias) for i, alias in enumerate(aliases))]
        for key, address in keyed:
            if address in listed_at:
                raise entry.error(key, f"{address} is already listed in {listed_at[address]}")
            listed_at[address] = entry.path
        members.append(
            StaffMember(
                email=email,
                name=entry.text("name", ""),
                aliases=aliases,
                timezone=entry.timezone("timezone", None),
            )
        )
    return tuple(members)


def _business_hours(reader: Reader, base: BusinessHours) -> BusinessHours:
    """Hours from a table; keys it leaves out come from `base` (accounts inherit the agency's)."""
    timezone = reader.timezone("timezone", base.timezone)
    days = reader.weekdays("days", base.days)
    start = reader.clock_time("start", base.start)
    end = reader.clock_time("end", base.end)
    if end <= start:
        raise reader.error(
            "end" if reader.has("end") else "start",
            f"hours end ({end:%H:%M}) before they start ({start:%H:%M})",
        )
    return BusinessHours(
        timezone=timezone,
        days=days,
        start=start,
        end=end,
        holidays=_holidays(reader, base.holidays),
        closed=reader.days("closed", base.closed),
    )


def _holidays(reader: Reader, default: Container[date]) -> Container[date]:
    name = reader.text("holidays", None)
    if name is None:
        return default
    country, _, subdivision = name.upper().partition("-")
    # Check against the library's own list: it looks codes up as module attributes,
    # so an unlisted one can resolve to something that is not a country at all.
    subdivisions = holidays.list_supported_countries().get(country)
    if subdivisions is None or (subdivision and subdivision not in subdivisions):
        raise reader.error(
            "holidays", f"unknown country or subdivision {name!r} (e.g. GB-ENG, US-NY, FR)"
        )
    return holidays.country_holidays(country, subdiv=subdivision or None)


def _tiers(sla: Reader) -> tuple[Tier, ...]:
    tiers: list[Tier] = []
    for entry in sla.tables("tiers"):
        name = entry.text("name")
        if name == _STANDARD_TIER or name in {tier.name for tier in tiers}:
            raise entry.error("name", f"tier name {name!r} is taken")
        target = entry.duration("target")
        patterns = entry.texts("subject", ())
        for index, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except re.error as error:
                raise entry.error(
                    f"subject[{index}]", f"invalid regular expression: {error}"
                ) from None
        high_priority = entry.boolean("high_priority", False)
        if not patterns and not high_priority:
            raise entry.error(None, "a tier needs subject patterns or high_priority = true")
        clock = entry.clock("clock", None)
        directors_after = entry.duration("directors_after", None)
        tiers.append(Tier(name, target, patterns, high_priority, clock, directors_after))
    return tuple(tiers)


def _accounts(root: Reader, people: _People, agency_hours: BusinessHours) -> tuple[Account, ...]:
    accounts: list[Account] = []
    owner: dict[str, str] = {}  # a domain or listed address -> the account it belongs to
    for entry in root.tables("accounts"):
        name = entry.text("name")
        if name in {account.name for account in accounts}:
            raise entry.error("name", f"two accounts are named {name!r}")
        accounts.append(_account(entry, name, people, agency_hours, owner))
    return tuple(accounts)


def _account(
    entry: Reader,
    name: str,
    people: _People,
    agency_hours: BusinessHours,
    owner: dict[str, str],
) -> Account:
    domains = entry.domains("domains")
    addresses = entry.addresses("addresses")
    if not domains and not addresses:
        raise entry.error(None, "an account needs domains or addresses")
    _claim_domains(entry, name, domains, people, owner)
    _claim_addresses(entry, name, addresses, people, owner)
    manager = entry.address("manager", None)
    backups = entry.addresses("backups")
    return Account(
        name=name,
        domains=domains,
        addresses=addresses,
        manager=manager and people.require(entry, "manager", manager),
        backups=tuple(
            people.require(entry, f"backups[{index}]", backup)
            for index, backup in enumerate(backups)
        ),
        target=entry.duration("target", None),
        clock=entry.clock("clock", None),
        business_hours=(
            _business_hours(entry.table("business_hours"), agency_hours)
            if entry.has("business_hours")
            else None
        ),
    )


def _claim_domains(
    entry: Reader, name: str, domains: tuple[str, ...], people: _People, owner: dict[str, str]
) -> None:
    """A domain belongs to one account, and never to the agency or a public provider."""
    for index, domain in enumerate(domains):
        key = f"domains[{index}]"
        _refuse_public_domain(entry, key, domain)
        if domain in people.agency_domains:
            raise entry.error(key, f"{domain} is an agency domain")
        if domain in owner:
            raise entry.error(key, f"{domain} is already a domain of account {owner[domain]!r}")
        owner[domain] = name


def _claim_addresses(
    entry: Reader, name: str, addresses: tuple[str, ...], people: _People, owner: dict[str, str]
) -> None:
    """A listed address belongs to one account, and never to a member of staff."""
    for index, address in enumerate(addresses):
        key = f"addresses[{index}]"
        if address in people.listed:
            raise entry.error(key, f"{address} is listed as staff too")
        if address in owner:
            raise entry.error(key, f"{address} is already listed in account {owner[address]!r}")
        owner[address] = name


def _leave(root: Reader, people: _People) -> tuple[Leave, ...]:
    leave = []
    for entry in root.tables("leave"):
        who = people.require(entry, "who", entry.address("who"))
        start = entry.day("start")
        end = entry.day("end")
        if end < start:
            raise entry.error("end", f"leave ends ({end}) before it starts ({start})")
        leave.append(Leave(who, start, end))
    return tuple(leave)


def _list_id(value: str) -> str:
    """`Support <support.acme.example>` and `support.acme.example` name the same list."""
    bracketed = re.search(r"<([^<>]+)>", value)
    return (bracketed[1] if bracketed else value).strip().lower()


_NOTIFY = ("manager", "backups", "head")


def _nudges(nudges: Reader, tier_names: set[str]) -> NudgePolicy:
    default = NudgePolicy()
    critical = nudges.texts("critical_tiers", default.critical_tiers)
    if nudges.has("critical_tiers"):
        for index, name in enumerate(critical):
            if name not in tier_names:
                raise nudges.error(f"critical_tiers[{index}]", f"no [[sla.tiers]] named {name!r}")
    quiet = nudges.table("quiet_hours")
    return NudgePolicy(
        enabled=nudges.boolean("enabled", default.enabled),
        stages=_stages(nudges, default.stages),
        quiet_start=quiet.clock_time("start", default.quiet_start),
        quiet_end=quiet.clock_time("end", default.quiet_end),
        quiet_weekends=quiet.boolean("weekends", default.quiet_weekends),
        critical_tiers=critical,
        max_lateness=nudges.duration("max_lateness", default.max_lateness),
        still_waiting_at=nudges.clock_time("still_waiting_at", default.still_waiting_at),
        head_overdue_after=nudges.duration("head_overdue_after", default.head_overdue_after),
        directors_after=nudges.duration("directors_after", default.directors_after),
    )


def _stages(nudges: Reader, default: tuple[NudgeStage, ...]) -> tuple[NudgeStage, ...]:
    if not nudges.has("stages"):
        return default
    entries = nudges.tables("stages")
    if not entries:
        raise nudges.error("stages", "needs a stage (to send no nudges: enabled = false)")
    stages: list[NudgeStage] = []
    for entry in entries:
        name = entry.text("name")
        if name in {stage.name for stage in stages}:
            raise entry.error("name", f"two stages are named {name!r}")
        at = entry.fraction("at")
        if stages and at <= stages[-1].at:
            raise entry.error("at", f"stages go in rising order: {at:g} follows {stages[-1].at:g}")
        notify = entry.texts("notify")
        if not notify:
            raise entry.error("notify", "needs one or more of manager, backups, head")
        for index, who in enumerate(notify):
            if who not in _NOTIFY:
                raise entry.error(f"notify[{index}]", f"expected manager, backups or head: {who!r}")
        stages.append(NudgeStage(name, at, notify))
    return tuple(stages)
