"""The log lines (stderr with -d): one key=value line per event, the peer
address and its fallbacks, escaping of client text, no passwords."""

import re

import pytest

from smtptest import (PEER, SECRET_MARK, b64, check, find_events, kv,
                      log_events, plain_blob, LOG_PREFIX)


def test_event_sequence(env):
    c = env.session()
    check(c.transaction(sender="alice@example.org",
                        rcpts=["a@example.net", "b@example.net"],
                        body=b"Subject: log\r\n\r\n0123456789\r\n"), 250)
    check(c.mail("alice@example.org"), 250)
    check(c.rcpt("-bad@example.net"), 553)
    c.quit()
    assert c.finish() == 0
    ev = log_events(c.log)
    verbs = [e.split(" ", 1)[0] for e in ev]
    assert verbs == ["connect", "auth", "queued", "recipient", "recipient",
                     "rejected", "disconnect"], c.log
    assert kv(ev[0])["ip"] == PEER
    a = kv(ev[1])
    assert ev[1].startswith("auth ok ") and a["user"] == "alice" and \
        a["mech"] == "PLAIN" and a["ip"] == PEER, ev[1]
    q = kv(ev[2])
    assert re.fullmatch(r"[0-9A-Fa-f]{16}", q["id"])
    assert (q["user"], q["from"], q["nrcpt"], q["ip"]) == \
        ("alice", "<alice@example.org>", "2", PEER), ev[2]
    assert re.fullmatch(r"\d+", q["size"]) and int(q["size"]) > 0
    assert [kv(e) for e in ev[3:5]] == [
        {"id": q["id"], "to": "<a@example.net>"},
        {"id": q["id"], "to": "<b@example.net>"}], ev
    r = kv(ev[5])
    assert (r["ip"], r["user"], r["cmd"]) == (PEER, "alice", "RCPT"), ev[5]
    assert r["reply"].startswith("553 5.1.3"), ev[5]
    d = kv(ev[6])
    assert (d["ip"], d["user"], d["reason"], d["messages"]) == \
        (PEER, "alice", "quit", "1"), ev[6]
    assert re.fullmatch(r"\d+", d["commands"])


def test_every_line_prefixed_with_pid(env):
    c = env.session()
    check(c.transaction(), 250)
    c.send("BOGUS\r\nQUIT\r\n")
    check(c.reply(), 500)
    check(c.reply(), 221)
    c.finish()
    lines = [l for l in c.log.split("\n") if l]
    assert lines
    for l in lines:
        m = LOG_PREFIX.match(l)
        assert m, "log line without prefix: %r" % l
        assert int(m.group(1)) == c.proc.pid, l


@pytest.mark.parametrize("cmd,setup,reply", [
    ("MAIL", [], "530 5.7.0"),
    ("MAIL", ["AUTH"], "501 5.1.7"),
    ("RCPT", ["AUTH", "MAIL FROM:<alice@example.org>"], "553 5.1.3"),
    ("DATA", ["AUTH"], "503 5.5.1"),
])
def test_rejected_lines(env, cmd, setup, reply):
    c = env.start()
    c.ehlo()
    for s in setup:
        if s == "AUTH":
            check(c.auth_plain("alice", env.users["alice"]), 235)
        else:
            check(c.cmd(s), 250)
    line = {"MAIL": "MAIL FROM:<-x@example.org>" if setup else
            "MAIL FROM:<alice@example.org>",
            "RCPT": "RCPT TO:<|x@example.net>", "DATA": "DATA"}[cmd]
    r = c.cmd(line)
    assert "%d %s" % (r.code, r.enh) == reply, r
    c.quit()
    rej = [kv(e) for e in find_events(c.log, "rejected")]
    assert len(rej) == 1, c.log
    assert rej[0]["cmd"] == cmd and rej[0]["ip"] == PEER
    assert rej[0]["reply"].startswith(reply), rej[0]


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_auth_failed_line(env, mech):
    c = env.start()
    c.ehlo()
    if mech == "PLAIN":
        check(c.auth_plain("alice", "wrong"), 535)
    else:
        check(c.auth_login("alice", "wrong"), 535)
    c.quit()
    f = [kv(e) for e in find_events(c.log, "auth") if e.startswith("auth failed ")]
    assert len(f) == 1, c.log
    want = {"user": "alice", "mech": mech, "ip": PEER, "reason": "credentials"}
    assert {k: f[0].get(k) for k in want} == want, f


ESCAPE_USERS = [
    ("space", b"a b", "a\\x20b"),
    ("quote", b'a"b', "a\\x22b"),
    ("backslash", b"a\\b", "a\\x5cb"),
    ("esc", b"a\x1b[31mb", "a\\x1b[31mb"),
    ("lf", b"a\nb", "a\\x0ab"),
    ("cr", b"a\rb", "a\\x0db"),
    ("utf8", "j\u00fcrgen".encode(), "j\\xc3\\xbcrgen"),
    ("del", b"a\x7fb", "a\\x7fb"),
]


@pytest.mark.parametrize("name,user,logged", ESCAPE_USERS,
                         ids=[u[0] for u in ESCAPE_USERS])
def test_username_escaped(env, name, user, logged):
    c = env.start()
    c.ehlo()
    r = c.auth_login(user, "whatever-pw")
    assert r.code in (535, 501), r
    c.quit()
    log = c.log
    f = [e for e in find_events(log, "auth") if e.startswith("auth failed ")]
    assert len(f) == 1, log
    assert f[0].lower().count(("user=" + logged).lower()) == 1, f[0]
    # no raw control characters anywhere in the log
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", log), repr(log)


def test_no_forged_log_line(env):
    c = env.start()
    c.ehlo()
    fake = b"x\nsmtpauthd[1]: auth ok user=root mech=PLAIN ip=6.6.6.6"
    c.auth_login(fake, "pw")
    c.quit()
    for line in c.log.split("\n"):
        assert "user=root" not in line or "\\x0a" in line.lower(), c.log
    assert not [e for e in log_events(c.log) if "6.6.6.6" in e and
                e.startswith("auth ok")]


def test_helo_and_addresses_escaped(env):
    c = env.start()
    c.cmd("EHLO evil\x1b[2J.example")
    c.ehlo()
    check(c.auth_plain("alice", env.users["alice"]), 235)
    c.cmd(b"MAIL FROM:<a\x1b[2Jb@x.example>")
    check(c.mail("alice@example.org"), 250)
    c.cmd(b"RCPT TO:<r\x01@x.example>")
    check(c.rcpt("r@example.net"), 250)
    check(c.data(b"Subject: x\r\n\r\nx\r\n"), 250)
    c.quit()
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", c.log), repr(c.log)
    q = find_events(c.log, "queued")
    assert len(q) == 1 and 'from=<alice@example.org>' in q[0], c.log


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("right", [True, False])
def test_password_never_logged(env, mech, right):
    env.users = {"alice": SECRET_MARK}
    c = env.start()
    c.ehlo()
    pw = SECRET_MARK if right else SECRET_MARK + "-wrong"
    if mech == "PLAIN":
        r = c.auth_plain("alice", pw)
    else:
        r = c.auth_login("alice", pw)
    check(r, 235 if right else 535)
    if not right:
        c.cmd("AUTH PLAIN " + plain_blob("alice", pw))
    c.quit()
    log = c.log
    for needle in (SECRET_MARK, b64(pw), b64(SECRET_MARK),
                   plain_blob("alice", pw), plain_blob("alice", pw)[:12],
                   "Sekr1t"):
        assert needle not in log, "%r in the log" % needle


def test_password_never_logged_pam(pam_env):
    c = pam_env.start(max_auth_failures=5)
    c.ehlo()
    for pw in ("Nope-" + SECRET_MARK, "Alice-Pw-1"):
        c.auth_plain("alice", pw)
    c.quit()
    assert SECRET_MARK not in c.log and "Alice-Pw-1" not in c.log
    assert b64("Alice-Pw-1") not in c.log


# ---------------------------------------------------------------- peer

@pytest.mark.parametrize("environ,ip", [
    ({"REMOTE_ADDR": "192.0.2.1"}, "192.0.2.1"),
    ({"REMOTE_ADDR": None, "TCPREMOTEIP": "198.51.100.7"}, "198.51.100.7"),
    ({"REMOTE_ADDR": "192.0.2.1", "TCPREMOTEIP": "198.51.100.7"}, "192.0.2.1"),
    ({"REMOTE_ADDR": "2001:db8::5"}, "2001:db8::5"),
    ({"REMOTE_ADDR": None}, "unknown"),
    ({"REMOTE_ADDR": "not-an-ip", "TCPREMOTEIP": "198.51.100.7"}, "198.51.100.7"),
    ({"REMOTE_ADDR": "192.0.2.1; rm -rf /"}, "unknown"),
    ({"REMOTE_ADDR": "", "TCPREMOTEIP": ""}, "unknown"),
    ({"REMOTE_ADDR": "999.1.1.1"}, "unknown"),
])
def test_peer_fallback(env, environ, ip):
    c = env.start(environ=environ)
    c.quit()
    ev = find_events(c.log, "connect")
    assert len(ev) == 1 and kv(ev[0])["ip"] == ip, c.log
    d = find_events(c.log, "disconnect")
    assert d and kv(d[0])["ip"] == ip


def test_peer_reaches_pam_rhost(pam_env):
    c = pam_env.start(environ={"REMOTE_ADDR": "203.0.113.9"})
    c.login("alice", "Alice-Pw-1")
    assert "rhost=203.0.113.9" in pam_env.pam_lines()[0]


def test_disconnect_reasons_timeout_and_eof(env):
    c = env.start(timeout=1)
    check(c.reply(6), 421, "4.4.2")
    c.finish()
    d = find_events(c.log, "disconnect")
    assert len(d) == 1 and kv(d[0])["reason"] == "timeout", c.log
