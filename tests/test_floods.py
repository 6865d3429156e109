"""Floods and idle connections (issue 11): login-grace-time, which ends a
connection that has not logged in within that many seconds whatever it
does meanwhile; max-junk-commands, which ends one that sends too many
NOOP, RSET, VRFY and HELP; and an HTTP request as the first line, which
ends the connection without a reply.

The grace times are short (8 s) and every check of a time has a wide
margin: the close must come no earlier than the grace time after the
server was started and within GRACE_CLOSE_MAX seconds, also under
valgrind."""

import time

import pytest

from smtptest import HOSTNAME, PEER, check, find_events, kv, plain_blob

# Counted from the connection, so it must leave room for the exchanges a
# test makes before it runs out: a valgrind'd server loading its TLS
# certificate takes seconds before its greeting.
GRACE = 8
# Measured from before the server starts (Client.t_start): its clock, which
# starts with the connection, cannot run out earlier (less the rounding of
# its millisecond clock); under valgrind the greeting comes seconds later.
GRACE_EARLIEST = GRACE - 0.05
GRACE_CLOSE_MAX = GRACE + 15


def disconnect_reason(c):
    """The reason of the connection's disconnect line, which the server
    writes after its last reply (so wait for it)."""
    deadline = time.monotonic() + 10
    while True:
        d = find_events(c.log, "disconnect")
        if d or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(d) == 1, c.log
    return kv(d[0])["reason"]


def disconnect_fields(c):
    disconnect_reason(c)
    return kv(find_events(c.log, "disconnect")[0])


def wait_for_close(c):
    """The 421 that ends the session and the seconds it took to come,
    measured from before the server started; then the connection must
    close."""
    t = c.t_start
    r = c.reply(timeout=GRACE_CLOSE_MAX + 5)
    took = time.monotonic() - t
    assert c.closed(10), "connection still open after %r" % r
    return r, took


def check_grace_421(r):
    check(r, 421, "4.4.2")
    assert r.text == "4.4.2 %s Login grace time exceeded" % HOSTNAME, r


# ------------------------------------------------------------ login-grace-time

def test_grace_idle_client(env):
    c = env.start(login_grace_time=GRACE)
    r, took = wait_for_close(c)
    check_grace_421(r)
    assert GRACE_EARLIEST <= took < GRACE_CLOSE_MAX, took
    assert disconnect_reason(c) == "login-grace-time"
    assert c.wait_exit() == 0
    env.no_calls()


def test_grace_noop_every_half_second(env):
    """NOOPs keep `timeout` from firing, but not login-grace-time."""
    c = env.start(login_grace_time=GRACE)
    t = c.t_start
    c.ehlo()
    ok = 0
    while True:
        try:
            c.send("NOOP\r\n")
        except OSError:
            pass            # the 421 came while we slept, and the close
        r = c.reply(timeout=GRACE_CLOSE_MAX + 5)
        if r.code != 250:
            break
        ok += 1
        assert time.monotonic() - t < GRACE_CLOSE_MAX, "never closed"
        time.sleep(0.5)
    took = time.monotonic() - t
    check_grace_421(r)
    assert ok >= 2, ok
    assert GRACE_EARLIEST <= took < GRACE_CLOSE_MAX, took
    assert c.closed()
    assert disconnect_reason(c) == "login-grace-time"


def test_grace_half_a_line(env):
    """A client in the middle of a line is cut off at the grace time, not
    at the end of `timeout` (30 s here)."""
    c = env.start(login_grace_time=GRACE)
    c.send("EHLO client.exam")
    r, took = wait_for_close(c)
    check_grace_421(r)
    assert GRACE_EARLIEST <= took < GRACE_CLOSE_MAX, took
    assert disconnect_reason(c) == "login-grace-time"


def test_grace_drip_fed_line(env):
    """A byte every 0.3 s is a line that never ends before the grace time."""
    c = env.start(login_grace_time=GRACE)
    t = c.t_start
    got = b""
    for ch in "EHLO " + "x" * 60:
        try:
            c.send(ch)
        except OSError:
            break
        got = c.pending(0.3)
        if got:
            break
    took = time.monotonic() - t
    if not got:
        got = c.pending(3)
    assert got.startswith(b"421 4.4.2 %s Login grace time exceeded\r\n"
                          % HOSTNAME.encode()), got
    assert GRACE_EARLIEST <= took < GRACE_CLOSE_MAX, took


@pytest.mark.parametrize("answered", [0, 1], ids=["username", "password"])
def test_grace_unanswered_auth_login_prompt(env, answered):
    c = env.start(login_grace_time=GRACE)
    c.ehlo()
    r = check(c.cmd("AUTH LOGIN"), 334)
    if answered:
        r = check(c.cmd("YWxpY2U="), 334)
    r, took = wait_for_close(c)
    check_grace_421(r)
    assert took < GRACE_CLOSE_MAX, took
    assert disconnect_reason(c) == "login-grace-time"
    assert find_events(c.log, "auth") == [], c.log


def test_grace_stalled_starttls_handshake(env, pki):
    """STARTTLS, then no handshake: the grace time bounds it too (without
    a reply: the client is expected to speak TLS by then)."""
    c = env.start(login_grace_time=GRACE, tls="starttls",
                  tls_cert=pki.path("chain.pem"), tls_key=pki.path("leaf.key"))
    c.ehlo()
    t = time.monotonic()
    check(c.cmd("STARTTLS"), 220, "2.0.0")
    assert c.closed(GRACE_CLOSE_MAX), "still open"
    took = time.monotonic() - t
    assert took < GRACE_CLOSE_MAX, took
    assert c.buf == b"", c.buf
    assert disconnect_reason(c) == "login-grace-time"


def test_grace_stalled_implicit_tls_handshake(env, pki):
    """On 465 the clock starts with the connection, before the handshake:
    a client that never sends its ClientHello is gone after the grace
    time, not after timeout."""
    t = time.monotonic()
    c = env.start(login_grace_time=GRACE, tls="implicit", timeout=60,
                  tls_cert=pki.path("chain.pem"), tls_key=pki.path("leaf.key"),
                  greet=False)
    assert c.closed(GRACE_CLOSE_MAX), "still open"
    took = time.monotonic() - t
    assert GRACE_EARLIEST <= took < GRACE_CLOSE_MAX, took
    assert c.buf == b"", c.buf
    assert disconnect_reason(c) == "login-grace-time"


def test_grace_does_not_apply_after_login(env):
    c = env.session(login_grace_time=GRACE)
    time.sleep(GRACE + 1.5)
    check(c.cmd("NOOP"), 250, "2.0.0")
    check(c.transaction(), 250, "2.0.0")
    env.one_call()
    time.sleep(1)
    c.quit()
    assert disconnect_reason(c) == "quit"


def test_grace_failed_login_does_not_stop_it(env):
    c = env.start(login_grace_time=GRACE, max_auth_failures=10)
    c.ehlo()
    check(c.auth_plain("alice", "wrong"), 535, "5.7.8")
    r, took = wait_for_close(c)
    check_grace_421(r)
    assert disconnect_reason(c) == "login-grace-time"


def test_grace_queued_lines_not_served_after_it(env):
    """Lines that were waiting in the buffer when the grace time ran out
    (here behind a failed AUTH's delay) get no answer but the 421."""
    c = env.start(login_grace_time=GRACE, auth_failure_delay=GRACE + 1,
                  max_auth_failures=10)
    c.ehlo()
    c.send("AUTH PLAIN %s\r\nNOOP\r\nNOOP\r\n"
           % plain_blob("alice", "wrong"))
    check(c.reply(timeout=GRACE_CLOSE_MAX), 535, "5.7.8")
    r, took = wait_for_close(c)
    check_grace_421(r)
    assert disconnect_fields(c)["commands"] == "2", c.log


def test_grace_zero_is_off(env):
    """login-grace-time 0: NOOPs hold the connection past what a grace
    time would allow; `timeout` still ends an idle one."""
    c = env.start(login_grace_time=0, timeout=3)
    c.ehlo()
    end = time.monotonic() + 4.5
    while time.monotonic() < end:
        check(c.cmd("NOOP"), 250, "2.0.0")
        time.sleep(0.5)
    r, took = wait_for_close(c)
    check(r, 421, "4.4.2")
    assert r.text == "4.4.2 %s Error: timeout exceeded" % HOSTNAME, r
    assert disconnect_reason(c) == "timeout"


def test_timeout_shorter_than_grace_is_a_timeout(env):
    c = env.start(login_grace_time=30, timeout=1)
    r, took = wait_for_close(c)
    check(r, 421, "4.4.2")
    assert "Login grace" not in r.text, r
    assert took < 10, took
    assert disconnect_reason(c) == "timeout"


# ----------------------------------------------------------- max-junk-commands

JUNK = ["NOOP", "RSET", "VRFY alice", "HELP"]


@pytest.mark.parametrize("last", JUNK)
def test_junk_limit_boundary(env, last):
    """max-junk-commands N: N junk commands are answered, the next one gets
    421; EHLO, MAIL and bad commands in between do not count."""
    n = 6
    c = env.start(max_junk_commands=n)
    c.ehlo()
    for i in range(n):
        r = c.cmd(JUNK[i % len(JUNK)])
        assert r.code in (250, 252, 214), (i, r)
        c.ehlo()
        check(c.mail("alice@example.org"), 530, "5.7.0")
    r = check(c.cmd(last), 421, "4.7.0")
    assert r.text == "4.7.0 %s Too many junk commands, closing connection" \
        % HOSTNAME, r
    assert c.closed()
    assert disconnect_reason(c) == "junk-commands"
    assert disconnect_fields(c)["commands"] == str(3 * n + 2)


def test_junk_limit_default_pipelined(env):
    """The default, 100: a hundred pipelined NOOPs are answered, the 101st
    is 421 and the rest of the pipeline is never read."""
    c = env.start()
    c.send("NOOP\r\n" * 101 + "EHLO client.example\r\n")
    for i in range(100):
        check(c.reply(), 250, "2.0.0")
    check(c.reply(), 421, "4.7.0")
    assert c.closed()
    assert disconnect_reason(c) == "junk-commands"
    assert disconnect_fields(c)["commands"] == "101"


def test_junk_limit_zero_is_off(env):
    c = env.start(max_junk_commands=0)
    c.send("NOOP\r\n" * 150)
    for i in range(150):
        check(c.reply(), 250, "2.0.0")
    c.quit()
    assert disconnect_reason(c) == "quit"


def test_junk_limit_applies_after_login_and_restarts_per_message(env):
    """Logged in, the limit holds too, but a delivered message starts the
    count again (clients send RSET between messages)."""
    c = env.session(max_junk_commands=3)
    for _ in range(3):
        check(c.cmd("RSET"), 250, "2.0.0")
    check(c.transaction(), 250, "2.0.0")
    for _ in range(3):
        check(c.cmd("NOOP"), 250, "2.0.0")
    check(c.transaction(), 250, "2.0.0")
    for _ in range(3):
        check(c.cmd("RSET"), 250, "2.0.0")
    check(c.cmd("HELP"), 421, "4.7.0")
    assert c.closed()
    assert disconnect_reason(c) == "junk-commands"
    assert len(env.calls()) == 2


def test_junk_refused_message_does_not_restart_count(env):
    """Only a delivered message restarts the count, not a refused one."""
    env.knob("exit", 75)
    c = env.session(max_junk_commands=2)
    check(c.cmd("NOOP"), 250)
    check(c.cmd("NOOP"), 250)
    check(c.transaction(), 451)
    check(c.cmd("NOOP"), 421, "4.7.0")
    assert disconnect_reason(c) == "junk-commands"


# ------------------------------------------------------------- HTTP requests

HTTP_LINES = [
    "GET / HTTP/1.1",
    "POST /x HTTP/1.0",
    "HEAD /index.html HTTP/1.0",
    "PUT /upload HTTP/1.1",
    "OPTIONS * HTTP/1.1",
    "CONNECT mail.example.org:443 HTTP/1.1",
    "DELETE /a?b=c HTTP/1.1",
    "PATCH /a HTTP/1.1",
    "TRACE / HTTP/1.1",
    "PRI * HTTP/2.0",
    "GET http://example.org/ HTTP/1.1  ",
]


@pytest.mark.parametrize("line", HTTP_LINES)
def test_http_first_line_closes_at_once(env, line):
    c = env.start()
    c.send(line + "\r\nHost: example.org\r\nUser-Agent: test\r\n\r\n"
           "EHLO client.example\r\nQUIT\r\n")
    t = time.monotonic()
    assert c.closed(10), "still open"
    assert time.monotonic() - t < 5
    assert c.buf == b"", "a reply to an HTTP request: %r" % c.buf
    rej = find_events(c.log, "rejected")
    assert len(rej) == 1, c.log
    f = kv(rej[0])
    assert f == {"ip": PEER, "user": "-", "cmd": line.split()[0],
                 "reason": "non-smtp"}, rej
    d = disconnect_fields(c)
    assert d["reason"] == "non-smtp" and d["commands"] == "1", d
    assert c.wait_exit() == 0
    env.no_calls()


@pytest.mark.parametrize("line", [
    "GET",
    "GET /",
    "GET / HTTP/",
    "GET / HTTP/1.1 extra",
    "GET  HTTP/1.1",
    "get / http/1.1",
    "Get / HTTP/1.1",
    "GETX / HTTP/1.1",
    "GET / FTP/1.0",
    "Host: example.org",
])
def test_not_quite_http_is_an_ordinary_bad_command(env, line):
    c = env.start()
    check(c.cmd(line), 500, "5.5.2")
    check(c.cmd("NOOP"), 250, "2.0.0")
    assert find_events(c.log, "rejected") == [], c.log
    c.quit()


@pytest.mark.parametrize("first", ["EHLO client.example", "NOOP", "XYZZY"])
def test_http_line_later_is_an_ordinary_bad_command(env, first):
    c = env.start()
    c.cmd(first)
    check(c.cmd("GET / HTTP/1.1"), 500, "5.5.2")
    check(c.cmd("NOOP"), 250, "2.0.0")
    assert find_events(c.log, "rejected") == [], c.log
    c.quit()
    assert disconnect_reason(c) == "quit"


# ------------------------------------------------------------------ -T and -t

def parse_T(out):
    return dict(line.partition(" ")[::2] for line in out.decode().splitlines())


def test_T_defaults(env):
    r = env.run(["-T", "-f", "/dev/null"])
    assert r.returncode == 0, r
    conf = parse_T(r.stdout)
    assert conf["login-grace-time"] == "60"
    assert conf["max-junk-commands"] == "100"


def test_T_set(env):
    path = env.write_config({"login_grace_time": 0, "max_junk_commands": 7})
    r = env.run(["-T", "-f", path, "-o", "login-grace-time=86400"])
    assert r.returncode == 0, r
    conf = parse_T(r.stdout)
    assert conf["login-grace-time"] == "86400"
    assert conf["max-junk-commands"] == "7"


@pytest.mark.parametrize("key,value", [
    ("login-grace-time", "-1"),
    ("login-grace-time", "abc"),
    ("login-grace-time", "2s"),
    ("login-grace-time", "86401"),
    ("login-grace-time", "99999999999999999999999"),
    ("max-junk-commands", "-5"),
    ("max-junk-commands", "ten"),
    ("max-junk-commands", "1000001"),
])
def test_t_refuses_bad_values(env, key, value):
    path = env.write_config(raw="%s %s\n" % (key, value))
    r = env.run(["-t", "-f", path])
    assert r.returncode == 78, r
    err = r.stderr.decode()
    assert key in err and value in err, err
    r = env.run(["-t", "-f", env.write_config(), "-o", "%s=%s" % (key, value)])
    assert r.returncode == 78, r


def test_t_accepts_good_values(env):
    path = env.write_config(raw="login-grace-time 0\nmax-junk-commands 0\n")
    r = env.run(["-t", "-f", path])
    assert r.returncode == 0, r.stderr.decode()
