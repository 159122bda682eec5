"""Inbound email: the visible reply of real mail clients' answers, reading raw messages, and
reply addresses.

The 42 real-world bodies in the shared data folder (``email-replies/cases.json``) are the
spec for ``visible_reply``; REPLY_CASES below adds what they do not show (bottom posting,
text that must survive, languages only the library knows).
"""
from __future__ import annotations

import json
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.email_reply import (InboundEmail, InboundEmailError, html_text, parse_inbound, reply_target,
                                visible_reply)
from server.mail import reply_address, signature

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "email-replies"
REPLY_TO = "reply+c_0123456789abcdef.0123456789abcdef0123@chat.example.com"


def _shared_cases():
    # A missing folder must fail the run, not shrink it: one case that reports it.
    if not (SHARED / "cases.json").is_file():
        return [pytest.param(None, None, id="shared-data-missing")]
    spec = json.loads((SHARED / "cases.json").read_text(encoding="utf-8"))
    return [pytest.param(case["file"], spec["expected_reply"], id=case["case"]) for case in spec["cases"]]


@pytest.mark.parametrize("file, expected", _shared_cases())
def test_real_world_reply(file, expected):
    assert file is not None, f"the shared test data is missing: {SHARED / 'cases.json'}"
    body = (SHARED / file).read_text(encoding="utf-8")
    assert visible_reply(body).strip() == expected.strip()


REPLY_CASES = [
    # (name, body, visible reply)
    ("bottom_posted_answer_below_the_quote",
     "On Mon, Dec 2, 2024 at 10:00 AM Support <help@example.com> wrote:\n> Which order is it?\n\n"
     "Order 42, thanks\n\nSent from my iPhone\n",
     "Order 42, thanks"),
    ("trailing_quote_without_header",
     "Yes, please.\n\n> Do you want a refund?\n>\n> Support\n",
     "Yes, please."),
    ("hyphen_list_and_sign_off_are_the_persons_text",
     "What I need:\n- a refund\n- a new box\n\nThanks,\nAnn\n",
     "What I need:\n- a refund\n- a new box\n\nThanks,\nAnn"),
    ("indentation_is_kept",
     "The error says:\n\n    KeyError: 'order'\n\nOn 2 Dec 2024, at 10:00, Support <help@example.com> wrote:\n> hi\n",
     "The error says:\n\n    KeyError: 'order'"),
    ("sentence_starting_with_on_and_ending_in_wrote_stays",
     "On Monday my colleague wrote:\nthe invoice is wrong, can you check?\n",
     "On Monday my colleague wrote:\nthe invoice is wrong, can you check?"),
    ("polish_field_label_in_english_text_stays",
     "Hi,\nthe plan is nearly used up.\nData: 5 GB left on the plan\nDo: call me back\n",
     "Hi,\nthe plan is nearly used up.\nData: 5 GB left on the plan\nDo: call me back"),
    ("header_two_lines_below_the_text_keeps_the_text",
     "On my way.\nSee you\nOn Dec 15, 2024, at 3:00 PM, John Smith <john@example.com> wrote:\n> q\n",
     "On my way.\nSee you"),
    ("thunderbird_name_and_address_without_date",
     "Fine by me.\n\nJohn Smith <john@example.com> wrote:\n> Shall we?\n",
     "Fine by me."),
    ("swedish_header",
     "Tack!\n\nDen 15 dec. 2024 kl. 15:00 skrev John Smith <john@example.com>:\n> Hej\n",
     "Tack!"),
    ("spanish_header",
     "Gracias.\n\nEl dom, 15 dic 2024 a las 15:00, John (<john@example.com>) escribió:\n> Hola\n",
     "Gracias."),
    ("chinese_header",
     "好的，谢谢。\n\nJohn <john@example.com> 于2024年12月15日周日 15:00写道：\n> 你好\n",
     "好的，谢谢。"),
    ("korean_header",
     "감사합니다.\n\n2024년 12월 15일 (일) 오후 3:00, John <john@example.com>님이 작성:\n> 안녕하세요\n",
     "감사합니다."),
    ("japanese_header",
     "承知しました。\n\n2024年12月15日(日) 15:00 John <john@example.com>:\n> こんにちは\n",
     "承知しました。"),
    ("tobit_david_header_is_cut_by_the_library",
     "Danke, passt.\n\n[Original Message processed by david®]\nIhre Anfrage 15. Dezember 2024, 15:00 Uhr\n"
     "Von: Support <help@example.com>\nAn: Ann <ann@example.com>\n\nWie ist die Bestellnummer?\n",
     "Danke, passt."),
    ("outlook_block_in_dutch_with_dash_separator",
     "Prima.\n\n-----Oorspronkelijk bericht-----\nVan: Support <help@example.com>\nVerzonden: maandag\n",
     "Prima."),
    ("only_a_quote_gives_nothing",
     "> Which order is it?\n",
     ""),
    ("empty_body", "", ""),
    ("crlf_and_trailing_spaces", "Line one   \r\nLine two\r\n\r\n-- \r\nAnn\r\n", "Line one\nLine two"),
]


@pytest.mark.parametrize("body, expected", [pytest.param(b, e, id=n) for n, b, e in REPLY_CASES])
def test_visible_reply(body, expected):
    assert visible_reply(body) == expected


# ----------------------------------------------------------------------------- parse_inbound

def _mail(body: str | None = "Order 42, thanks\n\n> Which order?\n", **headers) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = headers.pop("From", "Ann <ann@example.com>")
    msg["To"] = headers.pop("To", f"Chat <{REPLY_TO}>")
    msg["Subject"] = headers.pop("Subject", "Re: You have unread replies")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    if body is not None:
        msg.set_content(body)
    return msg


def test_plain_message():
    msg = _mail(Cc="Bob <bob@example.com>, ann@example.com", Message_ID="<a1@example.com>",
                In_Reply_To="<e1@chat.example.com>")
    mail = parse_inbound(msg.as_bytes())
    assert mail == InboundEmail(to=(REPLY_TO, "bob@example.com", "ann@example.com"), from_addr="ann@example.com",
                                subject="Re: You have unread replies", message_id="<a1@example.com>",
                                in_reply_to="<e1@chat.example.com>", auto_submitted=False, text="Order 42, thanks")


def test_html_only_message():
    msg = _mail(None)
    msg.set_content("<html><head><style>p {color: red}</style></head><body>"
                    "<p>Order&nbsp;42,<br>thanks &amp; bye</p>"
                    "<div class=\"gmail_quote\">On Mon, Dec 2, 2024 Support wrote:"
                    "<blockquote>Which order?</blockquote></div></body></html>", subtype="html")
    assert parse_inbound(msg.as_bytes()).text == "Order 42,\nthanks & bye"


def test_html_blockquote_and_attribution_without_container():
    html = ("<div>Sure.</div><div><br></div><div>On Mon, Dec 2, 2024 at 10:00 AM Support "
            "&lt;help@example.com&gt; wrote:<br></div><blockquote><div>Which <b>order</b>?</div>"
            "<blockquote>older</blockquote></blockquote><p>Ann</p>")
    assert html_text(html) == "Sure.\n\nOn Mon, Dec 2, 2024 at 10:00 AM Support <help@example.com> wrote:\n\nAnn"
    assert visible_reply(html_text(html)) == "Sure."


def test_html_text_keeps_preformatted_text_and_stray_angle_brackets():
    html = "<p>a < b and c > d</p><!--[if mso]><xml>x</xml><![endif]--><pre>  code\n    more</pre>"
    assert html_text(html) == "a < b and c > d\n\n  code\n    more"


def test_html_that_makes_html_parser_quadratic_is_read_in_linear_time():
    started = time.perf_counter()
    for html in ("<x" * 200_000, "</" * 200_000, "<!" * 200_000, "<!--" * 100_000):
        html_text(html)
    assert time.perf_counter() - started < 10  # unguarded: minutes


def test_long_bodies_are_read_in_linear_time():
    started = time.perf_counter()
    for body in ("\n" * 500_000 + "x", "x" * 1_000_000, "word " * 200_000,
                 ("On 1 " + "1 " * 290 + ":\n") * 1_500, "> \n" * 300_000):
        visible_reply(body)
    assert time.perf_counter() - started < 10  # mail-parser-reply alone: hours for the first one


def test_multipart_alternative_prefers_plain():
    msg = _mail("Plain answer\n")
    msg.add_alternative("<p>HTML answer</p>", subtype="html")
    assert msg.get_content_type() == "multipart/alternative"
    assert parse_inbound(msg.as_bytes()).text == "Plain answer"


def test_quoted_printable_latin1():
    msg = _mail(None)
    msg.set_content("Très bien, merci à vous.\n\nLe 2 déc. 2024 à 10:00, Support <help@example.com> a écrit :\n"
                    "> Quelle commande ?\n", charset="latin-1", cte="quoted-printable")
    raw = msg.as_bytes()
    assert b"Tr=E8s" in raw and b"charset=\"iso-8859-1\"" in raw
    assert parse_inbound(raw).text == "Très bien, merci à vous."


def test_unknown_charset_is_read_as_utf8():
    raw = _mail("x").as_bytes().replace(b'charset="utf-8"', b'charset="x-no-such-charset"')
    raw = raw.replace(b"\n\nx\n", "\n\nGrüße\n".encode())
    assert parse_inbound(raw).text == "Grüße"


def test_format_flowed_soft_breaks_are_joined():
    raw = (b"From: ann@example.com\r\nTo: " + REPLY_TO.encode() + b"\r\nSubject: Re\r\n"
           b"Content-Type: text/plain; charset=utf-8; format=flowed\r\n\r\n"
           b"This line was wrapped by \r\nthe mail client.\r\n From the start.\r\n\r\n> quoted \r\n> text\r\n")
    assert parse_inbound(raw).text == "This line was wrapped by the mail client.\nFrom the start."


def test_delivery_status_notification_is_automatic():
    msg = _mail("This is the mail system at host mx.example.com.\n\nYour message could not be delivered.\n",
                From="Mail Delivery System <MAILER-DAEMON@mx.example.com>",
                Subject="Undelivered Mail Returned to Sender")
    msg.make_mixed()
    per_message, per_recipient = EmailMessage(), EmailMessage()
    per_message["Reporting-MTA"] = "dns; mx.example.com"
    per_recipient["Final-Recipient"] = "rfc822; ann@example.com"
    per_recipient["Action"] = "failed"
    per_recipient["Status"] = "5.1.1"
    status = EmailMessage()
    status["Content-Type"] = "message/delivery-status"
    status.set_payload([per_message, per_recipient])
    msg.attach(status)
    msg.replace_header("Content-Type", "multipart/report; report-type=delivery-status")
    mail = parse_inbound(msg.as_bytes())
    assert mail.auto_submitted is True
    assert mail.from_addr == "MAILER-DAEMON@mx.example.com"
    assert mail.text.startswith("This is the mail system")


@pytest.mark.parametrize("header, value, automatic", [
    ("Auto-Submitted", "auto-replied", True),
    ("Auto-Submitted", "auto-generated; owner-email=\"x@example.com\"", True),
    ("Auto-Submitted", "no", False),
    ("Auto-Submitted", " No ", False),
    ("X-Autoreply", "yes", True),
    ("X-Autorespond", "Out of office", True),
    ("Precedence", "bulk", True),
    ("Precedence", "Junk", True),
    ("Precedence", "auto_reply", True),
    ("Precedence", "list", False),
    ("Return-Path", "<>", True),            # the null reverse path bounces come from
    ("Return-Path", "< >", True),
    ("Return-Path", "<ann@example.com>", False),
])
def test_automatic_replies(header, value, automatic):
    msg = _mail("I am out of the office until Monday.\n", **{header.replace("-", "_"): value})
    assert parse_inbound(msg.as_bytes()).auto_submitted is automatic


@pytest.mark.parametrize("raw", [
    b"",
    b"\x00\xff\xfe garbage \x80\x81",
    bytes(range(256)) * 8,
    b"not an email at all\n\njust text\n",
    b"From: \r\nTo: " + REPLY_TO.encode() + b"\r\n\r\nhi\r\n",
])
def test_garbage_is_refused_as_bad_email(raw):
    with pytest.raises(InboundEmailError) as err:
        parse_inbound(raw)
    assert err.value.code == "bad_email"
    assert isinstance(err.value, ValueError)


def test_not_bytes_is_refused():
    with pytest.raises(InboundEmailError, match="raw bytes"):
        parse_inbound("From: ann@example.com\n\nhi")  # type: ignore[arg-type]


def test_body_of_two_megabytes_is_refused():
    msg = _mail(("x" * 999 + "\n") * 2048)
    with pytest.raises(InboundEmailError) as err:
        parse_inbound(msg.as_bytes())
    assert err.value.code == "too_large"
    assert "1048576 bytes" in str(err.value)


def test_header_of_100_kilobytes_is_refused():
    raw = (b"From: ann@example.com\r\nTo: " + REPLY_TO.encode() + b"\r\nX-Filler: " + b"a" * 100_000
           + b"\r\nSubject: hi\r\n\r\nhello\r\n")
    with pytest.raises(InboundEmailError) as err:
        parse_inbound(raw)
    assert err.value.code == "too_large"
    assert "headers" in str(err.value)


def test_attachments_do_not_count_as_text():
    msg = _mail("See the photo.\n")
    msg.add_attachment(b"\x89PNG" + b"\x00" * 1_200_000, maintype="image", subtype="png", filename="p.png")
    assert parse_inbound(msg.as_bytes()).text == "See the photo."


def _mail_like():
    """Bytes shaped like a message: header lines (some broken), a separator, a body."""
    names = st.sampled_from(["From", "To", "Cc", "Subject", "Content-Type", "Content-Transfer-Encoding",
                             "Auto-Submitted", "Precedence", "MIME-Version", "X"])
    values = st.one_of(
        st.text(max_size=60),
        st.sampled_from(["multipart/alternative; boundary=b", "multipart/report; report-type=delivery-status",
                         "text/html; charset=x-unknown", "text/plain; charset=idna", "base64", "quoted-printable",
                         "=?utf-8?b?w6k=?=", "=?bad?q?x?=", "<a@b>, (c) d@, \"e\" <@f>", REPLY_TO]))
    header = st.tuples(names, values).map(lambda nv: f"{nv[0]}: {nv[1]}")
    body = st.one_of(st.text(max_size=300), st.just("--b\r\nContent-Type: text/html\r\n\r\n<p>x<blockquote>y"))
    return st.tuples(st.lists(header, max_size=8), body).map(
        lambda hb: ("\r\n".join(hb[0]) + "\r\n\r\n" + hb[1]).encode("utf-8", "surrogateescape"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=3000), _mail_like()))
def test_any_bytes_give_an_email_or_inbound_email_error(raw):
    try:
        mail = parse_inbound(raw)
    except InboundEmailError as err:
        assert err.code in ("bad_email", "too_large")
    else:
        assert isinstance(mail, InboundEmail)
        assert isinstance(mail.text, str)


# ----------------------------------------------------------------------------- reply_target

def test_reply_target_reads_an_issued_address():
    address = reply_address("c_0123456789abcdef", "test-secret", "chatflow.localhost")
    assert reply_target(address) == ("c_0123456789abcdef", signature("c_0123456789abcdef", "test-secret"))
    assert reply_target(address.upper()) == reply_target(address)


@pytest.mark.parametrize("address", [
    "c_0123456789abcdef.0123456789abcdef0123@chat.example.com",          # no plus part
    "support@chat.example.com",
    "reply@chat.example.com",
    "reply+@chat.example.com",
    "reply+c_0123456789abcdef@chat.example.com",                          # no signature
    "reply+c_0123456789abcdef.@chat.example.com",
    "reply+c_0123456789abcdef.0123456789abcdef012@chat.example.com",      # signature too short
    "reply+c_0123456789abcdef.0123456789abcdef01234@chat.example.com",    # too long
    "reply+c_0123456789abcdeg.0123456789abcdef0123@chat.example.com",     # not hex
    "reply+c_123.0123456789abcdef0123@chat.example.com",                  # chat id too short
    "reply+x_0123456789abcdef.0123456789abcdef0123@chat.example.com",     # not a chat id
    "reply+c_0123456789abcdef.0123456789abcdef0123",                      # no domain
    "reply+c_0123456789abcdef.0123456789abcdef0123@",
    "reply+c_0123456789abcdef.0123456789abcdef0123@localhost",            # not a domain name
    "reply+c_0123456789abcdef.0123456789abcdef0123@-chat.example.com",
    "reply+c_0123456789abcdef.0123456789abcdef0123@chat..example.com",
    "reply+c_0123456789abcdef.0123456789abcdef0123@chat.example.com.",
    "reply+c_0123456789abcdef.0123456789abcdef0123@[127.0.0.1]",
    "reply+c_1.abc@x.com, evil@y.com",
    "reply+c_0123456789abcdef.0123456789abcdef0123@chat.example.com, evil@y.com",
    "evil@y.com, reply+c_0123456789abcdef.0123456789abcdef0123@chat.example.com",
    "Chat <reply+c_0123456789abcdef.0123456789abcdef0123@chat.example.com>",
    "reply+c_0123456789abcdef.0123456789abcdef0123@chat.example.com\n",
    "reply+c_0123456789abcdef.0123456789abcdef0123@chat.example.com\nBcc: evil@y.com",
    " reply+c_0123456789abcdef.0123456789abcdef0123@chat.example.com",
    "reply+c_0123456789abcdef.0123456789abcdef0123@chat.example.com@evil.com",
    "reply+c_0123456789abcdef.0123456789abcdef0123+x@chat.example.com",
    "reply+c_0123456789abcdef.0123456789abcdef0123@chat.exampleK.com".replace("K", "\u212a"),
    "reply+c_0123456789abcdef.0123456789abcdef0123@chat.example.com" + "m" * 300,
    "",
])
def test_reply_target_refuses_other_shapes(address):
    assert reply_target(address) is None
