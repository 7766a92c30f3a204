"""Who is who: staff, client (of which account), or other.

Matching is on the addr-spec only, case-insensitive, with a `+tag` ignored.
An exact listing (a `[[staff]]` email or alias, an account's `addresses`)
beats any domain rule; among domain rules the longest domain wins.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailwatch.core.model import Account, Policy, Role


def normalise_address(address: str) -> str:
    """`Alice+Acme@Example.COM` -> `alice@example.com`."""
    address = address.strip().lower()
    local, at, domain = address.rpartition("@")
    if not at:
        return address
    local = local.split("+", 1)[0]
    return f"{local}@{domain}"


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


@dataclass(frozen=True)
class Identity:
    role: Role
    account: str | None = None  # for clients
    staff_email: str | None = None  # for listed staff: their main address


class Directory:
    """Answers "who is this address?" for one configuration."""

    def __init__(self, policy: Policy):
        self._exact: dict[str, Identity] = {}
        for member in policy.staff:
            main = normalise_address(member.email)
            for address in (member.email, *member.aliases):
                self._exact[normalise_address(address)] = Identity(Role.STAFF, staff_email=main)
        for account in policy.accounts:
            for address in account.addresses:
                self._exact.setdefault(
                    normalise_address(address), Identity(Role.CLIENT, account=account.name)
                )
        # (domain, identity) pairs; a client domain also covers its subdomains.
        self._agency_domains = {d.lower() for d in policy.agency_domains}
        self._client_domains: dict[str, str] = {}
        for account in policy.accounts:
            for domain in account.domains:
                self._client_domains.setdefault(domain.lower(), account.name)
        self._accounts = {account.name: account for account in policy.accounts}
        self._cache: dict[str, Identity] = {}

    def identify(self, address: str | None) -> Identity:
        if not address:
            return Identity(Role.OTHER)
        # cached by the address as written: threading years of mail asks ~5 times a message
        found = self._cache.get(address)
        if found is None:
            found = self._identify(normalise_address(address))
            self._cache[address] = found
        return found

    def _identify(self, address: str) -> Identity:
        if address in self._exact:
            return self._exact[address]
        domain = domain_of(address)
        best: tuple[int, Identity] | None = None
        if domain in self._agency_domains:
            best = (len(domain), Identity(Role.STAFF))
        for client_domain, account in self._client_domains.items():
            if domain == client_domain or domain.endswith("." + client_domain):
                # a tie between an agency and a client domain goes to the client:
                # the safer side, since mailwatch never writes to clients
                if best is None or len(client_domain) >= best[0]:
                    best = (len(client_domain), Identity(Role.CLIENT, account=account))
        return best[1] if best else Identity(Role.OTHER)

    def role(self, address: str | None) -> Role:
        return self.identify(address).role

    def account_of(self, address: str | None) -> str | None:
        return self.identify(address).account

    def is_listed_staff(self, address: str | None) -> bool:
        return self.identify(address).staff_email is not None

    def staff_main_address(self, address: str) -> str:
        """A staff alias maps to its `[[staff]]` email; other staff addresses stay as they are."""
        identity = self.identify(address)
        return identity.staff_email or normalise_address(address)

    def account(self, name: str) -> Account:
        return self._accounts[name]

    def accounts_addressed(self, addresses: tuple[str, ...]) -> set[str]:
        return {a for a in (self.account_of(x) for x in addresses) if a is not None}
