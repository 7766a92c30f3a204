"""Is a message automated (auto-reply, bounce, bulk, calendar response), and which rule said so.

Automated mail never starts or stops a response clock (response-clock.md,
"Automated mail never starts or stops a clock").  Every rule returns a short
sentence so a person can see why a message did not count.
"""

from __future__ import annotations

import re

from mailwatch.core.model import Message, Policy

# Subjects that auto-responders start with.  Anchored: "Re: Out of office
# banner" is a person writing about a banner.  An optional "[" admits the
# Polish "[Automatyczna odpowiedź ] ..." seen in the wild.
_AUTOMATIC_REPLY = (
    # English
    r"auto(?:matic)?[ -]?(?:reply|response|answer)|autoreply|autorespons\w*|auto:|"
    # German
    r"abwesenheits(?:notiz|nachricht|meldung)|automatische (?:antwort|abwesenheitsnotiz)|"
    # French, Spanish, Dutch, Italian
    r"r[ée]ponse automatique|message d'absence|respuesta autom[aá]tica|mensaje de ausencia|"
    r"automatisch antwoord|risposta automatica|risposta non al computer|"
    # Nordic, Polish, Portuguese, and a few more from the notes
    r"autosvar|automatisk svar|automaattinen vastaus|automatyczna odpowied[zź]|"
    r"odpowied[zź] automatyczna|resposta autom[aá]tica|automatick[aá] odpov[eě][dď]|"
    r"otomatik yan[ıi]t|автоответ|自动回复|自動回覆|自動応答"
)
# "Out of the office" is also what people title their own announcements
# (the Enron mailboxes hold dozens), so these count only as a prefix before
# a colon, the way Outlook and Exchange write them: "Out of Office: Quote".
_AWAY = (
    r"out of (?:the )?office(?: auto ?reply)?|ooo|away from (?:the |my )?office|"
    r"abwesend|nicht im b[üu]ro|au(?:ß|ss)er haus|absen(?:t|te|ce)(?: ?\(e\))? du bureau|"
    r"fuera de (?:la )?oficina|ausente|afwezig|buiten (?:het )?kantoor|fuori (?:sede|ufficio)|"
    r"fr[aå]nvaro|frav[æa]r(?:ende)?|poissa|nieobecno[sś][cć]|fora do escrit[oó]rio"
)
_AUTO_REPLY_SUBJECT = re.compile(
    rf"^\s*\[?\s*(?:(?:{_AUTOMATIC_REPLY})|(?:{_AWAY})\s*:)", re.IGNORECASE
)

# Meeting responses (Outlook and others), in the same languages.  French
# typography puts a space before the colon.
_CALENDAR_SUBJECT = re.compile(
    r"^\s*(?:accepted|declined|tentative(?:ly accepted)?|"
    r"angenommen|abgelehnt|mit vorbehalt(?: angenommen)?|"
    r"accept[ée]|refus[ée]|provisoire|"
    r"aceptado|rechazado|provisional|"
    r"geaccepteerd|geweigerd|voorlopig(?: geaccepteerd)?|"
    r"accettato|rifiutato|provvisorio)\s*:",
    re.IGNORECASE,
)

_NO_REPLY_LOCALS = frozenset(
    {"noreply", "no-reply", "no_reply", "donotreply", "do-not-reply", "do_not_reply"}
)
_DAEMON_LOCALS = {
    "mailer-daemon": "mailer-daemon",
    "mailer_daemon": "mailer-daemon",
    "postmaster": "postmaster",
    "post_master": "postmaster",
}
_IN_ANGLES = re.compile(r"<([^<>]+)>")
_AUTO_REPLY_HEADERS = ("x-autoreply", "x-autorespond", "x-autoresponder")
_PRECEDENCE_HEADERS = ("precedence", "x-precedence")


def automation_reason(message: Message, policy: Policy) -> str | None:
    """The rule that makes `message` automated, as a short sentence, or None for human mail.

    X-Auto-Response-Suppress is never a sign: Outlook puts it on ordinary human mail.
    """
    for rule in _RULES:
        if reason := rule(message, policy):
            return reason
    return None


def is_out_of_office(message: Message, policy: Policy) -> bool:
    """An automatic reply such as an out-of-office notice: not a bounce, bulk mail or receipt.

    Used to infer that a staff member is away.  RFC 3834 auto-replies go out
    with a null envelope sender, and Gmail's carry `Precedence: bulk`, so
    neither of those rules out an out-of-office.
    """
    if automation_reason(message, policy) is None:
        return False
    not_a_person_away = (
        _report,
        _daemon_sender,
        _calendar_response,
        _list_reason,
        _no_reply_sender,
    )
    if any(rule(message, policy) for rule in not_a_person_away):
        return False
    auto_submitted = (message.header("auto-submitted") or "").lower()
    return (
        auto_submitted.startswith("auto-replied")
        or any(message.header(name) is not None for name in _AUTO_REPLY_HEADERS)
        or any(_first_word(message.header(n)) == "auto_reply" for n in _PRECEDENCE_HEADERS)
        or _AUTO_REPLY_SUBJECT.match(message.subject) is not None
    )


# ---------------------------------------------------------------- the rules, first match wins


def _sent_by_mailwatch(message: Message, policy: Policy) -> str | None:
    return "sent by mailwatch" if message.header("x-mailwatch") is not None else None


def _auto_submitted(message: Message, policy: Policy) -> str | None:
    # RFC 3834: any value other than "no" means automatically submitted.
    value = _first_word(message.header("auto-submitted"))
    return f"Auto-Submitted: {value}" if value and value != "no" else None


def _auto_reply_header(message: Message, policy: Policy) -> str | None:
    for name in _AUTO_REPLY_HEADERS:
        if (value := message.header(name)) is not None:
            return f"{_display_name(name)}: {value}".rstrip(": ")
    return None


def _report(message: Message, policy: Policy) -> str | None:
    if _content_type(message) == "multipart/report":
        return "multipart/report (delivery or read receipt)"
    return None


def _null_sender(message: Message, policy: Policy) -> str | None:
    if (message.header("return-path") or "").replace(" ", "") == "<>":
        return "null envelope sender (Return-Path: <>)"
    return None


def _daemon_sender(message: Message, policy: Policy) -> str | None:
    # `From: MAILER-DAEMON <>` has no address, only the name.
    name_only = None if message.from_addr else f"{message.from_name.lower()}@"
    return_path = _IN_ANGLES.search(message.header("return-path") or "")
    envelope = return_path.group(1) if return_path else None
    for addr in (message.from_addr, message.sender_addr, name_only, envelope):
        if daemon := _DAEMON_LOCALS.get(_local_part(addr)):
            return f"sender is {daemon}"
    return None


def _calendar_response(message: Message, policy: Policy) -> str | None:
    is_reply = _content_type(message) == "text/calendar" and _param(message, "method") == "reply"
    if is_reply or _CALENDAR_SUBJECT.match(message.subject):
        return "calendar response"
    return None


def _auto_reply_subject(message: Message, policy: Policy) -> str | None:
    if match := _AUTO_REPLY_SUBJECT.match(message.subject):
        return f"subject starts with '{match.group(0).strip(' [:')}'"
    return None


def _precedence(message: Message, policy: Policy) -> str | None:
    exempt = _agency_list(message, policy)
    for name in _PRECEDENCE_HEADERS:
        value = _first_word(message.header(name))
        if value == "auto_reply" or value == "junk" or (value in ("bulk", "list") and not exempt):
            return f"{_display_name(name)}: {value}"
    return None


def _list_reason(message: Message, policy: Policy) -> str | None:
    if _agency_list(message, policy):
        return None
    if (list_id := message.header("list-id")) is not None:
        return f"List-Id <{_list_id(list_id)}>"
    if message.header("list-unsubscribe") is not None:
        return "List-Unsubscribe"
    return None


def _feedback_id(message: Message, policy: Policy) -> str | None:
    # Feedback-ID alone is also used by transactional senders; it needs one
    # more bulk sign (the agency's own lists' headers don't count).
    if message.header("feedback-id") is None:
        return None
    if message.header("x-unsubscribe") is not None:
        return "Feedback-ID with X-Unsubscribe"
    if any(name.startswith("x-campaign") for name, _ in message.headers):
        return "Feedback-ID with X-Campaign"
    if message.header("list-post") is not None and not _agency_list(message, policy):
        return "Feedback-ID with List-Post"
    return None


def _no_reply_sender(message: Message, policy: Policy) -> str | None:
    return "sender no-reply" if _local_part(message.from_addr) in _NO_REPLY_LOCALS else None


_RULES = (
    _sent_by_mailwatch,
    _auto_submitted,
    _auto_reply_header,
    _report,
    _null_sender,
    _daemon_sender,
    _calendar_response,
    _auto_reply_subject,
    _precedence,
    _list_reason,
    _feedback_id,
    _no_reply_sender,
)


# ---------------------------------------------------------------- helpers


def _agency_list(message: Message, policy: Policy) -> bool:
    """The List-Id is a list run by the agency, or one named in `automation.human_lists`."""
    value = message.header("list-id")
    if value is None:
        return False
    list_id = _list_id(value)
    if any(list_id == d or list_id.endswith("." + d) for d in _lowered(policy.agency_domains)):
        return True
    return list_id in {_list_id(name) for name in policy.human_lists}


def _list_id(value: str) -> str:
    match = _IN_ANGLES.search(value)
    return (match.group(1) if match else value).strip().lower()


def _lowered(domains: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(d.lower().lstrip("@.") for d in domains)


def _content_type(message: Message) -> str:
    return (message.header("content-type") or "").split(";", 1)[0].strip().lower()


def _param(message: Message, name: str) -> str:
    value = message.header("content-type") or ""
    match = re.search(rf";\s*{name}\s*=\s*\"?([^\";\s]+)", value, re.IGNORECASE)
    return match.group(1).lower() if match else ""


def _first_word(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _local_part(addr: str | None) -> str:
    local = (addr or "").rpartition("@")[0].lower()
    return local.split("+", 1)[0]


def _display_name(header: str) -> str:
    return "-".join(part.capitalize() for part in header.split("-"))


# ---------------------------------------------------------------- courtesy

# Where the new text of a reply ends: quoted lines, attribution lines, Outlook
# separators and the signature delimiter.
_QUOTE_START = re.compile(
    r"^\s*(?:>|--\s*$|_{10,}|-{3,}\s*(?:original message|ursprüngliche nachricht|"
    r"message d'origine|mensaje original|oorspronkelijk bericht|messaggio originale)|"
    r"(?:from|von|de|van|da)\s*:.*@|"
    r"(?:on|am|le|el|op|il)\s.*(?:wrote|schrieb|a écrit|escribió|schreef|ha scritto)\s*:?\s*$|"
    r"sent from my )",
    re.IGNORECASE,
)
# English, German, French, Spanish, Dutch and Italian, phrases separated by commas.
_THANKS_OR_ACK = tuple(
    phrase.strip()
    for line in """
    thank you very much, thank you so much, thanks a lot, thanks so much, many thanks, thank you,
    thanks, thx, ty, much appreciated, appreciated, got it, sounds good, looks good, all good,
    perfect, great, awesome, brilliant, excellent, wonderful, fantastic, cool, nice, noted,
    received, ok, okay, cheers
    vielen dank, herzlichen dank, besten dank, danke schön, dankeschön, danke, alles klar, super,
    prima, perfekt, toll, passt, erhalten
    merci beaucoup, merci bien, merci, parfait, génial, très bien, d'accord, bien reçu, reçu,
    entendu
    muchas gracias, mil gracias, gracias, perfecto, genial, vale, de acuerdo, recibido, estupendo
    hartelijk dank, dank je wel, dankjewel, dank je, dank u wel, dank u, bedankt, perfect, prima,
    top, ontvangen, helder
    grazie mille, grazie, perfetto, ottimo, va bene, ricevuto, benissimo
    """.splitlines()
    for phrase in line.split(",")
    if phrase.strip()
)
_ACK_PHRASES = re.compile(
    r"(?<!\w)(?:"
    + "|".join(re.escape(p) for p in sorted(_THANKS_OR_ACK, key=len, reverse=True))
    + r")(?!\w)",
    re.IGNORECASE,
)
_ACK_SYMBOLS = re.compile("[\U0001f44d\U0001f64f\U0001f44c\u2705\U0001f642\U0001f60a\u263a]")
# Words that turn a thank-you into a new request ("Thanks, but it is still broken").
_REQUEST_WORDS = frozenset(
    """
    but still not no don't doesn't didn't isn't can't won't please pls can could would need needs
    issue problem error broken wrong however when why how what urgent asap
    aber noch nicht kein keine bitte können könnten kannst fehler leider jedoch wann warum wie
    dringend
    mais pas encore toujours pouvez pourriez problème erreur cependant quand pourquoi comment svp
    plaît
    pero todavía aún puede podría podrías sin embargo cuándo cómo urgente favor
    maar nog niet geen graag kunnen kunt kun probleem fout echter wanneer waarom hoe alsjeblieft
    alstublieft
    ma ancora non può potete potresti errore però perché
    """.split()
)
_WORD = re.compile(r"[\w'’]+")
MAX_OTHER_WORDS = 12
# The ASCII words of the phrases: an ASCII word of a text that is none of them stays a word
# however the phrases are taken out (at least an apostrophe of it), so more than
# MAX_OTHER_WORDS of them make a text more than a thank-you without looking for phrases
_PHRASE_WORDS = frozenset(w for p in _THANKS_OR_ACK for w in _WORD.findall(p.lower()))


def looks_like_courtesy(text: str) -> bool:
    """The new text of a message only thanks or acknowledges ("Thanks, perfect!", "Danke!", "👍").

    False as soon as it asks anything (a question mark, a "please", a "but")
    or says more than a short sign-off besides the thanks.
    """
    new_text = _new_text(text)
    if "?" in new_text or _more_than_other_words(new_text):
        return False
    rest, thanks = _ACK_PHRASES.subn(" ", new_text)  # one pass of the many phrases
    if not (thanks or _ACK_SYMBOLS.search(new_text)):
        return False
    words = [w.lower().replace("’", "'") for w in _WORD.findall(rest)]
    if any(w in _REQUEST_WORDS for w in words):
        return False
    return len(words) <= MAX_OTHER_WORDS


def _more_than_other_words(text: str) -> bool:
    """More than MAX_OTHER_WORDS ASCII words that no phrase holds (looking for the phrases
    themselves in a long text took most of the "thanks!" check)."""
    others = 0
    for word in _WORD.findall(text):
        if word.isascii() and word.lower() not in _PHRASE_WORDS:
            others += 1
            if others > MAX_OTHER_WORDS:
                return True
    return False


def _new_text(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if _QUOTE_START.match(line):
            break
        lines.append(line)
    return "\n".join(lines).strip()
