"""MAIL FROM and RCPT TO: syntax, parameters (SIZE, BODY, AUTH), address
refusals of every class the spec names, max-recipients; and that nothing
refused ever reaches sendmail's argv."""

import pytest

from smtptest import check, find_events, kv

MAX = 36700160


def session(env, **kw):
    return env.session(**kw)


# ---------------------------------------------------------------- MAIL

@pytest.mark.parametrize("line,sender", [
    ("MAIL FROM:<alice@example.org>", "alice@example.org"),
    ("MAIL FROM: <alice@example.org>", "alice@example.org"),
    ("mail from:<alice@example.org>", "alice@example.org"),
    ("Mail From:<alice@example.org>", "alice@example.org"),
    ("MAIL FROM:<>", "<>"),
    ("MAIL FROM:<alice@example.org> SIZE=1000", "alice@example.org"),
    ("MAIL FROM:<alice@example.org> size=1000", "alice@example.org"),
    ("MAIL FROM:<alice@example.org> SIZE=0", "alice@example.org"),
    ("MAIL FROM:<alice@example.org> SIZE=%d" % MAX, "alice@example.org"),
    ("MAIL FROM:<alice@example.org> BODY=7BIT", "alice@example.org"),
    ("MAIL FROM:<alice@example.org> BODY=8BITMIME", "alice@example.org"),
    ("MAIL FROM:<alice@example.org> AUTH=<>", "alice@example.org"),
    ("MAIL FROM:<alice@example.org> AUTH=alice+40example.org", "alice@example.org"),
    ("MAIL FROM:<alice@example.org> SIZE=10 BODY=8BITMIME AUTH=<>", "alice@example.org"),
])
def test_mail_accepted(env, line, sender):
    c = session(env)
    check(c.cmd(line), 250, "2.1.0")
    check(c.rcpt("rcpt@example.net"), 250, "2.1.5")
    check(c.data(b"Subject: m\r\n\r\nx\r\n"), 250)
    call = env.one_call()
    assert call.argv[1:] == ["-i", "-f", sender, "--", "rcpt@example.net"]


@pytest.mark.parametrize("size", [MAX + 1, 2**63, 2**64 - 1, 2**64,
                                  99999999999999999999])
def test_mail_size_over_limit(env, size):
    c = session(env)
    check(c.cmd("MAIL FROM:<alice@example.org> SIZE=%d" % size), 552, "5.3.4")
    check(c.rcpt("rcpt@example.net"), 503, "5.5.1")   # no transaction
    check(c.mail("alice@example.org"), 250)
    env.no_calls()


def test_mail_size_configured_limit(env):
    c = session(env, max_message_size=5000)
    check(c.cmd("MAIL FROM:<alice@example.org> SIZE=5001"), 552, "5.3.4")
    check(c.cmd("MAIL FROM:<alice@example.org> SIZE=5000"), 250, "2.1.0")


@pytest.mark.parametrize("params,code,enh", [
    ("SIZE=", 501, "5.5.4"),
    ("SIZE", 501, "5.5.4"),
    ("SIZE=abc", 501, "5.5.4"),
    ("SIZE=-1", 501, "5.5.4"),
    ("SIZE=+5", 501, "5.5.4"),
    ("SIZE=12a", 501, "5.5.4"),
    ("SIZE=1e3", 501, "5.5.4"),
    ("SIZE=0x10", 501, "5.5.4"),
    ("BODY=BINARYMIME", 501, "5.5.4"),
    ("BODY=8BIT", 501, "5.5.4"),
    ("BODY=", 501, "5.5.4"),
    ("SIZE=10 SIZE=10", 501, "5.5.4"),
    ("BODY=7BIT BODY=8BITMIME", 501, "5.5.4"),
    ("FOO=bar", 555, "5.5.4"),
    ("SMTPUTF8", 555, "5.5.4"),
    ("RET=FULL", 555, "5.5.4"),
    ("ENVID=abc", 555, "5.5.4"),
    ("XFORWARD=1", 555, "5.5.4"),
])
def test_mail_bad_params(env, params, code, enh):
    c = session(env)
    check(c.cmd("MAIL FROM:<alice@example.org> " + params), code, enh)
    check(c.rcpt("rcpt@example.net"), 503, "5.5.1")
    check(c.mail("alice@example.org"), 250, "2.1.0")
    env.no_calls()


@pytest.mark.parametrize("line", [
    "MAIL",
    "MAIL FROM",
    "MAIL FROM:",
    "MAIL FROM:alice@example.org",
    "MAIL FROM:<alice@example.org",
    "MAIL FROM:alice@example.org>",
    "MAIL TO:<alice@example.org>",
    "MAIL <alice@example.org>",
    "MAIL FROM<alice@example.org>",
])
def test_mail_syntax(env, line):
    c = session(env)
    check(c.cmd(line), 501, "5.5.4")
    check(c.mail("alice@example.org"), 250, "2.1.0")
    env.no_calls()


# ---------------------------------------------------------------- addresses

LONG_LOCAL = "a" * 64
DOM189 = "b" * 63 + "." + "c" * 63 + "." + "d" * 61           # 189 octets
DOM190 = "b" * 63 + "." + "c" * 63 + "." + "d" * 62           # 190 octets
DOM256 = ".".join(["e" * 63] * 4) + ".f"                      # 257 octets

GOOD = [
    "alice@example.org",
    "a.b@example.org",
    "a+tag@example.org",
    "o'brien@example.org",
    "a=b@example.org",
    "a_b@sub.example.org",
    "UPPER@Example.ORG",
    "x@localhost",
    "1@2.example",
    "x@[192.0.2.1]",
    "x@[IPv6:2001:db8::1]",
    "a-b@x-y.example",
    LONG_LOCAL + "@example.org",
    LONG_LOCAL + "@" + DOM189,                 # 254 octets: <path> is 256
]

# (id, address, syntax-ok): syntax-ok marks the classes for which a parser
# may also say "501 5.5.4" (the address is not a path at all).
BAD = [
    ("dash", "-be@x.example", False),
    ("dash-oQ", "-oQ/tmp", False),
    ("dash-double", "--@x.example", False),
    ("dash-f", "-f@x.example", False),
    ("ctrl", "a\x01b@x.example", True),
    ("esc", "a\x1bb@x.example", True),
    ("del", "a\x7fb@x.example", True),
    ("tab", "a\tb@x.example", True),
    ("space", "a b@x.example", True),
    ("comma", "a@b.example,c@d.example", False),
    ("comma-local", "a,b@x.example", False),
    ("pipe-first", "|/bin/sh@x.example", False),
    ("pipe-mid", "a|b@x.example", False),
    ("pipe-domain", "a@x|y.example", False),
    ("slash-first", "/tmp/x@x.example", False),
    ("nonascii-local", "j\u00fcrgen@x.example", False),
    ("nonascii-domain", "a@b\u00fccher.example", False),
    ("source-route", "@a.example:b@c.example", False),
    ("source-route-2", "@a.example,@b.example:c@d.example", False),
    ("include", ":include:/etc/passwd", False),
    ("include-at", ":include:/etc/passwd@x.example", False),
    ("local-65", "a" * 65 + "@x.example", False),
    ("domain-257", "a@" + DOM256, False),
    ("path-257", LONG_LOCAL + "@" + DOM190, False),
    ("no-at", "alice", False),
    ("no-domain", "alice@", False),
    ("no-local", "@x.example", False),
    ("leading-dot", ".a@x.example", False),
    ("trailing-dot", "a.@x.example", False),
    ("double-dot", "a..b@x.example", False),
    ("two-at", "a@b@x.example", False),
    ("backslash", "a\\b@x.example", False),
    ("parens", "$(id)@x.example", False),
    ("semicolon", "a;b@x.example", False),
    ("domain-underscore", "a@x_y.example", False),
    ("domain-hyphen", "a@-x.example", False),
    ("domain-double-dot", "a@x..example", False),
    ("domain-leading-dot", "a@.x.example", False),
    ("domain-label-64", "a@" + "b" * 64 + ".example", False),
    ("literal-bad", "a@[999.1.1.1]", False),
    ("literal-garbage", "a@[x;rm -rf /]", True),
    ("literal-ipv6-bad", "a@[IPv6:zz::1]", False),
]
QUOTED = ['"a b"@x.example', '"a"@x.example', '"|/bin/sh"@x.example',
          '"-oQ/tmp"@x.example', '"a\\"b"@x.example']


def enc(addr):
    return addr.encode("utf-8")


def refused(r, want, syntax_ok):
    if syntax_ok and r.code == 501 and r.enh == "5.5.4":
        return
    check(r, *want)


@pytest.mark.parametrize("name,addr,syntax_ok", BAD, ids=[b[0] for b in BAD])
def test_mail_bad_sender(env, name, addr, syntax_ok):
    c = session(env)
    refused(c.cmd(b"MAIL FROM:<" + enc(addr) + b">"), (501, "5.1.7"), syntax_ok)
    check(c.rcpt("rcpt@example.net"), 503, "5.5.1")
    env.no_calls()


@pytest.mark.parametrize("name,addr,syntax_ok", BAD, ids=[b[0] for b in BAD])
def test_rcpt_bad_recipient(env, name, addr, syntax_ok):
    c = session(env)
    check(c.mail("alice@example.org"), 250)
    refused(c.cmd(b"RCPT TO:<" + enc(addr) + b">"), (553, "5.1.3"), syntax_ok)
    check(c.rcpt("good@example.net"), 250, "2.1.5")
    check(c.data(b"Subject: r\r\n\r\nx\r\n"), 250)
    call = env.one_call()
    assert call.argv[1:] == ["-i", "-f", "alice@example.org", "--",
                             "good@example.net"]


@pytest.mark.parametrize("addr", QUOTED)
@pytest.mark.parametrize("cmd", ["MAIL", "RCPT"])
def test_quoted_local_part(env, cmd, addr):
    c = session(env)
    if cmd == "MAIL":
        check(c.cmd("MAIL FROM:<%s>" % addr), 553, "5.1.3")
        check(c.rcpt("x@example.net"), 503, "5.5.1")
    else:
        check(c.mail("alice@example.org"), 250)
        check(c.cmd("RCPT TO:<%s>" % addr), 553, "5.1.3")
        check(c.cmd("DATA"), 503, "5.5.1")
    env.no_calls()


def test_good_addresses_reach_sendmail_verbatim(env):
    c = session(env, max_recipients=len(GOOD) + 2)
    check(c.mail("a+tag@example.org"), 250)
    for a in GOOD:
        check(c.rcpt(a), 250, "2.1.5")
    check(c.data(b"Subject: good\r\n\r\nx\r\n"), 250)
    call = env.one_call()
    assert call.argv[1:] == ["-i", "-f", "a+tag@example.org", "--"] + GOOD


@pytest.mark.parametrize("addr", GOOD)
def test_good_sender(env, addr):
    c = session(env)
    check(c.mail(addr), 250, "2.1.0")


@pytest.mark.parametrize("addr", ["postmaster", "Postmaster", "POSTMASTER"])
def test_rcpt_postmaster_bare(env, addr):
    c = session(env)
    check(c.mail("alice@example.org"), 250)
    r = c.rcpt(addr)
    if addr == "POSTMASTER" and r.code != 250:
        return  # the spec names <postmaster> and <Postmaster> only
    check(r, 250, "2.1.5")
    check(c.data(b"Subject: p\r\n\r\nx\r\n"), 250)
    assert env.one_call().rcpts() == [addr]


def test_mail_postmaster_bare_refused(env):
    c = session(env)
    check(c.mail("postmaster"), 501, "5.1.7")


@pytest.mark.parametrize("params", ["NOTIFY=NEVER", "ORCPT=rfc822;a@b.example",
                                    "FOO=bar", "SIZE=10"])
def test_rcpt_params_refused(env, params):
    c = session(env)
    check(c.mail("alice@example.org"), 250)
    check(c.rcpt("x@example.net", params), 555, "5.5.4")
    check(c.cmd("DATA"), 503, "5.5.1")


@pytest.mark.parametrize("line", [
    "RCPT",
    "RCPT TO",
    "RCPT TO:",
    "RCPT TO:x@example.net",
    "RCPT TO:<x@example.net",
    "RCPT FROM:<x@example.net>",
    "RCPT <x@example.net>",
])
def test_rcpt_syntax(env, line):
    c = session(env)
    check(c.mail("alice@example.org"), 250)
    check(c.cmd(line), 501, "5.5.4")
    check(c.cmd("DATA"), 503, "5.5.1")


def test_rcpt_null_path_refused(env):
    c = session(env)
    check(c.mail("alice@example.org"), 250)
    r = c.cmd("RCPT TO:<>")
    assert (r.code, r.enh) in ((501, "5.5.4"), (553, "5.1.3")), r


def test_rcpt_two_paths_on_one_line(env):
    c = session(env)
    check(c.mail("alice@example.org"), 250)
    r = c.cmd("RCPT TO:<a@b.example> <c@d.example>")
    assert r.code in (501, 553, 555), r
    check(c.cmd("DATA"), 503, "5.5.1")


def test_rcpt_space_after_colon(env):
    c = session(env)
    check(c.mail("alice@example.org"), 250)
    check(c.cmd("RCPT TO: <x@example.net>"), 250, "2.1.5")


@pytest.mark.parametrize("limit", [1, 3])
def test_max_recipients(env, limit):
    c = session(env, max_recipients=limit)
    check(c.mail("alice@example.org"), 250)
    for i in range(limit):
        check(c.rcpt("r%d@example.net" % i), 250, "2.1.5")
    check(c.rcpt("over@example.net"), 452, "4.5.3")
    check(c.rcpt("over2@example.net"), 452, "4.5.3")
    check(c.data(b"Subject: many\r\n\r\nx\r\n"), 250)
    assert env.one_call().rcpts() == ["r%d@example.net" % i for i in range(limit)]
    rej = [kv(e) for e in find_events(c.log, "rejected")]
    assert any(x.get("cmd") == "RCPT" and x.get("reply", "").startswith("452 4.5.3")
               for x in rej), c.log


def test_max_recipients_per_message(env):
    """The count starts again with each transaction."""
    c = session(env, max_recipients=2)
    for n in range(2):
        check(c.mail("alice@example.org"), 250)
        check(c.rcpt("a%d@example.net" % n), 250)
        check(c.rcpt("b%d@example.net" % n), 250)
        check(c.data(b"Subject: x\r\n\r\nx\r\n"), 250)
    assert len(env.calls()) == 2


def test_duplicate_recipients_kept_or_merged(env):
    c = session(env)
    check(c.mail("alice@example.org"), 250)
    check(c.rcpt("x@example.net"), 250)
    check(c.rcpt("x@example.net"), 250)
    check(c.data(b"Subject: x\r\n\r\nx\r\n"), 250)
    assert env.one_call().rcpts() in (["x@example.net"],
                                      ["x@example.net", "x@example.net"])
