"""DATA: end of data only at <CRLF>.<CRLF> (the SMTP smuggling family),
dot-unstuffing, CRLF -> LF, 8-bit data, bare CR/LF, NUL, long lines, size
limits, disconnects at every stage, and the Received: header."""

import email.utils
import re
import socket
import time
from datetime import datetime, timezone

import pytest

from smtptest import (HOSTNAME, PEER, QUEUED_RE, check, find_events, kv,
                      received_re, split_received)


def open_data(c, rcpts=("rcpt@example.net",)):
    check(c.mail("alice@example.org"), 250)
    for r in rcpts:
        check(c.rcpt(r), 250)
    check(c.cmd("DATA"), 354)


# ---------------------------------------------------------------- smuggling

HEAD = b"Subject: smuggle\r\n\r\nhello"
SMUGGLED = (b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@x.example>\r\n"
            b"DATA\r\nsmuggled\r\n.\r\n")

# Fake ends that are not <CRLF>.<CRLF>: the message goes on to the real end
# after "smuggled"; expected reply for the whole thing.
NOT_END = [
    ("lf.lf", b"\n.\n", 554),
    ("cr.cr", b"\r.\r", 554),
    ("crlf.lf", b"\r\n.\n", 554),
    ("lf.crlf", b"\n.\r\n", 554),
    ("cr.crlf", b"\r.\r\n", 554),
    ("crlf.cr", b"\r\n.\r", 554),
    ("lf.cr", b"\n.\r", 554),
    ("cr.lf", b"\r.\n", 554),
    ("lflf.lflf", b"\n\n.\n\n", 554),
    ("crcr.crcr", b"\r\r.\r\r", 554),
    ("crlf.crcrlf", b"\r\n.\r\r\n", 554),
    ("crlf-nul.crlf", b"\r\n\x00.\r\n", 554),
    ("crlf.nul-crlf", b"\r\n.\x00\r\n", 554),
    ("crlf..crlf", b"\r\n..\r\n", 250),
    ("crlf-sp.crlf", b"\r\n .\r\n", 250),
    ("crlf.sp-crlf", b"\r\n. \r\n", 250),
    ("crlf.x-crlf", b"\r\n.x\r\n", 250),
]

# Sequences that do contain <CRLF>.<CRLF>: the message really ends there
# (refused for its bare CR/LF or NUL); what follows is commands.
REAL_END = [
    ("cr-crlf.crlf", b"\r\r\n.\r\n"),
    ("lf-crlf.crlf", b"\n\r\n.\r\n"),
    ("nul-crlf.crlf", b"\x00\r\n.\r\n"),
    ("crlf-nul-crlf.crlf", b"\r\n\x00\r\n.\r\n"),
]


BYTEWISE = [x for x in NOT_END if x[0] in ("lf.lf", "crlf.lf", "lf.crlf",
                                            "crlf.cr", "crlf..crlf",
                                            "crlf-nul.crlf")]


@pytest.mark.parametrize("name,sep,code", NOT_END, ids=[x[0] for x in NOT_END])
def test_smuggling_not_an_end(env, name, sep, code):
    smuggle_case(env, sep, code, False)


@pytest.mark.parametrize("name,sep,code", BYTEWISE, ids=[x[0] for x in BYTEWISE])
def test_smuggling_not_an_end_bytewise(env, name, sep, code):
    """The same, one byte a write: the end-of-data state survives reads."""
    smuggle_case(env, sep, code, True)


def smuggle_case(env, sep, code, bytewise):
    c = env.session()
    open_data(c)
    stream = HEAD + sep + SMUGGLED + b"QUIT\r\n"
    if bytewise:
        for i in range(len(stream)):
            c.send(stream[i:i + 1])
            time.sleep(0.002)
    else:
        c.send(stream)
    r = c.reply(10)
    check(r, code, "5.6.0" if code == 554 else "2.0.0")
    check(c.reply(), 221)
    assert c.closed()
    calls = env.calls()
    if code == 554:
        assert calls == []
    else:
        assert len(calls) == 1
        call = calls[0]
        assert call.rcpts() == ["rcpt@example.net"]
        body = call.body()
        assert b"MAIL FROM:<evil@x.example>\nRCPT TO:<victim@x.example>\n" \
               b"DATA\nsmuggled\n" in body, body
        assert body.startswith(b"Subject: smuggle\n\nhello\n")
        assert body.endswith(b"smuggled\n")


@pytest.mark.parametrize("name,sep", REAL_END, ids=[x[0] for x in REAL_END])
def test_smuggling_real_end(env, name, sep):
    """A real <CRLF>.<CRLF> ends the message even after a bare CR/LF: the
    refused first message is not injected; what follows is commands, from
    the same authenticated client, and gives one message."""
    c = env.session()
    open_data(c)
    c.send(HEAD + sep + SMUGGLED + b"QUIT\r\n")
    rs = c.replies(6)
    assert [r.code for r in rs] == [554, 250, 250, 354, 250, 221], rs
    check(rs[0], 554, "5.6.0")
    call = env.one_call()
    assert call.argv[1:] == ["-i", "-f", "evil@x.example", "--",
                             "victim@x.example"]
    assert call.body() == b"smuggled\n"


# ---------------------------------------------------------------- content

@pytest.mark.parametrize("sent,spooled", [
    (b"..\r\n", b".\n"),
    (b"...\r\n", b"..\n"),
    (b".x\r\n", b"x\n"),
    (b"..x\r\n", b".x\n"),
    (b"a.\r\n", b"a.\n"),
    (b" .\r\n", b" .\n"),
    (b"x\r\n..\r\ny\r\n", b"x\n.\ny\n"),
    (b"..\r\n..\r\n", b".\n.\n"),
    (b"\r\n", b"\n"),
    (b"", b""),
    (b"a\r\nb\r\n\r\nc\r\n", b"a\nb\n\nc\n"),
    (b"Subject: 8bit\r\n\r\ncaf\xc3\xa9 \xff\xfe\x80\r\n", b"Subject: 8bit\n\ncaf\xc3\xa9 \xff\xfe\x80\n"),
    (b"tab\there\x01\x1b\x7f\r\n", b"tab\there\x01\x1b\x7f\n"),
    (b"x" * 998 + b"\r\n", b"x" * 998 + b"\n"),
])
def test_spooled_bytes(env, sent, spooled):
    c = env.session()
    r = c.transaction(body=sent)
    check(r, 250, "2.0.0")
    assert env.one_call().body() == spooled


def test_empty_message_at_once(env):
    c = env.session()
    open_data(c)
    c.send(b".\r\n")
    check(c.reply(), 250)
    assert env.one_call().body() == b""


def test_large_message_streamed(env):
    c = env.session()
    line = b"0123456789" * 9 + b"\r\n"            # 92 octets
    body = line * 20000                           # 1.8 MB
    check(c.transaction(body=body), 250)
    assert env.one_call().body() == body.replace(b"\r\n", b"\n")


@pytest.mark.parametrize("body", [
    b"a\x00b\r\n",
    b"\x00\r\n",
    b"Subject: x\r\n\r\nok\r\n\x00\r\n",
    b"a\rb\r\n",
    b"a\r\r\nb\r\n",
    b"a\nb\r\n",
    b"a\r\n\nb\r\n",
    b"Subject: x\nTo: y\r\n\r\nb\r\n",
    b"x" * 999 + b"\r\n",
    b"x" * 100000 + b"\r\n",
    b"ok\r\n" + b"y" * 5000 + b"\r\nok\r\n",
])
def test_refused_content(env, body):
    c = env.session()
    r = c.transaction(body=body)
    check(r, 554, "5.6.0")
    env.no_calls()
    # the session goes on, in step
    check(c.cmd("NOOP"), 250)
    check(c.transaction(rcpts=["next@example.net"]), 250)
    assert env.one_call().rcpts() == ["next@example.net"]
    rej = [kv(e) for e in find_events(c.log, "rejected")]
    assert any(x.get("cmd") == "END-OF-MESSAGE" and x["reply"].startswith("554 5.6.0")
               for x in rej), c.log


@pytest.mark.parametrize("extra,code", [(0, 250), (1, 552), (1000, 552)])
def test_size_limit_boundary(env, extra, code):
    limit = 1000
    c = env.session(max_message_size=limit)
    body = b"x" * (limit - 2 + extra) + b"\r\n"
    if extra >= 1000:
        body = (b"y" * 98 + b"\r\n") * 30       # many lines, 3000 octets
    open_data(c)
    c.send(body + b".\r\nNOOP\r\n")
    r = c.reply(10)
    if code == 250:
        check(r, 250, "2.0.0")
        assert env.one_call().body() == body.replace(b"\r\n", b"\n")
    else:
        check(r, 552, "5.3.4")
        env.no_calls()
    check(c.reply(), 250)          # the NOOP: DATA was read to its end


def test_size_over_limit_big_stream(env):
    c = env.session(max_message_size=10000)
    open_data(c)
    c.send((b"z" * 500 + b"\r\n") * 4000 + b".\r\n")    # 2 MB
    check(c.reply(20), 552, "5.3.4")
    check(c.cmd("NOOP"), 250)
    env.no_calls()


def test_declared_size_small_body_big(env):
    c = env.session(max_message_size=2000)
    check(c.cmd("MAIL FROM:<alice@example.org> SIZE=100"), 250)
    check(c.rcpt("r@example.net"), 250)
    check(c.data((b"w" * 98 + b"\r\n") * 50), 552, "5.3.4")
    env.no_calls()


# ---------------------------------------------------------------- disconnects

STAGES = [
    ("after-data-cmd", None),
    ("after-354", b""),
    ("header-only", b"Subject: x\r\n"),
    ("mid-line", b"Subject: x\r\n\r\nhel"),
    ("after-crlf", b"Subject: x\r\n\r\nhello\r\n"),
    ("after-dot", b"Subject: x\r\n\r\nhello\r\n."),
    ("after-dot-cr", b"Subject: x\r\n\r\nhello\r\n.\r"),
    ("bare-lf-dot", b"Subject: x\r\n\r\nhello\n.\n"),
    ("bare-cr-dot", b"Subject: x\r\n\r\nhello\r.\r"),
    ("big", (b"q" * 200 + b"\r\n") * 500),
]


@pytest.mark.parametrize("how", ["halfclose", "close"])
@pytest.mark.parametrize("where,data", STAGES, ids=[s[0] for s in STAGES])
def test_disconnect_during_data(env, where, data, how):
    c = env.session()
    check(c.mail("alice@example.org"), 250)
    check(c.rcpt("r@example.net"), 250)
    if data is None:
        c.send(b"DATA\r\n")
    else:
        check(c.cmd("DATA"), 354)
        c.send(data)
    time.sleep(0.1)
    if how == "halfclose":
        c.sock.shutdown(socket.SHUT_WR)
        rest = c.pending(2)
        assert b"250" not in rest, rest
        c.wait_exit(10)
    else:
        c.finish(10)
    env.no_calls()
    assert not find_events(c.log, "queued"), c.log


# ---------------------------------------------------------------- Received:

def test_received_header_one_rcpt(env):
    c = env.session()
    r = check(c.transaction(rcpts=["only@example.net"],
                            body=b"Subject: r\r\n\r\nbody\r\n"), 250, "2.0.0")
    qid = QUEUED_RE.match(r.text.split(" ", 1)[1]).group(1)
    c.quit()
    hdr, rest = split_received(env.one_call().message)
    m = received_re(helo="client\\.example", rcpt="only@example.net").match(
        hdr.decode("ascii"))
    assert m, hdr
    assert m.group("id") == qid
    assert rest == b"Subject: r\n\nbody\n"
    date = email.utils.parsedate_to_datetime(m.group("date"))
    assert abs((datetime.now(timezone.utc) - date).total_seconds()) < 300, m.group("date")
    q = find_events(c.log, "queued")
    assert len(q) == 1 and kv(q[0])["id"] == qid, c.log


def test_received_header_many_rcpts_no_for(env):
    c = env.session()
    check(c.transaction(rcpts=["a@example.net", "b@example.net"]), 250)
    hdr = env.one_call().received().decode("ascii")
    assert received_re(helo="client\\.example").match(hdr), hdr
    assert "for <" not in hdr


def test_received_header_only_one_added(env):
    c = env.session()
    body = b"Received: from elsewhere\r\n\tby somewhere; date\r\nSubject: x\r\n\r\nbody\r\n"
    check(c.transaction(body=body), 250)
    msg = env.one_call().message
    assert msg.count(b"Received:") == 2
    assert split_received(msg)[1] == body.replace(b"\r\n", b"\n")


def test_received_uses_latest_ehlo(env):
    c = env.session()
    c.ehlo("second.example")
    check(c.transaction(), 250)
    hdr = env.one_call().received().decode("ascii")
    m = received_re(rcpt="rcpt@example.net").match(hdr)
    assert m and m.group("helo") == "second.example", hdr


HOSTILE_HELO = [
    ("tab", "a\tb", True),
    ("parens", "x)(y", False),
    ("open-parens", "(((", False),
    ("close-paren", ")", False),
    ("spaces", "a b c", True),
    ("backslash", "x\\y", False),
    ("fake-by", "x.example (by fake) with SMTP", True),
    ("semicolon", "a;b=c", False),
    ("quote", 'x"y', False),
    ("brackets", "[192.0.2.9]", False),
    ("long", "h" * 400, True),
    ("long-labels", ".".join(["h" * 60] * 4), False),
    ("non-ascii", "\u00e9t\u00e9.example", True),
    ("ctrl", "a\x01\x1b[31mb", True),
    ("del", "a\x7fb", True),
    ("dash", "-", False),
]


@pytest.mark.parametrize("name,helo,may_refuse", HOSTILE_HELO,
                         ids=[h[0] for h in HOSTILE_HELO])
def test_received_hostile_helo(env, name, helo, may_refuse):
    c = env.start()
    r = c.cmd(b"EHLO " + helo.encode("utf-8"))
    if r.code != 250:
        assert may_refuse and r.code == 501, r
        c.ehlo("fallback.example")
    check(c.auth_plain("alice", env.users["alice"]), 235)
    check(c.transaction(rcpts=["one@example.net"], body=b"Subject: h\r\n\r\nb\r\n"), 250)
    msg = env.one_call().message
    hdr, rest = split_received(msg)
    assert rest == b"Subject: h\n\nb\n"
    assert all(32 <= b < 127 or b in (9, 10) for b in hdr), hdr
    lines = hdr.split(b"\n")[:-1]
    assert lines[0].startswith(b"Received: from ")
    assert all(l.startswith(b"\t") for l in lines[1:]), hdr
    assert all(len(l) <= 998 for l in lines), hdr
    m = received_re(rcpt="one@example.net").match(hdr.decode("ascii"))
    assert m, hdr
    assert m.group("ip") == PEER


def test_received_peer_from_tcpremoteip(env):
    c = env.session(environ={"REMOTE_ADDR": None, "TCPREMOTEIP": "198.51.100.7"})
    check(c.transaction(), 250)
    hdr = env.one_call().received().decode("ascii")
    assert received_re(ip="198.51.100.7", rcpt="rcpt@example.net").match(hdr), hdr
