"""The SMTP conversation: greeting, EHLO/HELO, simple commands, sequence
errors, command-line limits, max-errors, timeouts, pipelining and several
transactions per connection."""

import socket
import time

import pytest

from smtptest import HOSTNAME, PEER, check, find_events, kv, QUEUED_RE

MAX_DEFAULT = 36700160


def ext_lines(r):
    """The EHLO keywords (all lines but the first)."""
    return r.lines[1:]


def test_greeting_and_quit(env):
    c = env.start()                      # checks "220 test.example ESMTP"
    c.quit()
    assert c.finish() == 0
    ev = find_events(c.log, "connect")
    assert len(ev) == 1 and kv(ev[0])["ip"] == PEER, c.log
    d = find_events(c.log, "disconnect")
    assert len(d) == 1 and kv(d[0])["reason"] == "quit", c.log
    env.no_calls()


def test_ehlo_extensions(env):
    c = env.start()
    r = c.ehlo("client.example")
    assert r.lines[0].split()[0] == HOSTNAME, r
    ext = ext_lines(r)
    assert sorted(ext) == sorted(["PIPELINING", "SIZE %d" % MAX_DEFAULT,
                                  "8BITMIME", "AUTH PLAIN LOGIN",
                                  "ENHANCEDSTATUSCODES"]), r
    assert "STARTTLS" not in ext
    c.quit()


def test_ehlo_size_follows_config(env):
    c = env.start(max_message_size=12345)
    r = c.ehlo()
    assert "SIZE 12345" in ext_lines(r), r


def test_ehlo_twice_same_answer(env):
    c = env.start()
    r1 = c.ehlo("one.example")
    r2 = c.ehlo("two.example")
    assert r1.lines == r2.lines


def test_no_auth_offered_when_tls_required(pam_env):
    env = pam_env
    c = env.start(auth_require_tls="yes")
    r = c.ehlo()
    assert not any(l.startswith("AUTH") for l in r.lines), r
    assert "STARTTLS" not in r.lines  # tls none in this version
    check(c.cmd("AUTH PLAIN " + "AGFsaWNlAEFsaWNlLVB3LTE="), 538, "5.7.11")
    check(c.cmd("AUTH LOGIN"), 538, "5.7.11")
    check(c.mail("alice@example.org"), 530, "5.7.0")
    assert env.backend_calls() == 0
    env.no_calls()


def test_tls_required_refusal_counts_as_error(pam_env):
    c = pam_env.start(auth_require_tls="yes", max_errors=2)
    c.ehlo()
    check(c.cmd("AUTH PLAIN AGFsaWNlAEFsaWNlLVB3LTE="), 538, "5.7.11")
    check(c.cmd("AUTH PLAIN AGFsaWNlAEFsaWNlLVB3LTE="), 421, "4.7.0")
    assert c.closed()
    assert pam_env.backend_calls() == 0


def test_helo_plain_250(env):
    c = env.start()
    r = check(c.cmd("HELO client.example"), 250)
    assert len(r.lines) == 1, r
    assert r.lines[0].split()[0] == HOSTNAME, r
    # AUTH needs EHLO
    check(c.cmd("AUTH PLAIN AGFsaWNlAEFsaWNlLVB3LTE="), 503, "5.5.1")
    env.no_calls()


@pytest.mark.parametrize("line", ["EHLO", "HELO", "EHLO ", "HELO  "])
def test_helo_without_argument(env, line):
    c = env.start()
    check(c.cmd(line), 501, "5.5.4")
    c.ehlo()  # still usable


@pytest.mark.parametrize("line,code,enh", [
    ("NOOP", 250, "2.0.0"),
    ("noop", 250, "2.0.0"),
    ("NOOP some argument", 250, "2.0.0"),
    ("RSET", 250, "2.0.0"),
    ("VRFY alice", 252, "2.5.0"),
    ("VRFY <nosuchuser@example.org>", 252, "2.5.0"),
    ("HELP", 214, "2.0.0"),
    ("EXPN staff", 502, "5.5.1"),
    ("ETRN example.org", 502, "5.5.1"),
    ("TURN", 502, "5.5.1"),
    ("BDAT 10 LAST", 502, "5.5.1"),
    ("SEND FROM:<alice@example.org>", 502, "5.5.1"),
    ("SOML FROM:<alice@example.org>", 502, "5.5.1"),
    ("SAML FROM:<alice@example.org>", 502, "5.5.1"),
    ("STARTTLS", 502, "5.5.1"),
    ("FOO", 500, "5.5.2"),
    ("XYZZY plugh", 500, "5.5.2"),
    ("MAILFROM:<alice@example.org>", 500, "5.5.2"),
    ("", 500, "5.5.2"),
])
def test_simple_commands(env, line, code, enh):
    c = env.start()
    c.ehlo()
    check(c.cmd(line), code, enh)
    check(c.cmd("NOOP"), 250, "2.0.0")   # still alive, in step
    env.no_calls()


def test_vrfy_discloses_nothing(env):
    c = env.start()
    c.ehlo()
    a = c.cmd("VRFY alice")
    b = c.cmd("VRFY nosuchuser-xyz")
    assert a.code == b.code == 252
    assert [l.replace("alice", "X") for l in a.lines] == \
        [l.replace("nosuchuser-xyz", "X") for l in b.lines], (a, b)


@pytest.mark.parametrize("auth", [False, True])
def test_sequence_errors(env, auth):
    c = env.start()
    check(c.mail("alice@example.org"), 503, "5.5.1")     # before EHLO
    c.ehlo()
    if not auth:
        check(c.mail("alice@example.org"), 530, "5.7.0")
        # no MAIL (503) and no AUTH (530) both hold here
        for line in ("RCPT TO:<bob@example.org>", "DATA"):
            r = c.cmd(line)
            assert (r.code, r.enh) in ((503, "5.5.1"), (530, "5.7.0")), r
        env.no_calls()
        return
    check(c.auth_plain("alice", env.users["alice"]), 235, "2.7.0")
    check(c.rcpt("bob@example.org"), 503, "5.5.1")       # RCPT without MAIL
    check(c.cmd("DATA"), 503, "5.5.1")                   # DATA without MAIL
    check(c.mail("alice@example.org"), 250, "2.1.0")
    check(c.mail("alice@example.org"), 503, "5.5.1")     # nested MAIL
    check(c.cmd("DATA"), 503, "5.5.1")                   # DATA without RCPT
    check(c.rcpt("bob@example.org"), 250, "2.1.5")
    check(c.cmd("DATA now"), 501, "5.5.4")               # DATA with argument
    env.no_calls()
    check(c.data(b"Subject: x\r\n\r\nbody\r\n"), 250, "2.0.0")
    call = env.one_call()
    assert call.rcpts() == ["bob@example.org"]


def test_rset_clears_transaction_keeps_auth(env):
    c = env.session()
    check(c.mail("alice@example.org"), 250)
    check(c.rcpt("x@example.net"), 250)
    check(c.cmd("RSET"), 250, "2.0.0")
    check(c.cmd("DATA"), 503, "5.5.1")
    check(c.rcpt("y@example.net"), 503, "5.5.1")
    r = c.transaction(rcpts=["z@example.net"])
    check(r, 250, "2.0.0")
    assert env.one_call().rcpts() == ["z@example.net"]


def test_quit_closes_and_exits_zero(env):
    c = env.session()
    c.quit()
    assert c.finish() == 0


def test_eof_without_quit(env):
    c = env.session()
    c.sock.shutdown(socket.SHUT_WR)
    assert c.closed()
    rc = c.wait_exit()
    assert rc == 0
    d = find_events(c.log, "disconnect")
    assert d and kv(d[-1])["reason"] == "eof", c.log


# ---------------------------------------------------------------- limits

def test_command_line_512_ok(env):
    c = env.start()
    line = "NOOP " + "x" * (512 - 2 - 5)
    assert len(line) + 2 == 512
    check(c.cmd(line), 250)


def test_command_line_513_refused(env):
    c = env.start()
    line = "NOOP " + "x" * (513 - 2 - 5)
    check(c.cmd(line), 500, "5.5.2")
    check(c.cmd("NOOP"), 250)


def test_long_line_rest_discarded(env):
    """The tail of an over-long line is not taken as a command."""
    c = env.start()
    c.send("NOOP " + "x" * 507 + "QUIT\r\nNOOP\r\n")
    check(c.reply(), 500, "5.5.2")
    check(c.reply(), 250)
    assert c.pending(0.3) == b"", "extra replies for one long line"
    check(c.cmd("NOOP"), 250)


def test_long_line_smuggled_mail_not_executed(env):
    c = env.session()
    pad = "NOOP " + "y" * 600
    c.send(pad + "MAIL FROM:<alice@example.org>\r\n")
    check(c.reply(), 500, "5.5.2")
    assert c.pending(0.3) == b""
    check(c.cmd("RCPT TO:<x@example.net>"), 503, "5.5.1")  # no transaction


def test_huge_command_line(env):
    c = env.start()
    c.send("X" * 200000 + "\r\n")
    check(c.reply(), 500, "5.5.2")
    assert c.pending(0.3) == b""
    check(c.cmd("NOOP"), 250)


@pytest.mark.parametrize("data", [
    b"NO\x00OP\r\n",
    b"NOOP\x00\r\n",
    b"NOOP\rQUIT\r\n",
    b"NOOP x\ry\r\n",
])
def test_nul_or_bare_cr_in_command(env, data):
    c = env.start()
    c.send(data)
    check(c.reply(), 500, "5.5.2")
    assert c.pending(0.3) == b""
    check(c.cmd("NOOP"), 250)


def test_command_ends_at_bare_lf(env):
    c = env.start()
    c.send(b"NOOP\n")
    check(c.reply(), 250)
    c.send(b"EHLO client.example\n")
    check(c.reply(), 250)


# ---------------------------------------------------------------- max-errors

@pytest.mark.parametrize("setup,bad", [
    ("", "FOO"),                                  # 500 unknown
    ("", "RCPT TO:<x@example.net>"),              # 503 sequence
    ("", "EHLO"),                                 # 501 syntax
    ("EHLO client.example", "DATA"),              # 503 sequence
    ("EHLO client.example", "AUTH"),              # 501 no mechanism
])
def test_max_errors(env, setup, bad):
    c = env.start(max_errors=3)
    if setup:
        check(c.cmd(setup), 250)
    first = c.cmd(bad)
    assert 500 <= first.code < 600, first
    check(c.cmd("NOOP"), 250)
    second = c.cmd(bad)
    assert second.code == first.code, second
    check(c.cmd(bad), 421, "4.7.0")
    assert c.closed()
    d = find_events(c.log, "disconnect")
    assert d and kv(d[-1])["reason"] == "errors", c.log


def test_max_errors_one(env):
    c = env.start(max_errors=1)
    check(c.cmd("BOGUS"), 421, "4.7.0")
    assert c.closed()


def test_max_errors_not_reached(env):
    c = env.session(max_errors=3)
    for _ in range(2):
        check(c.cmd("BOGUS"), 500)
    for _ in range(5):
        check(c.cmd("NOOP"), 250)
    check(c.transaction(), 250)
    env.one_call()


# ---------------------------------------------------------------- timeouts

def test_timeout_idle(env):
    c = env.start(timeout=1)
    t = time.monotonic()
    r = c.reply(timeout=6)
    took = time.monotonic() - t
    check(r, 421, "4.4.2")
    assert 0.8 <= took < 4, took
    assert c.closed()
    d = find_events(c.log, "disconnect")
    assert d and kv(d[-1])["reason"] == "timeout", c.log


def test_timeout_drip_feed_does_not_extend(env):
    """`timeout` is for the whole line: a byte every 0.25 s must not keep
    the connection open past it."""
    c = env.start(timeout=1)
    t = time.monotonic()
    got = None
    for ch in "NOOP " + "x" * 30:
        try:
            c.send(ch)
        except OSError:
            break
        time.sleep(0.25)
        data = c.pending(0.01)
        if data:
            got = data
            break
    took = time.monotonic() - t
    if got is None:
        got = c.pending(3)
    assert got.startswith(b"421 4.4.2"), got
    assert took < 3.5, took


def test_timeout_in_auth_continuation(pam_env):
    c = pam_env.start(timeout=1)
    c.ehlo()
    check(c.cmd("AUTH LOGIN"), 334)
    check(c.reply(timeout=6), 421, "4.4.2")
    assert c.closed()
    assert pam_env.backend_calls() == 0


def test_data_timeout(env):
    c = env.session(data_timeout=1)
    check(c.mail("alice@example.org"), 250)
    check(c.rcpt("x@example.net"), 250)
    check(c.cmd("DATA"), 354)
    c.send("Subject: partial\r\n\r\nhalf a mess")
    check(c.reply(timeout=6), 421, "4.4.2")
    assert c.closed()
    env.no_calls()


def test_data_timeout_is_per_read(env):
    """data-timeout bounds each read, not the whole DATA."""
    c = env.session(data_timeout=1)
    check(c.mail("alice@example.org"), 250)
    check(c.rcpt("x@example.net"), 250)
    check(c.cmd("DATA"), 354)
    for i in range(6):
        c.send("line %d\r\n" % i)
        time.sleep(0.4)
    c.send(".\r\n")
    check(c.reply(), 250, "2.0.0")
    assert env.one_call().body() == b"".join(b"line %d\n" % i for i in range(6))


# ---------------------------------------------------------------- pipelining

def test_pipelined_transaction_one_write(env):
    c = env.session()
    c.send("MAIL FROM:<alice@example.org>\r\n"
           "RCPT TO:<one@example.net>\r\n"
           "RCPT TO:<two@example.net>\r\n"
           "DATA\r\n"
           "Subject: piped\r\n\r\nbody\r\n.\r\n"
           "QUIT\r\n")
    rs = c.replies(6)
    assert [r.code for r in rs] == [250, 250, 250, 354, 250, 221], rs
    assert c.closed()
    call = env.one_call()
    assert call.rcpts() == ["one@example.net", "two@example.net"]
    assert call.body() == b"Subject: piped\n\nbody\n"


def test_pipelined_whole_session_one_write(env):
    from smtptest import plain_blob
    c = env.start()
    c.send("EHLO client.example\r\n"
           "AUTH PLAIN " + plain_blob("alice", env.users["alice"]) + "\r\n"
           "MAIL FROM:<alice@example.org>\r\n"
           "RCPT TO:<one@example.net>\r\n"
           "DATA\r\n"
           "Subject: all at once\r\n\r\nbody\r\n.\r\n"
           "QUIT\r\n")
    rs = c.replies(6)
    assert [r.code for r in rs] == [250, 235, 250, 250, 354, 250], rs
    check(c.reply(), 221)
    call = env.one_call()
    assert call.body() == b"Subject: all at once\n\nbody\n"


def test_pipelined_with_refused_recipient(env):
    c = env.session()
    c.send("MAIL FROM:<alice@example.org>\r\n"
           "RCPT TO:<-oQ/tmp@example.net>\r\n"
           "RCPT TO:<good@example.net>\r\n"
           "DATA\r\n"
           "Subject: p\r\n\r\nbody\r\n.\r\n")
    rs = c.replies(5)
    assert [r.code for r in rs] == [250, 553, 250, 354, 250], rs
    assert env.one_call().rcpts() == ["good@example.net"]


def test_pipelined_two_transactions(env):
    c = env.session()
    msg = ("MAIL FROM:<alice@example.org>\r\nRCPT TO:<r%d@example.net>\r\n"
           "DATA\r\nSubject: %d\r\n\r\nbody %d\r\n.\r\n")
    c.send(msg % (1, 1, 1) + msg % (2, 2, 2) + "NOOP\r\n")
    rs = c.replies(9)
    assert [r.code for r in rs] == [250, 250, 354, 250] * 2 + [250], rs
    calls = env.calls()
    assert [x.rcpts() for x in calls] == [["r1@example.net"], ["r2@example.net"]]
    assert [x.body() for x in calls] == [b"Subject: 1\n\nbody 1\n",
                                         b"Subject: 2\n\nbody 2\n"]


def test_several_transactions(env):
    c = env.session()
    ids = []
    for i in range(3):
        r = check(c.transaction(sender="alice@example.org",
                                rcpts=["r%d@example.net" % i],
                                body=b"Subject: %d\r\n\r\nmsg %d\r\n" % (i, i)),
                  250, "2.0.0")
        m = QUEUED_RE.match(r.text.split(" ", 1)[1])
        assert m, r
        ids.append(m.group(1))
    c.quit()
    assert len(set(ids)) == 3, ids
    calls = env.calls()
    assert len(calls) == 3
    for i, call in enumerate(calls):
        assert call.rcpts() == ["r%d@example.net" % i]
        assert call.body() == b"Subject: %d\n\nmsg %d\n" % (i, i)
    q = find_events(c.log, "queued")
    assert [kv(e)["id"] for e in q] == ids, c.log
    d = find_events(c.log, "disconnect")
    assert kv(d[-1])["messages"] == "3", c.log


def test_write_timeout_client_never_reads(env):
    """`timeout` also bounds each write: a client that pipelines commands
    and never reads the replies must not keep smtpauthd forever."""
    import errno
    # The NOOPs are junk: without max-junk-commands 0 the 101st would end it.
    c = env.start(timeout=1, max_junk_commands=0)
    c.sock.setblocking(False)
    chunk = b"NOOP\r\n" * 2000
    stuck_since = None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and c.proc.poll() is None:
        try:
            c.sock.send(chunk)
            stuck_since = None
        except BlockingIOError:
            if stuck_since is None:
                stuck_since = time.monotonic()
            time.sleep(0.05)
        except OSError as e:
            if e.errno in (errno.EPIPE, errno.ECONNRESET):
                break
            raise
    t = time.monotonic()
    c.wait_exit(8)
    assert stuck_since is not None or c.proc.returncode is not None
    d = find_events(c.log, "disconnect")
    assert d and kv(d[-1])["reason"] in ("timeout", "write-error"), c.log
