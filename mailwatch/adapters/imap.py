"""Read-only IMAP access: folders, new message headers, waive keywords.

The only module that talks to imapclient (`fetch_response.py` parses the sync's FETCH
responses, with imapclient's parser as its fallback). It never changes a mailbox: folders
are opened with EXAMINE and bodies are only ever fetched with BODY.PEEK, so
\\Seen and every other flag stay exactly as the user left them.

Failures leave this module as `MailboxError(message, permanent)`: a refused
login or an untrusted certificate will not fix itself (permanent); a refused,
reset or timed-out connection will (temporary).

`OpenFolder.wait_for_new_mail` waits with IMAP IDLE (RFC 2177) on a folder opened
with EXAMINE, so it too changes nothing; the daemon uses it on INBOX, on a
connection of its own, to poll as soon as mail arrives.
"""

from __future__ import annotations

import functools
import selectors
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError
from imapclient.util import to_unicode

from mailwatch.adapters.fetch_response import parse_fetch
from mailwatch.adapters.oauth import OAuthError, access_token, discard_token, refused_token_fix
from mailwatch.adapters.parse import BODY_PREFIX_BYTES, HEADER_FIELDS
from mailwatch.core.model import Checkpoint

if TYPE_CHECKING:
    from pathlib import Path
    from threading import Event

    from mailwatch.config import MailboxSettings

CONNECT_TIMEOUT = 15.0
HEADER_ITEM = f"BODY.PEEK[HEADER.FIELDS ({' '.join(HEADER_FIELDS)})]"
# Servers echo the item without ".PEEK"; imapclient upper-cases it.
HEADER_KEY = f"BODY[HEADER.FIELDS ({' '.join(HEADER_FIELDS)})]".upper().encode()
# The start of the body, only so the parser can tell a "thanks!"-only message;
# the decision is stored, the text is not.
BODY_PREFIX_ITEM = f"BODY.PEEK[TEXT]<0.{BODY_PREFIX_BYTES}>"
BODY_PREFIX_KEY = b"BODY[TEXT]<0>"
GMAIL = b"X-GM-EXT-1"
# Folders whose mail is never a conversation with a client (RFC 6154 attributes). Junk is
# watched (interface.md): a client's email caught by a spam filter still waits for a reply.
SKIPPED_USES = (b"\\Trash", b"\\Drafts")
UNSELECTABLE = (b"\\Noselect", b"\\NonExistent")
# Sent folders of servers without SPECIAL-USE (Outlook/Exchange, cPanel's Courier
# and Dovecot with the INBOX. prefix, Gmail's well-known name); compared lower-cased.
SENT_NAMES = (
    *("[gmail]/sent mail", "[google mail]/sent mail"),
    *("sent", "sent items", "sent messages", "sent mail"),
    *("inbox.sent", "inbox/sent", "inbox.sent items", "inbox.sent messages"),
    *("gesendete elemente", "gesendet", "éléments envoyés", "envoyés"),
    *("elementos enviados", "enviados", "verzonden items", "posta inviata", "inviati"),
)
# Without CONDSTORE, flag changes cannot be asked for: re-read the flags of this
# much recent mail instead (a waiver is set on mail that is days old, not months).
KEYWORD_RESCAN = timedelta(days=30)
# RFC 2177 has clients renew IDLE at least every 29 minutes; imapclient advises every 10.
IDLE_RENEW = 9 * 60.0  # seconds
# While idling, how often the stop event is looked at: the daemon stops within this.
STOP_CHECK = 0.5  # seconds
NEW_MAIL = (b"EXISTS", b"RECENT")
# One message's items as imapclient's fetch() returns them: {b"FLAGS": (...), ...}.
FetchData = dict[bytes, Any]


class MailboxError(Exception):
    """A mailbox could not be read; `permanent` failures need a person to fix them."""

    def __init__(self, message: str, permanent: bool) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


class FolderError(MailboxError):
    """The server refused a command (NO/BAD) but the connection is fine: skip that folder."""


class IdleUnsupported(MailboxError):
    """The server does not offer IDLE: new mail is only seen by polling."""


@dataclass(frozen=True)
class Folder:
    name: str
    sent: bool = False  # the mailbox's Sent folder: copies in it were sent by its owner
    waive: bool = False  # the waive folder: a copy in it waives the client message
    gmail_all: bool = False  # Gmail's \All: Sent and waive label come from X-GM-LABELS
    waive_label: str | None = None  # in Gmail's \All: the label that waives


@dataclass(frozen=True)
class FolderStatus:
    uidvalidity: int
    uidnext: int
    highestmodseq: int | None


@dataclass(frozen=True)
class FetchedMessage:
    uid: int
    raw_headers: bytes
    internal_date: datetime  # UTC
    size: int
    flags: tuple[str, ...]
    sent: bool  # in the Sent folder, or labelled \Sent in Gmail's \All
    waive_folder: bool  # in the waive folder, or carrying the waive label in Gmail's \All
    gm_thrid: str | None = None


@dataclass(frozen=True)
class Batch:
    """Fetched messages and the checkpoint that holds once they are stored."""

    messages: tuple[FetchedMessage, ...]
    checkpoint: Checkpoint
    done: int = 0  # of the new UIDs of this pass, how many are fetched with this batch
    total: int = 0  # how many new UIDs this pass fetches


@dataclass(frozen=True)
class KeywordScan:
    """Of the already-synced UIDs whose flags were read, those carrying the waive keyword."""

    checked_uids: frozenset[int]
    flagged_uids: frozenset[int]


def describe_security(settings: MailboxSettings) -> str:
    return {"ssl": "TLS", "starttls": "STARTTLS", "none": "no encryption"}[settings.security]


@contextmanager
def mailbox_errors(settings: MailboxSettings) -> Iterator[None]:
    """Translate every failure into a one-line MailboxError that names the fix, never a secret."""
    where = f"{settings.name}: {settings.host}:{settings.port}"
    try:
        yield
    except MailboxError:
        raise
    except OAuthError as error:
        raise MailboxError(f"{settings.name}: {error.message}", error.permanent) from None
    except LoginError as error:
        raise MailboxError(login_refused(settings, error), permanent=True) from None
    except ssl.SSLCertVerificationError as error:
        raise MailboxError(
            f"{where}: TLS certificate not trusted ({error.verify_message}): set ca_file to the "
            "certificate authority that signed it, or give the server a trusted certificate",
            permanent=True,
        ) from None
    except ssl.SSLError as error:
        raise MailboxError(
            f"{where}: TLS failed ({error.reason or error}): check port and security "
            f"({describe_security(settings)})",
            permanent=False,
        ) from None
    except IMAPClientAbortError as error:
        raise MailboxError(f"{where}: connection lost: {error}", permanent=False) from None
    except IMAPClientError as error:
        if "AUTHENTICATIONFAILED" in str(error).upper():
            raise MailboxError(login_refused(settings, error), permanent=True) from None
        raise FolderError(f"{where}: server said: {server_words(error)}", permanent=False) from None
    except TimeoutError:
        raise MailboxError(f"{where}: timed out", permanent=False) from None
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise MailboxError(f"{where}: {reason.lower()}", permanent=False) from None


def login_refused(settings: MailboxSettings, error: Exception) -> str:
    """ "alice: login refused by imap.example: check the password (password_env X)": where the
    secret comes from, never its value; the server's words after it (they never echo it)."""
    said = server_words(error)
    if settings.oauth2 is not None:
        # A token that was granted and then refused: the mailbox's permissions are wrong.
        discard_token(settings.oauth2, settings.username)
        return (
            f"{settings.name}: login refused by {settings.host}: "
            f"{refused_token_fix(settings.oauth2, settings.username, 'IMAP')}"
            + (f": server said {said}" if said else "")
        )
    key, secret = (
        ("oauth2_token", settings.oauth2_token)
        if settings.oauth2_token is not None
        else ("password", settings.password)
    )
    what = "the OAuth2 token" if key == "oauth2_token" else "the password"
    kind, _, where = str(secret).partition(" ")
    return (
        f"{settings.name}: login refused by {settings.host}: check {what} "
        f"({key}_{kind} {where})" + (f": server said {said}" if said else "")
    )


def server_words(error: Exception) -> str:
    text = str(error).strip()
    # imapclient formats server responses as bytes reprs: "b'[AUTHENTICATIONFAILED] ...'".
    if text[:2] in ("b'", 'b"') and text[-1:] == text[1]:
        text = text[2:-1]
    return text


class ImapMailbox:
    """One logged-in, read-only connection to a mailbox. Use `connect()` to open one."""

    def __init__(self, settings: MailboxSettings, client: IMAPClient) -> None:
        self.settings = settings
        self._client = client
        self.capabilities = frozenset(client.capabilities())
        self.condstore = b"CONDSTORE" in self.capabilities
        self.gmail = GMAIL in self.capabilities

    # ---------------------------------------------------------------- folders

    def folders(self, waive_folder: str | None) -> list[Folder]:
        """The folders to watch: the configured ones, else all that can hold client mail."""
        with mailbox_errors(self.settings):
            listed = self._client.list_folders()
        selectable = [
            (tuple(flags), name)
            for flags, _, name in listed
            if not any(flag in UNSELECTABLE for flag in flags)
        ]
        sent_name = find_sent(selectable)
        if self.settings.folders is not None:
            names = list(self.settings.folders)
        elif self.gmail:
            # Gmail labels show one message in many folders; \All holds each exactly once,
            # but for spam and trash: Spam (\Junk) is watched beside it, as elsewhere.
            names = [name for flags, name in selectable if b"\\All" in flags or b"\\Junk" in flags]
        else:
            names = [
                name
                for flags, name in selectable
                if not any(flag in SKIPPED_USES for flag in flags)
            ]
        all_mail = {name for flags, name in selectable if b"\\All" in flags}
        return [
            Folder(
                name,
                sent=name == sent_name,
                waive=waive_folder is not None and name == waive_folder,
                gmail_all=self.gmail and name in all_mail,
                waive_label=waive_folder if self.gmail and name in all_mail else None,
            )
            for name in names
        ]

    def folder_exists(self, name: str) -> bool:
        """Whether the server lists a folder (on Gmail: a label) of exactly this name that
        can hold mail."""
        with mailbox_errors(self.settings):
            listed = self._client.list_folders("", name)
        return any(
            found == name and not any(flag in UNSELECTABLE for flag in flags)
            for flags, _, found in listed
        )

    def status(self, folder: Folder) -> FolderStatus:
        """STATUS, asked while no folder is selected (RFC 3501 6.3.10)."""
        wanted = ["UIDVALIDITY", "UIDNEXT"] + (["HIGHESTMODSEQ"] if self.condstore else [])
        with mailbox_errors(self.settings):
            status = self._client.folder_status(folder.name, wanted)
        return FolderStatus(
            uidvalidity=status[b"UIDVALIDITY"],
            uidnext=status[b"UIDNEXT"],
            highestmodseq=status.get(b"HIGHESTMODSEQ"),
        )

    @contextmanager
    def examine(self, folder: Folder) -> Iterator[OpenFolder]:
        """Open a folder read-only (EXAMINE) and close it again afterwards."""
        with mailbox_errors(self.settings):
            info = self._client.select_folder(folder.name, readonly=True)
        opened = OpenFolder(
            self,
            folder,
            FolderStatus(
                uidvalidity=info[b"UIDVALIDITY"],
                uidnext=info[b"UIDNEXT"],
                highestmodseq=info.get(b"HIGHESTMODSEQ"),
            ),
        )
        try:
            yield opened
        except BaseException:
            # a connection kept for the next poll must not stay in the folder (STATUS of the
            # selected folder may be stale); on a broken one the first error is the one to tell
            with suppress(MailboxError):
                self._unselect()
            raise
        self._unselect()

    def _unselect(self) -> None:
        with mailbox_errors(self.settings):
            if b"UNSELECT" in self.capabilities:
                self._client.unselect_folder()
            else:
                self._client.close_folder()  # CLOSE after EXAMINE expunges nothing

    def require_idle(self) -> None:
        """Raises IdleUnsupported when the server does not offer IDLE."""
        if b"IDLE" not in self.capabilities:
            raise IdleUnsupported(
                f"{self.settings.name}: {self.settings.host} does not offer IDLE: new mail is "
                "seen at each poll",
                permanent=True,
            )

    def alive(self) -> bool:
        """Whether the server still answers on this connection (it may have logged it out)."""
        try:
            self._client.noop()
        except (IMAPClientError, OSError):
            return False
        return True

    def logout(self) -> None:
        try:
            self._client.logout()
        except (IMAPClientError, OSError):
            self._client.shutdown()  # the connection is already gone; just free the socket


class OpenFolder:
    """A folder opened with EXAMINE: its new messages and its waive keywords."""

    def __init__(self, mailbox: ImapMailbox, folder: Folder, status: FolderStatus) -> None:
        self._mailbox = mailbox
        self._client = mailbox._client
        self.folder = folder
        self.status = status

    def new_messages(
        self, checkpoint: Checkpoint | None, since: datetime | None, batch_size: int
    ) -> Iterator[Batch]:
        """Messages after the checkpoint (first sync: arrived at or after `since`; None: all),
        in batches, each with the checkpoint valid once it is stored. The last batch, possibly
        empty, carries UIDNEXT and HIGHESTMODSEQ: only then has the folder been seen in full."""
        last_uid = checkpoint.last_uid if checkpoint is not None else 0
        uids = self._new_uids(last_uid, since if checkpoint is None else None)
        batches = [uids[i : i + batch_size] for i in range(0, len(uids), batch_size)] or [[]]
        for number, chunk in enumerate(batches, start=1):
            messages = self._fetch(chunk)
            if checkpoint is None and since is not None:
                # SINCE compared dates only; drop the extra day searched for.
                messages = [m for m in messages if m.internal_date >= since]
            last_uid = max([last_uid, *chunk])
            final = number == len(batches)
            if final:
                # A first sync skips everything before the window for good.
                last_uid = max(last_uid, self.status.uidnext - 1)
            done = min(number * batch_size, len(uids))
            yield Batch(tuple(messages), self._checkpoint(last_uid, final), done, len(uids))

    def keyword_scan(self, keyword: str, checkpoint: Checkpoint, now: datetime) -> KeywordScan:
        """Flags of already-synced messages that may have changed since the checkpoint:
        with CONDSTORE those changed since its HIGHESTMODSEQ, else the last 30 days'."""
        if checkpoint.last_uid == 0:
            return KeywordScan(frozenset(), frozenset())
        with mailbox_errors(self._mailbox.settings):
            if self._mailbox.condstore and checkpoint.highestmodseq is not None:
                if self.status.highestmodseq == checkpoint.highestmodseq:
                    return KeywordScan(frozenset(), frozenset())
                modifiers = [f"CHANGEDSINCE {checkpoint.highestmodseq}"]
                uids = self._client.search(["MODSEQ", checkpoint.highestmodseq + 1])
            else:
                modifiers = []
                uids = self._client.search(["SINCE", (now - KEYWORD_RESCAN).date()])
            uids = [uid for uid in uids if uid <= checkpoint.last_uid]
            items = ["FLAGS"] + (["X-GM-LABELS"] if self.folder.gmail_all else [])
            fetched = self._client.fetch(uids, items, modifiers=modifiers) if uids else {}
        flagged = {
            uid
            for uid, data in fetched.items()
            if keyword_set(data, keyword) or labelled(data, self.folder.waive_label)
        }
        return KeywordScan(frozenset(fetched), frozenset(flagged))

    def wait_for_new_mail(self, stop: Event, timeout: float = IDLE_RENEW) -> bool:
        """IDLE until the server reports new mail (True), or `timeout` seconds pass or `stop`
        is set (False). Call it again and again on the same open folder: mail that arrived
        between two calls is reported at once. Raises IdleUnsupported at once when the server
        has no IDLE, MailboxError when the connection fails."""
        self._mailbox.require_idle()
        with mailbox_errors(self._mailbox.settings):
            # What arrived since the last IDLE ended: Dovecot would report it only at DONE.
            _, pending = self._client.noop()
            if reports_new_mail(pending):
                return True
            self._client.idle()
            try:
                arrived = self._idle_until(stop, time.monotonic() + timeout)
            finally:
                _, unread = self._client.idle_done()  # a dead connection raises: reconnect
        return arrived or reports_new_mail(unread)

    def _idle_until(self, stop: Event, deadline: float) -> bool:
        # The selector pattern of imapclient's examples/idle_selector_example.py:
        # idle_check() cannot tell "nothing yet" from "connection closed".
        with selectors.DefaultSelector() as selector:
            selector.register(self._client.socket(), selectors.EVENT_READ)
            while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
                if not selector.select(min(left, STOP_CHECK)):
                    continue
                responses = self._client.idle_check(timeout=0)
                if not responses:
                    settings = self._mailbox.settings
                    raise MailboxError(
                        f"{settings.name}: {settings.host}:{settings.port}: connection closed "
                        "while idling",
                        permanent=False,
                    )
                if reports_new_mail(responses):  # not keep-alives ("OK Still here")
                    return True
        return False

    def _new_uids(self, last_uid: int, since: datetime | None) -> list[int]:
        with mailbox_errors(self._mailbox.settings):
            if since is not None:
                # SINCE compares INTERNALDATE's date in the server's zone: search a day earlier.
                found = self._client.search(["SINCE", (since - timedelta(days=1)).date()])
            elif last_uid == 0:
                found = self._client.search(["ALL"])
            else:
                found = self._client.search(["UID", f"{last_uid + 1}:*"])
        # "UID n:*" always matches the highest UID, even one below n (RFC 3501 sequence sets).
        return sorted(uid for uid in found if uid > last_uid)

    def _fetch(self, uids: list[int]) -> list[FetchedMessage]:
        if not uids:
            return []
        items = [HEADER_ITEM, "INTERNALDATE", "RFC822.SIZE", "FLAGS"]
        if self.folder.gmail_all:
            items += ["X-GM-THRID", "X-GM-LABELS"]
        with mailbox_errors(self._mailbox.settings):
            fetched = self._uid_fetch(uids, items)
        return [self._message(uid, fetched[uid]) for uid in sorted(fetched)]

    def body_prefixes(self, uids: list[int]) -> dict[int, bytes]:
        """The first bytes of these messages' bodies (PEEK: never sets \\Seen). Only the few
        that may be a client's "thanks!" need them, so they come in a second, small FETCH."""
        if not uids:
            return {}
        with mailbox_errors(self._mailbox.settings):
            fetched = self._uid_fetch(uids, [BODY_PREFIX_ITEM])
        return {uid: data.get(BODY_PREFIX_KEY) or b"" for uid, data in fetched.items()}

    def _uid_fetch(self, uids: list[int], items: list[str]) -> dict[int, FetchData]:
        """What `IMAPClient.fetch(uids, items)` returns, the same command sent the same way
        and the same errors raised, but its response parsed by `parse_fetch`: imapclient's
        parser, which reads a character at a time, took most of a header fetch's time."""
        imap = self._client._imap
        command = ("UID", "FETCH", ",".join(map(str, uids)), f"({' '.join(items).upper()})")
        typ, data = imap._command_complete("FETCH", imap._command(*command))
        if typ != "OK":
            raise IMAPClientError(f"fetch failed: {to_unicode(data[0])}")
        _, data = imap._untagged_response(typ, data, "FETCH")
        fetched = parse_fetch(data)
        # Unsolicited responses for other messages are dropped, as imapclient drops them.
        return {uid: fetched[uid] for uid in uids if uid in fetched}

    def _message(self, uid: int, data: FetchData) -> FetchedMessage:
        labels = labels_of(data)
        thrid = data.get(b"X-GM-THRID")
        return FetchedMessage(
            uid=uid,
            raw_headers=data.get(HEADER_KEY) or b"",
            internal_date=as_utc(data[b"INTERNALDATE"]),
            size=data.get(b"RFC822.SIZE", 0),
            flags=tuple(as_text(flag) for flag in data.get(b"FLAGS", ())),
            sent=self.folder.sent or "\\Sent" in labels,
            waive_folder=self.folder.waive or labelled(data, self.folder.waive_label),
            gm_thrid=str(thrid) if thrid is not None else None,
        )

    def _checkpoint(self, last_uid: int, final: bool) -> Checkpoint:
        # Before the last batch UIDNEXT stays unknown, so that a crash mid-folder cannot let
        # the STATUS gate skip the rest; HIGHESTMODSEQ likewise, so flags are re-checked.
        return Checkpoint(
            mailbox=self._mailbox.settings.name,
            folder=self.folder.name,
            uidvalidity=self.status.uidvalidity,
            last_uid=last_uid,
            uidnext=self.status.uidnext if final else None,
            highestmodseq=self.status.highestmodseq if final else None,
        )


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """The verifying TLS context for `ca_file` (None: the system's CAs), built once: loading
    the CA bundle takes tens of milliseconds, most of an idle poll's cost otherwise."""
    changed = ca_file.stat().st_mtime_ns if ca_file is not None else 0
    return _tls_context(ca_file, changed)


@functools.lru_cache(maxsize=16)
def _tls_context(ca_file: Path | None, _changed: int) -> ssl.SSLContext:
    # Keyed by the file's mtime too, so a replaced CA file is read again.
    return ssl.create_default_context(cafile=ca_file)


def connect(settings: MailboxSettings) -> ImapMailbox:
    """Open a TLS (unless security = "none") connection and log in."""
    context = None if settings.security == "none" else tls_context(settings.ca_file)
    # The greeting is read under the connect timeout: a shorter configured timeout bounds it too.
    connect_timeout = min(CONNECT_TIMEOUT, settings.timeout)
    timeout = SocketTimeout(connect=connect_timeout, read=settings.timeout)
    with mailbox_errors(settings):
        client = IMAPClient(
            settings.host,
            port=settings.port,
            ssl=settings.security == "ssl",
            ssl_context=context,
            timeout=timeout,
        )
        try:
            if settings.security == "starttls":
                client.starttls(context)
            if settings.oauth2 is not None:
                token = access_token(settings.oauth2, settings.username)
                client.oauth2_login(settings.username, token)
            elif settings.oauth2_token is not None:
                client.oauth2_login(settings.username, settings.oauth2_token.reveal())
            elif settings.password is not None:
                client.login(settings.username, settings.password.reveal())
            else:
                raise MailboxError(
                    f"{settings.name}: no password or OAuth2 token configured", permanent=True
                )
        except BaseException:
            with suppress(OSError):  # a failed TLS handshake has already closed the socket
                client.shutdown()
            raise
        capabilities = client.capabilities()
        if b"CONDSTORE" in capabilities and b"ENABLE" in capabilities:
            # Makes EXAMINE report HIGHESTMODSEQ, the flag-change gate (RFC 7162 3.1).
            client.enable("CONDSTORE")
    client.normalise_times = False  # aware datetimes, not naive local time
    # imapclient sets imaplib's debug level to 5 for its wire logger: imaplib then formats
    # every response line and header block as text even when nothing logs them, a third of
    # a header fetch's time (docs/benchmarks.md); mailwatch never logs the wire
    client._imap.debug = 0
    return ImapMailbox(settings, client)


@contextmanager
def open_mailbox(settings: MailboxSettings) -> Iterator[ImapMailbox]:
    mailbox = connect(settings)
    try:
        yield mailbox
    finally:
        mailbox.logout()


def check_mailbox(settings: MailboxSettings, waive_folder: str | None) -> list[str]:
    """What `mailwatch check` says about one mailbox; raises MailboxError when it cannot log in."""
    with open_mailbox(settings) as mailbox:
        folders = mailbox.folders(waive_folder)
        extensions = [
            name
            for name in ("CONDSTORE", "IDLE", "SPECIAL-USE", "UNSELECT", "X-GM-EXT-1")
            if name.encode() in mailbox.capabilities
        ]
        sent = [folder.name for folder in folders if folder.sent]
        where = f"{settings.host}:{settings.port}"
        lines = [
            f"{settings.name}: login ok as {settings.username} on {where} "
            f"({describe_security(settings)})",
            f"{settings.name}: server offers {', '.join(extensions) or 'no useful extension'}",
            f"{settings.name}: watching {len(folders)} folder(s): "
            + ", ".join(folder.name for folder in folders),
        ]
        if mailbox.gmail and not sent:
            lines.append(f"{settings.name}: Gmail: Sent mail is recognised by its \\Sent label")
        elif sent:
            lines.append(f"{settings.name}: Sent folder: {sent[0]}")
        else:
            lines.append(
                f"{settings.name}: no Sent folder found: staff replies from this mailbox "
                "are only seen where they reach another watched mailbox"
            )
        if waive_folder is not None:
            lines.append(
                f"{settings.name}: {describe_waive_folder(mailbox, folders, waive_folder)}"
            )
        return lines


def describe_waive_folder(mailbox: ImapMailbox, watched: list[Folder], name: str) -> str:
    """Whether people can waive by moving mail to the folder (or Gmail label) `name` here."""
    exists = mailbox.folder_exists(name)
    if exists and any(folder.waive or folder.waive_label for folder in watched):
        how = "Gmail label" if mailbox.gmail else "folder"
        return f"waive folder {name!r} found ({how}): moving or copying mail there waives it"
    if exists:
        return f"waive folder {name!r} found but not watched (add it to this mailbox's folders)"
    return f"waive folder {name!r} not found (create it to let people waive by moving mail there)"


def find_sent(folders: list[tuple[tuple[bytes, ...], str]]) -> str | None:
    """The Sent folder: by its SPECIAL-USE attribute (RFC 6154), else by a well-known name."""
    for flags, name in folders:
        if b"\\Sent" in flags:
            return name
    by_name = {name.lower(): name for _, name in folders}
    for candidate in SENT_NAMES:
        if candidate in by_name:
            return by_name[candidate]
    return None


def reports_new_mail(responses: list[tuple[Any, ...]]) -> bool:
    """Whether untagged responses include "* n EXISTS" or "* n RECENT"."""
    return any(len(response) > 1 and response[1] in NEW_MAIL for response in responses)


def keyword_set(data: FetchData, keyword: str) -> bool:
    wanted = keyword.lower()
    return any(as_text(flag).lower() == wanted for flag in data.get(b"FLAGS", ()))


def labelled(data: FetchData, label: str | None) -> bool:
    return label is not None and label in labels_of(data)


def labels_of(data: FetchData) -> set[str]:
    return {as_text(label) for label in data.get(b"X-GM-LABELS", ())}


def as_text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def as_utc(value: datetime) -> datetime:
    # normalise_times = False gives aware datetimes; a naive one would be the server's
    # local time, which we cannot know, so it is read as UTC.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
