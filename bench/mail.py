"""Seeded, realistic agency mail: the same conversations as maildir files or as stored messages.

One generator (`conversations`) decides who writes what when; `render` turns a mail
into the bytes a mail server would store (full headers, ~30 KB multipart body) and
`to_message` into the core `Message` that parsing those bytes would give, for filling
a database directly without an IMAP server or a parser in the way.

The mix: client questions to their account manager (sometimes CC'd to the backup),
answered by the manager or the backup from their Sent folder with In-Reply-To and
References; client follow-ups, a third of them a bare "Thanks, perfect!"; staff
out-of-office auto-replies; internal forwards; newsletters and list mail. Arrival
times are spread over the chosen span; replies come minutes to days later.
"""

from __future__ import annotations

import base64
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from mailwatch.core.model import Copy, Message

AGENCY = "rouge.example"
STAFF = (
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "mallory",
    "oscar",
)
HEAD = "head"
ACCOUNTS = 60
SUBJECTS = (
    "Homepage banner text",
    "Invoice {n} looks wrong",
    "Logo files for the print run",
    "Q{q} campaign brief",
    "Staging login not working",
    "Copy for the new landing page",
    "Analytics access",
    "Hosting renewal",
    "Press release draft",
    "Newsletter template",
    "Meeting next week?",
    "Broken link on the pricing page",
    "Photos from the shoot",
    "Contract renewal {n}",
    "SEO report for {month}",
    "Cookie banner wording",
)
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August")
WORDS = (
    "the campaign page layout client brand update budget review schedule launch please "
    "could you send draft final version attached feedback team meeting thanks regards "
    "deadline approve change colour image text mobile desktop banner invoice report week"
).split()
# What makes a message ~30 KB: a text part, its HTML twin and a base64 signature image.
IMAGE_BYTES = 27_000
IMAGE_POOL = 32
LISTS = ("design-weekly", "industry-news", "tools-updates")


@dataclass(frozen=True)
class Account:
    name: str
    domain: str
    contacts: tuple[str, ...]
    manager: str
    backup: str


@dataclass
class Mail:
    """One message and where the agency's server keeps it."""

    key: str
    sender: str  # "Name <addr>"
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    arrived: datetime  # INTERNALDATE of the copy
    owner: str  # the staff mailbox (local part) holding the copy
    folder: str  # INBOX or Sent
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    extra: tuple[tuple[str, str], ...] = ()  # rule headers: Auto-Submitted, List-Id …
    text: str = ""
    courtesy: bool = False
    inbound: bool = True  # came from outside through the MX (has a Received line)
    copies: list[tuple[str, str]] = field(default_factory=list)  # more (owner, folder)


def staff_address(name: str) -> str:
    return f"{name}@{AGENCY}"


def display(address: str) -> str:
    local, domain = address.split("@")
    return f"{local.replace('.', ' ').title()} <{address}>"


def accounts() -> list[Account]:
    rng = random.Random(7)
    found = []
    for number in range(ACCOUNTS):
        manager, backup = rng.sample(STAFF, 2)
        domain = f"client{number:02d}.example"
        contacts = tuple(f"{first}@{domain}" for first in ("jane.doe", "tom.baker", "lisa.park"))
        found.append(Account(f"Client {number:02d}", domain, contacts, manager, backup))
    return found


def conversations(
    count: int, seed: int, start: datetime, end: datetime, owner: str | None = None
) -> Iterator[Mail]:
    """About `count` mails arriving in [start, end), in thread order (not arrival order).

    With `owner`, every conversation involves that one staff mailbox (for seeding one
    IMAP account); without, conversations spread over all staff mailboxes.
    """
    rng = random.Random(seed)
    clients = accounts()
    made = 0
    span = (end - start).total_seconds()
    thread = 0
    while made < count:
        thread += 1
        at = start + timedelta(seconds=rng.random() * span * 0.98)
        roll = rng.random()
        if roll < 0.12:
            mails = [newsletter(rng, thread, at, owner or rng.choice(STAFF))]
        elif roll < 0.18:
            mails = internal(rng, thread, at, owner)
        else:
            account = rng.choice(clients)
            if owner is not None:
                backup = account.backup if account.backup != owner else account.manager
                account = Account(account.name, account.domain, account.contacts, owner, backup)
            mails = client_thread(rng, thread, at, account)
        for mail in mails:
            if mail.arrived < end and made < count:
                made += 1 + (0 if owner else len(mail.copies))
                yield mail


def client_thread(rng: random.Random, thread: int, at: datetime, account: Account) -> list[Mail]:
    client = rng.choice(account.contacts)
    subject = rng.choice(SUBJECTS).format(
        n=rng.randint(1000, 9999), q=rng.randint(1, 4), month=rng.choice(MONTHS)
    )
    manager, backup = staff_address(account.manager), staff_address(account.backup)
    cc = (backup,) if rng.random() < 0.2 else ()
    first = Mail(
        f"<t{thread}.1.{at:%Y%m%d%H%M%S}@{account.domain}>",
        display(client),
        (manager,),
        cc,
        subject,
        at,
        account.manager,
        "INBOX",
        text=words(rng, 120),
    )
    if cc:
        first.copies.append((account.backup, "INBOX"))
    mails = [first]
    if rng.random() < 0.08:
        mails.append(auto_reply(mails[-1], account.manager, at + timedelta(seconds=20)))
    rounds = 1 + (rng.random() < 0.45) + (rng.random() < 0.15)
    last = first
    for number in range(rounds):
        if rng.random() < 0.07:  # never answered
            break
        replier = account.manager if rng.random() < 0.85 else account.backup
        at = last.arrived + timedelta(hours=rng.lognormvariate(1.0, 1.2))
        reply = follow(
            last,
            len(mails) + 1,
            display(staff_address(replier)),
            (client,),
            at,
            replier,
            "Sent",
            rng,
            inbound=False,
        )
        mails.append(reply)
        if number == rounds - 1 and rng.random() > 0.35:
            break
        at += timedelta(hours=rng.lognormvariate(1.5, 1.0))
        thanks = rng.random() < 0.35
        last = follow(
            reply,
            len(mails) + 1,
            display(client),
            (manager,),
            at,
            account.manager,
            "INBOX",
            rng,
            thanks=thanks,
        )
        mails.append(last)
        if thanks:
            break
    if rng.random() < 0.1:  # an internal forward of the question to a colleague
        at = first.arrived + timedelta(minutes=rng.randint(5, 90))
        colleague = staff_address(rng.choice(STAFF))
        forward = follow(
            first,
            len(mails) + 1,
            display(manager),
            (colleague,),
            at,
            account.manager,
            "Sent",
            rng,
            inbound=False,
        )
        forward.subject = f"Fwd: {subject}"
        mails.append(forward)
    return mails


def follow(
    parent: Mail,
    number: int,
    sender: str,
    to: tuple[str, ...],
    at: datetime,
    owner: str,
    folder: str,
    rng: random.Random,
    *,
    inbound: bool = True,
    thanks: bool = False,
) -> Mail:
    domain = sender.rsplit("@", 1)[1].rstrip(">")
    base = parent.subject.removeprefix("Re: ")
    return Mail(
        f"<t{parent.key[2:].split('.')[0]}.{number}.{at:%Y%m%d%H%M%S}@{domain}>",
        sender,
        to,
        (),
        f"Re: {base}",
        at,
        owner,
        folder,
        in_reply_to=parent.key,
        references=(*parent.references, parent.key)[-20:],
        text="Thanks, perfect!" if thanks else words(rng, 90),
        courtesy=thanks,
        inbound=inbound,
    )


def auto_reply(question: Mail, owner: str, at: datetime) -> Mail:
    address = staff_address(owner)
    return Mail(
        f"<auto.{question.key[1:-1].replace('@', '.')}@{AGENCY}>",
        display(address),
        (question.sender,),
        (),
        f"Automatic reply: {question.subject}",
        at,
        owner,
        "Sent",
        in_reply_to=question.key,
        references=(question.key,),
        extra=(("Auto-Submitted", "auto-replied"), ("X-Autoreply", "yes")),
        text="I am out of the office until Monday.",
        inbound=False,
    )


def newsletter(rng: random.Random, thread: int, at: datetime, owner: str) -> Mail:
    name = rng.choice(LISTS)
    return Mail(
        f"<n{thread}.{at:%Y%m%d%H%M%S}@lists.{name}.example>",
        f"{name.replace('-', ' ').title()} <news@lists.{name}.example>",
        (staff_address(owner),),
        (),
        f"{name.replace('-', ' ').title()}: issue {thread % 500}",
        at,
        owner,
        "INBOX",
        extra=(
            ("List-Id", f"<{name}.lists.{name}.example>"),
            ("Precedence", "bulk"),
            ("List-Unsubscribe", f"<mailto:leave@lists.{name}.example>"),
        ),
        text=words(rng, 150),
    )


def internal(rng: random.Random, thread: int, at: datetime, owner: str | None) -> list[Mail]:
    writer, reader = rng.sample(STAFF, 2)
    if owner is not None:
        writer = owner
    question = Mail(
        f"<i{thread}.1.{at:%Y%m%d%H%M%S}@{AGENCY}>",
        display(staff_address(writer)),
        (staff_address(reader),),
        (),
        "Lunch on Friday?",
        at,
        writer,
        "Sent",
        text=words(rng, 40),
        inbound=False,
    )
    if owner is None:
        question.copies.append((reader, "INBOX"))
    return [question]


def words(rng: random.Random, count: int) -> str:
    chosen = rng.choices(WORDS, k=count)
    return " ".join(chosen).capitalize() + "."


# ---------------------------------------------------------------- bytes


def _images() -> list[str]:
    rng = random.Random(3)
    blobs = []
    for _ in range(IMAGE_POOL):
        data = base64.encodebytes(rng.randbytes(IMAGE_BYTES * 3 // 4)).decode()
        blobs.append(data)
    return blobs


_IMAGES = _images()


def render(mail: Mail) -> bytes:
    """The message as the agency's server stores it: LF line ends, ~30 KB."""
    date = format_datetime((mail.arrived - timedelta(seconds=5)).astimezone(UTC))
    received = format_datetime(mail.arrived.astimezone(UTC))
    sender_addr = mail.sender.rsplit("<", 1)[1].rstrip(">")
    sender_domain = sender_addr.split("@")[1]
    number = zlib.crc32(mail.key.encode())
    lines = [f"Return-Path: <{sender_addr}>", f"Delivered-To: {staff_address(mail.owner)}"]
    if mail.inbound:
        lines += [
            f"Received: from mail.{sender_domain} (mail.{sender_domain} [192.0.2.{number % 250}])"
            f"\n\tby mx.{AGENCY} (Postfix) with ESMTPS id {number % 10**10:010X}"
            f"\n\tfor <{staff_address(mail.owner)}>; {received}",
            f"Received: from [10.0.{number % 200}.{number % 97}] (unknown [198.51.100.7])"
            f"\n\tby mail.{sender_domain} (Postfix) with ESMTPSA id {number % 10**9:09X}; {date}",
            f"Authentication-Results: mx.{AGENCY}; dkim=pass header.d={sender_domain};"
            f"\n\tspf=pass smtp.mailfrom={sender_addr}; dmarc=pass header.from={sender_domain}",
        ]
    lines += [
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={sender_domain}; s=s1;"
        f"\n\th=from:to:subject:date:message-id; bh={_IMAGES[number % IMAGE_POOL][:44]}"
        f"\n\tb={_IMAGES[(number + 1) % IMAGE_POOL][:340].replace(chr(10), '')}",
        f"Message-ID: {mail.key}",
        f"Date: {date}",
        f"From: {mail.sender}",
        f"To: {', '.join(display(a) if '<' not in a else a for a in mail.to)}",
    ]
    if mail.cc:
        lines.append(f"Cc: {', '.join(display(a) for a in mail.cc)}")
    lines.append(f"Subject: {mail.subject}")
    if mail.in_reply_to:
        lines.append(f"In-Reply-To: {mail.in_reply_to}")
        lines.append("References: " + "\n\t".join(mail.references))
    lines += [f"{name}: {value}" for name, value in mail.extra]
    boundary = _boundary(mail)
    lines += [
        "MIME-Version: 1.0",
        "X-Mailer: Microsoft Outlook 16.0" if number % 3 == 0 else "User-Agent: Thunderbird",
        f'Content-Type: multipart/related; boundary="{boundary}"',
    ]
    html = "".join(f"<p>{sentence}.</p>\n" for sentence in mail.text.split(". "))
    image = _IMAGES[number % IMAGE_POOL]
    body = (
        f"--{boundary}\nContent-Type: text/plain; charset=utf-8\n\n{mail.text}\n\n-- \n"
        f"{mail.sender}\n\n--{boundary}\nContent-Type: text/html; charset=utf-8\n\n"
        f'<html><body>{html}<img src="cid:logo"></body></html>\n\n--{boundary}\n'
        f"Content-Type: image/png\nContent-ID: <logo>\nContent-Transfer-Encoding: base64\n\n"
        f"{image}\n--{boundary}--\n"
    )
    return ("\n".join(lines) + "\n\n" + body).encode()


def _boundary(mail: Mail) -> str:
    return f"=_b{zlib.crc32(mail.key.encode())}"


# ---------------------------------------------------------------- core messages


def to_message(mail: Mail) -> Message:
    """The core Message (without copies) that parsing `render(mail)` yields."""
    sender_addr = mail.sender.rsplit("<", 1)[1].rstrip(">")
    name = mail.sender.rsplit("<", 1)[0].strip()
    date = (mail.arrived - timedelta(seconds=5)).replace(microsecond=0)
    headers = (
        ("return-path", f"<{sender_addr}>"),
        *((name.lower(), value) for name, value in mail.extra),
        ("content-type", f'multipart/related; boundary="{_boundary(mail)}"'),
    )
    return Message(
        key=mail.key,
        from_addr=sender_addr,
        from_name=name,
        to=tuple(a.rsplit("<", 1)[-1].rstrip(">") for a in mail.to),
        cc=mail.cc,
        subject=mail.subject,
        date=date,
        received_time=mail.arrived.replace(microsecond=0) if mail.inbound else None,
        in_reply_to=(mail.in_reply_to,) if mail.in_reply_to else (),
        references=mail.references,
        headers=headers,
        courtesy=mail.courtesy,
    )


def copies_of(mail: Mail) -> list[Copy]:
    where = [(mail.owner, mail.folder), *mail.copies]
    return [
        Copy(
            mailbox=owner,
            folder=folder,
            sent_folder=folder == "Sent",
            internal_date=mail.arrived + timedelta(seconds=2 * n),
        )
        for n, (owner, folder) in enumerate(where)
    ]
