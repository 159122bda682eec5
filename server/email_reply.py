"""Inbound email: a customer's answer to a chat email, reduced to the text they wrote.

``parse_inbound`` turns a raw RFC 822 message into an :class:`InboundEmail` (addresses,
threading headers, whether a machine sent it, and the visible reply); ``visible_reply``
cuts a plain-text body at the first quote header, quoted block or phone signature;
``reply_target`` reads the chat and signature out of a ``reply+<chat>.<signature>@…``
address (the signature is checked by the caller against ``server.mail.signature``).

Where a reply ends is decided by data: the tables below (quote headers per language and
mail client, Outlook header blocks, "original message" separators, "Sent from my …"
lines) and mail-parser-reply's own per-language patterns; the reply ends where the first of
them says. Nothing here reads the clock, the environment or the network.
"""
from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from html.parser import HTMLParser

from mailparser_reply import EmailReplyParser
from mailparser_reply.constants import MAIL_LANGUAGES

from dsl.errors import ChatflowError

MAX_MESSAGE_BYTES = 10 * 1024 * 1024   # the whole message, attachments included
MAX_HEADER_BYTES = 64 * 1024           # the header section; hostile headers make the stdlib parser slow
MAX_TEXT_BYTES = 1024 * 1024           # the text part that becomes a chat message


class InboundEmailError(ChatflowError, ValueError):
    """A message that cannot be read as an email; ``code`` is ``bad_email`` or ``too_large``."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class InboundEmail:
    to: tuple[str, ...]          # addr-specs of To then Cc, each once, in order
    from_addr: str
    subject: str
    message_id: str | None
    in_reply_to: str | None
    auto_submitted: bool         # an auto-reply, bounce, bulk mail or delivery report: never a customer's answer
    text: str                    # the visible reply (see visible_reply)


# --------------------------------------------------------------------------- the tables

# Attribution lines ("On <date>, <name> wrote:"), as a regex that must match the whole header
# once its lines (at most MAX_HEADER_LINES, since clients wrap long names and addresses) are
# joined by one space and any ">" quote markers are removed. Every header also has to carry
# a digit (its date or time) or an "@" (an address), which keeps ordinary sentences such as
# "On Monday I wrote:" in the reply.
_DATE_LED = r"(?:[^\W\d_]{1,12}\.?,?\s+)?\d"     # "tir. 18.", "pe 20.", "Wednesday, 17", "30.09.2017"
ATTRIBUTION_HEADERS: tuple[tuple[str, str], ...] = (
    ("en", r"On\s.+(?:\swrote:|>\s*wrote)"),                 # "wrote" without colon only after an address
    ("en", r".*<[^<>\s]+@[^<>\s]+>\s+wrote:"),               # Thunderbird: "John <j@x.com> wrote:"
    ("de", r"Am\s.+\sschrieb(?:\s.*)?:"),
    ("fr", r"Le\s.+\sa\s+écrit\s*:"),
    ("nl", r"Op\s.+\sschreef(?:\s.*)?:"),
    ("it", r"(?:Il|In\s+data)\s.+\sha\s+scritto\s*:"),
    ("es", r"El\s.+\sescribió\s*:"),
    ("pt", r"(?:Em|No\s+dia)\s.+\sescreveu\s*:"),
    ("pl", r"(?:W\s+dniu|Dnia)\s.+\snapisał(?:\(a\)|a)?\s*:"),
    ("cs", r"Dne\s.+\snapsal(?:\(a\)|a)?\s*:"),
    ("da/no/sv", r"(?:Den\s+|" + _DATE_LED + r").*\sskrev(?:\s.*)?:"),
    ("fi", _DATE_LED + r".*\skirjoitti\s*:"),
    ("ru", _DATE_LED + r".*\s(?:пишет|написал(?:а|\(а\))?)\s*:"),
    # mail-parser-reply has zh and ko headers, but their negative lookahead rejects every header
    ("zh", r".*\d{4}\s*年\s*\d{1,2}\s*月\s*\d{1,2}\s*日.*写道\s*[:：]"),
    ("ko", r"\d{4}년\s*\d{1,2}월\s*\d{1,2}일.*(?:님이|가)\s*작성(?:하였습니다|했습니다)?\s*[:：]"),
    # Gmail in languages without a verb (Russian, old Gmail everywhere, Mail.ru, Yandex):
    # "<date>, <time>, Name <addr>:" — a time of day then an address closing the line.
    ("any", _DATE_LED + r".*\d[:.]\d\d.*<[^<>\s]+@[^<>\s]+>\s*:"),
)
MAX_HEADER_LINES = 3
MAX_HEADER_CHARS = 600    # longer than any real quote header; bounds the work per line

# Outlook-style header blocks: a "From" line, then (after at most one wrapped line) another
# header field. Labels are as the clients write them, capitalised, colon maybe after a space.
HEADER_BLOCK_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # language: (labels that open a block, labels of the other fields)
    "en": (("From",), ("Sent", "Date", "To", "Subject", "Cc")),
    "fr": (("De", "Message du"), ("Envoyé le", "Envoyé", "Date", "À", "A", "Objet", "Sujet", "Copie à", "Cc")),
    "de": (("Von",), ("Gesendet", "Datum", "An", "Betreff", "Cc")),
    "nl": (("Van",), ("Verzonden", "Datum", "Aan", "Onderwerp", "CC", "Cc")),
    "it": (("Da",), ("Inviato", "Data", "A", "Oggetto", "Cc")),
    "es": (("De",), ("Enviado el", "Enviado", "Fecha", "Para", "Asunto", "CC", "Cc")),
    "pt": (("De",), ("Enviada", "Enviado", "Data", "Para", "Assunto", "Cc")),
    "da/no": (("Fra",), ("Sendt", "Dato", "Til", "Emne", "Cc")),
    "sv": (("Från",), ("Skickat", "Datum", "Till", "Ämne", "Kopia")),
    "pl": (("Od",), ("Wysłano", "Data", "Do", "Temat", "DW")),
    "cs": (("Od",), ("Odesláno", "Datum", "Komu", "Předmět", "Kopie")),
    "fi": (("Lähettäjä",), ("Lähetetty", "Päivämäärä", "Vastaanottaja", "Aihe", "Kopio")),
    "ru": (("От",), ("Отправлено", "Дата", "Кому", "Тема", "Копия")),
}

# "-----Original Message-----" and its translations, between runs of dashes (or = _ *).
ORIGINAL_MESSAGE_SEPARATORS: tuple[str, ...] = (
    "Original Message", "Ursprüngliche Nachricht", "Originalnachricht", "Message d['’]origine",
    "Message original", "Oorspronkelijk bericht", "Origineel bericht", "Messaggio originale",
    "Mensaje original", "Mensagem original", "Oprindelig besked", "Oprindelig meddelelse",
    "Opprinnelig melding", "Ursprungligt meddelande", "Originalmeddelande", "Alkuperäinen viesti",
    "Oryginalna wiadomość", "Wiadomość oryginalna", "Původní zpráva", "Исходное сообщение",
)

# Lines a phone or mail app appends under the reply; what follows them is never the
# person's text (some apps then paste the quoted message without any header).
SENT_FROM_LINES: tuple[tuple[str, str], ...] = (
    ("en", r"Sent from my\s.+"),
    ("en", r"Sent from (?:Outlook|Mail|Yahoo Mail|AOL|Proton ?Mail|Gmail|Samsung|BlackBerry)\b.*"),
    ("en", r"Get Outlook for\s.+"),
    ("fr", r"Envoyé (?:de mon|depuis mon|depuis|à partir de)\s.+"),
    ("fr", r"Obtenir Outlook pour\s.+"),
    ("de", r"Gesendet (?:von|mit) (?:meinem|Outlook|Mail|Yahoo|GMX|WEB\.DE)\b.*"),
    ("de", r"Von meinem\s.+\sgesendet"),
    ("de", r"Outlook für\s.+\sherunterladen"),
    ("nl", r"(?:Verzonden|Verstuurd) (?:vanaf|met|vanuit) (?:mijn|Outlook)\b.*"),
    ("it", r"Inviato da(?:l mio)?\s.+"),
    ("es", r"Enviado desde (?:mi|Outlook|Correo)\b.*"),
    ("pt", r"Enviado (?:do|de) meu\s.+"),
    ("pl", r"Wysłan[eo] z (?:mojego|mojej|aplikacji|Outlook)\b.*"),
    ("da/no", r"Sendt fra (?:min|mi|Outlook|Mail)\b.*"),
    ("sv", r"Skickat från (?:min|Outlook|E-post)\b.*"),
    ("fi", r"Lähetetty (?:iPhonesta|iPadista|Androidista|Outlookista|laitteesta|Samsung)\b.*"),
    ("ru", r"Отправлено (?:с|из)\s.+"),
    ("cs", r"Odesláno z\s.+"),
)
MAX_SENT_FROM_CHARS = 120

# mail-parser-reply's languages, but not Polish: its Polish header pattern fires on one line
# that starts with "Do:", "Od:" or "Data:" (e.g. "Data: 5 GB left") and would cut the reply
# there; Polish headers are in the tables above.
LIBRARY_LANGUAGES = tuple(lang for lang in MAIL_LANGUAGES if lang != "pl")
# The library's regexes backtrack quadratically (8000 blank lines take 10 s), so it only ever
# sees a compacted view of at most this much of the body.
LIBRARY_MAX_LINES = 400
LIBRARY_MAX_CHARS = 20_000


def _compile_attributions() -> re.Pattern:
    return re.compile("|".join(f"(?:{pattern})" for _, pattern in ATTRIBUTION_HEADERS))


def _compile_block_labels() -> tuple[re.Pattern, re.Pattern]:
    def labels(which: int) -> re.Pattern:
        names = sorted({n for fields in HEADER_BLOCK_FIELDS.values() for i in which for n in fields[i]},
                       key=len, reverse=True)
        alternatives = "|".join(re.escape(n).replace(r"\ ", r"\s+") for n in names)
        return re.compile(rf"[*\s]*(?:{alternatives})[*\s]*:")
    return labels((0,)), labels((0, 1))


_ATTRIBUTION = _compile_attributions()
_BLOCK_OPENER, _BLOCK_FIELD = _compile_block_labels()
_SEPARATOR = re.compile(r"[-_=*\s]{2,}(?:%s)\s*[-_=*]{2,}\s*" % "|".join(ORIGINAL_MESSAGE_SEPARATORS),
                        re.IGNORECASE)
_SENT_FROM = re.compile("|".join(f"(?:{pattern})" for _, pattern in SENT_FROM_LINES))
_OUTLOOK_RULE = re.compile(r"_{30,}")        # Outlook's line above its header block
_SIGNATURE_DASHES = re.compile(r"--")        # RFC 3676 "-- " (trailing space already stripped)
_DECORATION = re.compile(r"[-_=*~#]{3,}")   # "====" left above a cut header
_QUOTE_MARKS = re.compile(r"^(?:\s*>)+")
_library = EmailReplyParser(languages=list(LIBRARY_LANGUAGES))


# --------------------------------------------------------------------------- visible_reply

def visible_reply(body_text: str) -> str:
    """The text the person wrote at the top of a plain-text email body: everything from the
    first quote header, original-message separator, Outlook header block, signature
    delimiter or "Sent from my …" line on is dropped, and so are trailing ``>`` quotes.
    A bottom-posted answer (quote first, text below it) gives the text below the quote.
    Lines keep their indentation; whitespace at the line ends and around the text goes."""
    lines = [line.rstrip() for line in body_text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    reply = _reply_above_quote(lines)
    if not _blank(reply):
        return _join(reply)
    return _join(_reply_below_quote(lines))


def _reply_above_quote(lines: list[str]) -> list[str]:
    # The library reads the whole text, not only what the tables left: some of its headers
    # (e.g. Tobit David's) start above a field block the tables cut at.
    end = min(_first_boundary(lines), _library_end(lines))
    return _without_trailing_quote(lines[:end])


def _reply_below_quote(lines: list[str]) -> list[str]:
    """Bottom posting: an attribution header and its ``>`` block come first, the answer after."""
    i = _skip_blank(lines, 0)
    span = _attribution_at(lines, i)
    if span:
        i = _skip_blank(lines, i + span)
    start = i
    while i < len(lines) and (_is_quoted(lines[i]) or not lines[i].strip()):
        i += 1
    if i == start:
        return []
    return _reply_above_quote(lines[i:])


def _first_boundary(lines: list[str]) -> int:
    """Index of the first line where the quoted part starts (len(lines) if none does)."""
    for i, line in enumerate(lines):
        bare = _QUOTE_MARKS.sub("", line).strip()
        if not bare:
            continue
        if (_SEPARATOR.fullmatch(bare) or _OUTLOOK_RULE.fullmatch(bare) or _SIGNATURE_DASHES.fullmatch(bare)
                or (len(bare) <= MAX_SENT_FROM_CHARS and _SENT_FROM.fullmatch(bare))
                or _header_block_at(lines, i) or _attribution_at(lines, i)):
            return i
    return len(lines)


def _attribution_at(lines: list[str], i: int) -> int:
    """How many lines the attribution header starting at line ``i`` spans (0: none there).
    A header that only matches by swallowing lines before a shorter header further down is
    not one: that shorter header is found when the scan reaches it."""
    for n in range(1, MAX_HEADER_LINES + 1):
        if i + n > len(lines) or (n > 1 and not lines[i + n - 1].strip()):
            return 0
        if _is_attribution(lines[i:i + n]):
            if any(_is_attribution(lines[j:i + n]) for j in range(i + 1, i + n)):
                return 0
            return n
    return 0


def _is_attribution(lines: list[str]) -> bool:
    joined = " ".join(_QUOTE_MARKS.sub("", line).strip() for line in lines)
    return (len(joined) <= MAX_HEADER_CHARS and joined.endswith((":", "：", "wrote"))
            and (any(c.isdigit() for c in joined) or "@" in joined) and _ATTRIBUTION.fullmatch(joined) is not None)


def _header_block_at(lines: list[str], i: int) -> bool:
    if not _BLOCK_OPENER.match(_QUOTE_MARKS.sub("", lines[i])):
        return False
    following = [_QUOTE_MARKS.sub("", line) for line in lines[i + 1:i + 3]]
    if following and _BLOCK_FIELD.match(following[0]):
        return True
    # a long From value wraps onto one line of its own before the next field
    return len(following) == 2 and following[0].strip() != "" and _BLOCK_FIELD.match(following[1]) is not None


def _library_end(lines: list[str]) -> int:
    """Where mail-parser-reply ends the reply in ``lines`` (len(lines) if it does not).

    It is asked about a compacted copy (no runs of blank lines or spaces, bounded length)
    and is believed only when its reply is a prefix of that copy: it sometimes returns a
    later fragment instead, and it must never add text, only cut."""
    kept: list[int] = []            # index into lines of each line shown to the library
    shown: list[str] = []
    size = 0
    for index, line in enumerate(lines):
        compact = " ".join(line.split())
        size += len(compact) + 1
        if size > LIBRARY_MAX_CHARS or len(shown) >= LIBRARY_MAX_LINES:
            break
        if compact or (shown and shown[-1]):
            kept.append(index)
            shown.append(compact)
    if not shown:
        return len(lines)
    reply = _library.parse_reply("\n".join(shown)) or ""
    target = "".join(reply.split())
    so_far = ""
    for n, text in enumerate(shown):
        if so_far == target and target and any(s for s in shown[n:]):
            return kept[n]
        so_far += "".join(text.split())
        if not target.startswith(so_far):
            break
    return len(lines)


def _without_trailing_quote(lines: list[str]) -> list[str]:
    end = len(lines)
    while end and (not lines[end - 1].strip() or _is_quoted(lines[end - 1])
                   or _DECORATION.fullmatch(lines[end - 1].strip())):
        end -= 1
    return lines[:end]


def _is_quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _skip_blank(lines: list[str], i: int) -> int:
    while i < len(lines) and not lines[i].strip():
        i += 1
    return i


def _blank(lines: list[str]) -> bool:
    return not any(line.strip() for line in lines)


def _join(lines: list[str]) -> str:
    return "\n".join(lines).strip("\n").rstrip()


# --------------------------------------------------------------------------- parse_inbound

def parse_inbound(raw: bytes) -> InboundEmail:
    """Read a raw RFC 822 message. Raises InboundEmailError (and nothing else) when it is too
    large, has no From address, or cannot be parsed."""
    if not isinstance(raw, (bytes, bytearray)):
        raise InboundEmailError("bad_email", "an inbound email is raw bytes")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InboundEmailError("too_large", f"the email is larger than {MAX_MESSAGE_BYTES} bytes")
    if _header_length(raw) > MAX_HEADER_BYTES:
        raise InboundEmailError("too_large", f"the email's headers are larger than {MAX_HEADER_BYTES} bytes")
    try:
        return _read(BytesParser(policy=policy.default).parsebytes(bytes(raw)))
    except InboundEmailError:
        raise
    except Exception as exc:
        # The stdlib's header and MIME parsers raise assorted types (IndexError, AttributeError,
        # HeaderParseError, RecursionError…) on hostile input; all of them mean one thing here.
        raise InboundEmailError("bad_email", f"the email cannot be parsed ({type(exc).__name__})") from exc


def _header_length(raw: bytes) -> int:
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    return min(ends) if ends else len(raw)


def _read(msg) -> InboundEmail:
    senders = _addresses(msg, "From")
    if not senders:
        raise InboundEmailError("bad_email", "the email has no From address")
    return InboundEmail(
        to=tuple(dict.fromkeys(_addresses(msg, "To") + _addresses(msg, "Cc"))),
        from_addr=senders[0],
        subject=" ".join(_header(msg, "Subject").split()),
        message_id=_header(msg, "Message-ID").strip() or None,
        in_reply_to=_header(msg, "In-Reply-To").strip() or None,
        auto_submitted=_is_automatic(msg),
        text=_text(msg),
    )


def _header(msg, name: str) -> str:
    value = msg.get(name)
    return "" if value is None else str(value)


def _addresses(msg, name: str) -> list[str]:
    found = []
    for header in msg.get_all(name) or []:
        for address in getattr(header, "addresses", ()):
            spec = address.addr_spec
            if "@" in spec and not any(c.isspace() for c in spec):
                found.append(spec)
    return found


def _is_automatic(msg) -> bool:
    """RFC 3834 Auto-Submitted (any value but ``no``), the vendor auto-reply headers
    (X-Autoreply, X-Autorespond), bulk precedence, a null reverse path (``Return-Path: <>``,
    what bounces come from, RFC 5321 4.5.5), and every multipart/report (delivery status
    notifications, ``report-type=delivery-status``, and read receipts are written by
    machines)."""
    auto = _header(msg, "Auto-Submitted").split(";")[0].strip().lower()
    if auto and auto != "no":
        return True
    if msg.get("X-Autoreply") is not None or msg.get("X-Autorespond") is not None:
        return True
    if _header(msg, "Precedence").strip().lower() in ("bulk", "junk", "auto_reply"):
        return True
    if any(str(v).strip().replace(" ", "") == "<>" for v in msg.get_all("Return-Path") or []):
        return True
    return msg.get_content_type() == "multipart/report"


def _text(msg) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    payload = part.get_payload(decode=True) or b""
    if len(payload) > MAX_TEXT_BYTES:
        raise InboundEmailError("too_large", f"the email's text is larger than {MAX_TEXT_BYTES} bytes")
    text = _decode(payload, part.get_content_charset())
    if part.get_content_subtype() == "html":
        text = html_text(text)
    else:
        params = part["Content-Type"].params if part["Content-Type"] is not None else {}
        if str(params.get("format", "")).lower() == "flowed":
            text = unflowed(text, delsp=str(params.get("delsp", "")).lower() == "yes")
    return visible_reply(text)


def _decode(payload: bytes, charset: str | None) -> str:
    # A missing or ASCII charset on 8-bit text is nearly always UTF-8 (ASCII is a subset).
    if not charset or charset in ("us-ascii", "ascii"):
        charset = "utf-8"
    try:
        codecs.lookup(charset)
        return payload.decode(charset, errors="replace")
    except (LookupError, UnicodeError, ValueError):
        # unknown names, codecs that are not text encodings ("zlib") or accept no error
        # handler ("idna"): read it as UTF-8 rather than refuse a customer's answer
        return payload.decode("utf-8", errors="replace")


def unflowed(text: str, delsp: bool = False) -> str:
    """Undo RFC 3676 format=flowed: join soft line breaks (a line ending in a space) and
    remove space-stuffing, keeping ``>`` quote depth."""
    out: list[str] = []
    pending, depth = None, 0
    for line in text.replace("\r\n", "\n").split("\n"):
        marks = len(line) - len(line.lstrip(">"))
        content = line[marks:]
        if content.startswith(" "):
            content = content[1:]
        soft = content.endswith(" ") and content != "-- "
        if soft and delsp:
            content = content[:-1]
        if pending is not None and marks == depth:
            pending += content
        else:
            if pending is not None:
                out.append(_quoted(pending, depth))
            pending, depth = content, marks
        if not soft:
            out.append(_quoted(pending, depth))
            pending = None
    if pending is not None:
        out.append(_quoted(pending, depth))
    return "\n".join(out)


def _quoted(text: str, depth: int) -> str:
    return (">" * depth + " " + text) if depth else text


# --------------------------------------------------------------------------- HTML bodies

_BLOCK_TAGS = {"p", "div", "br", "li", "tr", "table", "ul", "ol", "hr", "pre", "h1", "h2", "h3", "h4",
               "h5", "h6", "section", "article", "header", "footer", "address", "dd", "dt"}
_DROPPED_TAGS = {"blockquote", "script", "style", "head", "title", "template"}
# containers mail clients put the quoted message in (besides <blockquote>)
QUOTE_CONTAINERS = {"class": ("gmail_quote", "yahoo_quoted", "moz-cite-prefix", "protonmail_quote"),
                    "id": ("divRplyFwdMsg",)}


class _HtmlText(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.dropping: str | None = None   # tag whose content is being dropped
        self.depth = 0                     # nesting of that tag inside itself
        self.pre = 0

    def handle_starttag(self, tag, attrs):
        if self.dropping:
            self.depth += tag == self.dropping
            return
        if tag in _DROPPED_TAGS or _is_quote_container(dict(attrs)):
            self.dropping, self.depth = tag, 1
            return
        self.pre += tag == "pre"
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_startendtag(self, tag, attrs):
        if not self.dropping and tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if self.dropping:
            if tag == self.dropping:
                self.depth -= 1
                if not self.depth:
                    self.dropping = None
            return
        if tag == "pre" and self.pre:
            self.pre -= 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data):
        if self.dropping:
            return
        if not self.pre:  # HTML renders a run of whitespace as one space, and none at a line start
            data = re.sub(r"\s+", " ", data)
            if not self.parts or self.parts[-1].endswith("\n"):
                data = data.lstrip(" ")
        self.parts.append(data)


def _is_quote_container(attrs: dict) -> bool:
    classes = (attrs.get("class") or "").split()
    return (any(c in classes for c in QUOTE_CONTAINERS["class"])
            or (attrs.get("id") or "") in QUOTE_CONTAINERS["id"])


_STRAY_LT = re.compile(r"<(?=[^<>]*(?:<|\Z))")


def _linear_html(html: str) -> str:
    """The same markup without what makes html.parser (CPython 3.11) quadratic: comments
    (dropped here, by find, so an unclosed one costs one scan) and any "<" that no ">"
    closes before the next "<" (written as the text "&lt;" it stands for); "<x" repeated
    over 1 MB otherwise takes eight minutes."""
    out, pos = [], 0
    while (start := html.find("<!--", pos)) >= 0:
        out.append(html[pos:start])
        end = html.find("-->", start + 4)
        pos = len(html) if end < 0 else end + 3
    out.append(html[pos:])
    return _STRAY_LT.sub("&lt;", "".join(out))


def html_text(html: str) -> str:
    """The text of an HTML body: tags dropped, block elements and <br> as line breaks,
    quoted parts (<blockquote>, Gmail/Yahoo/Thunderbird quote containers) removed."""
    parser = _HtmlText()
    try:
        parser.feed(_linear_html(html))
        parser.close()
    except AssertionError:
        pass  # html.parser gives up on some broken markup declarations; keep what it read
    text = "".join(parser.parts).replace("\xa0", " ")
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


# --------------------------------------------------------------------------- reply addresses

_REPLY_ADDRESS = re.compile(
    r"reply\+(c_[0-9a-f]{16})\.([0-9a-f]{20})"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]"
)


def reply_target(address: str) -> tuple[str, str] | None:
    """``(chat_id, signature)`` from a bare ``reply+c_<16 hex>.<20 hex>@<domain>`` address,
    or None for anything else (display names, lists, whitespace, other shapes). Case is
    ignored, as mail systems may change it; the signature is not checked here."""
    if not isinstance(address, str) or len(address) > 254 or not address.isascii():
        return None
    match = _REPLY_ADDRESS.fullmatch(address.lower())
    return (match.group(1), match.group(2)) if match else None
