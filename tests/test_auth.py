"""SMTP AUTH: PLAIN and LOGIN, the "=" and "*" forms, base64 errors,
authzid and username rules, failure limits and delays, PAM results; the
number of real backend calls is counted by pam_counter.so."""

import os
import random
import re
import signal
import socket
import time

import pytest

from smtptest import (PAM_EXEC, PEER, b64, check, find_events, kv,
                      plain_blob, timed)

ALICE = "Alice-Pw-1"   # PAM_USERS["alice"]


def auth_failed(log):
    return [kv(e) for e in find_events(log, "auth")
            if e.startswith("auth failed")]


# ---------------------------------------------------------------- success

@pytest.mark.parametrize("how", ["plain-ir", "plain-334", "login", "login-ir"])
def test_auth_success_pam(pam_env, how):
    c = pam_env.start()
    c.ehlo()
    if how == "plain-ir":
        r = c.auth_plain("alice", ALICE)
    elif how == "plain-334":
        r = check(c.cmd("AUTH PLAIN"), 334)
        assert r.text == "", r
        r = c.cmd(plain_blob("alice", ALICE))
    elif how == "login":
        r = c.auth_login("alice", ALICE)
    else:
        r = c.auth_login("alice", ALICE, ir=True)
    check(r, 235, "2.7.0")
    assert pam_env.backend_calls() == 1
    line = pam_env.pam_lines()[0]
    assert "user=alice" in line and "rhost=%s" % PEER in line, line
    check(c.transaction(), 250, "2.0.0")
    pam_env.one_call()
    c.quit()
    ok = [kv(e) for e in find_events(c.log, "auth") if e.startswith("auth ok")]
    assert len(ok) == 1, c.log
    assert ok[0]["user"] == "alice" and ok[0]["ip"] == PEER
    assert ok[0]["mech"] == ("PLAIN" if how.startswith("plain") else "LOGIN")


def test_auth_account_stack_consulted(pam_env):
    c = pam_env.start()
    c.login("alice", ALICE)
    assert len(pam_env.pam_lines("account")) == 1


@pytest.mark.parametrize("user", ["alice", "bob"])
@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_auth_success_file(env, user, mech):
    """bob's password has spaces, a colon and non-ASCII (UTF-8) octets."""
    c = env.start()
    c.ehlo()
    pw = env.users[user]
    r = c.auth_plain(user, pw) if mech == "PLAIN" else c.auth_login(user, pw)
    check(r, 235, "2.7.0")
    check(c.transaction(), 250)
    call = env.one_call()
    assert b"(authenticated user %s)" % user.encode() in call.received()


def test_authzid_equal_to_authcid_accepted(pam_env):
    c = pam_env.start()
    c.ehlo()
    check(c.auth_plain("alice", ALICE, authzid="alice"), 235, "2.7.0")
    assert pam_env.backend_calls() == 1


# ---------------------------------------------------------------- sequence

def test_auth_before_ehlo(pam_env):
    c = pam_env.start()
    check(c.auth_plain("alice", ALICE), 503, "5.5.1")
    assert pam_env.backend_calls() == 0


def test_auth_twice(pam_env):
    c = pam_env.start()
    c.login("alice", ALICE)
    check(c.auth_plain("alice", ALICE), 503, "5.5.1")
    check(c.cmd("AUTH LOGIN"), 503, "5.5.1")
    assert pam_env.backend_calls() == 1


def test_auth_inside_transaction(pam_env):
    c = pam_env.start()
    c.login("alice", ALICE)
    check(c.mail("alice@example.org"), 250)
    check(c.auth_plain("bob", "Bob-Pw-2"), 503, "5.5.1")
    check(c.rcpt("x@example.net"), 250)  # transaction still intact
    check(c.data(b"Subject: t\r\n\r\nx\r\n"), 250)
    assert pam_env.backend_calls() == 1
    assert b"(authenticated user alice)" in pam_env.one_call().received()


@pytest.mark.parametrize("line,code,enh", [
    ("AUTH", 501, "5.5.4"),
    ("AUTH ", 501, "5.5.4"),
    ("AUTH CRAM-MD5", 504, "5.5.4"),
    ("AUTH GSSAPI", 504, "5.5.4"),
    ("AUTH XOAUTH2 dXNlcj1hbGljZQ==", 504, "5.5.4"),
    ("AUTH PLAINX", 504, "5.5.4"),
])
def test_auth_bad_mechanism(pam_env, line, code, enh):
    c = pam_env.start()
    c.ehlo()
    check(c.cmd(line), code, enh)
    check(c.cmd("NOOP"), 250)
    assert pam_env.backend_calls() == 0


def test_auth_mechanism_case_insensitive(pam_env):
    c = pam_env.start()
    c.ehlo()
    check(c.cmd("auth plain " + plain_blob("alice", ALICE)), 235, "2.7.0")


# ---------------------------------------------------------------- "=" and "*"

def test_plain_equals_is_empty_response(pam_env):
    """"=" is an empty initial response: an empty PLAIN message is malformed."""
    c = pam_env.start()
    c.ehlo()
    check(c.cmd("AUTH PLAIN ="), 501, "5.5.2")
    assert pam_env.backend_calls() == 0


def test_login_equals_is_empty_username(pam_env):
    c = pam_env.start()
    c.ehlo()
    r = c.cmd("AUTH LOGIN =")
    if r.code == 334:
        assert r.text == "UGFzc3dvcmQ6", r
        r = c.cmd(b64(ALICE))
    check(r, 535, "5.7.8")
    assert pam_env.backend_calls() == 0


@pytest.mark.parametrize("where", ["plain-334", "login-user", "login-password"])
def test_cancel(pam_env, where):
    c = pam_env.start()
    c.ehlo()
    if where == "plain-334":
        check(c.cmd("AUTH PLAIN"), 334)
    elif where == "login-user":
        check(c.cmd("AUTH LOGIN"), 334)
    else:
        check(c.cmd("AUTH LOGIN"), 334)
        check(c.cmd(b64("alice")), 334)
    check(c.cmd("*"), 501, "5.0.0")
    assert pam_env.backend_calls() == 0
    # not authenticated, session goes on
    check(c.mail("alice@example.org"), 530, "5.7.0")
    c.quit()
    f = auth_failed(c.log)
    assert len(f) == 1 and f[0]["reason"] == "cancelled", c.log


# ---------------------------------------------------------------- base64

BAD_B64 = [
    "YWxpY2U",            # len % 4 == 3 (unpadded)
    "YWxpY2",             # len % 4 == 2
    "YWxpY",              # len % 4 == 1
    "A",
    "YWxpY2U==",          # extra padding
    "YW=pY2U=",           # padding in the middle
    "=YWxpY2U",           # leading padding
    "YWxp====",           # too much padding
    "YWxp!2U=",           # stray character
    "YWxp\tY2U=",         # tab inside
    "YWxp-2U_",           # base64url alphabet
    "YWxpY2U=YWxpY2U=",   # data after padding
    "\u00e9YWxpY2U=",     # non-ASCII
]


@pytest.mark.parametrize("blob", BAD_B64)
def test_bad_base64_plain_ir(pam_env, blob):
    """(A space inside would make a third argument: a syntax error, 501 5.5.4;
    that case is in test_bad_base64_login_steps.)"""
    c = pam_env.start()
    c.ehlo()
    check(c.cmd("AUTH PLAIN " + blob), 501, "5.5.2")
    assert pam_env.backend_calls() == 0
    check(c.cmd("NOOP"), 250)


@pytest.mark.parametrize("blob", BAD_B64[:6] + ["YWxp!2U=", "YWxp Y2U="])
def test_bad_base64_login_steps(pam_env, blob):
    c = pam_env.start()
    c.ehlo()
    check(c.cmd("AUTH LOGIN"), 334)
    check(c.cmd(blob), 501, "5.5.2")
    check(c.cmd("AUTH LOGIN"), 334)
    check(c.cmd(b64("alice")), 334)
    check(c.cmd(blob), 501, "5.5.2")
    assert pam_env.backend_calls() == 0


@pytest.mark.parametrize("raw", [
    b"alice\0" + ALICE.encode(),                 # one NUL only
    b"alice" + ALICE.encode(),                   # none
    b"",                                         # nothing
    b"\0\0\0",                                   # three NULs
    b"alice\0alice\0" + ALICE.encode() + b"\0x",  # NUL in the password
])
def test_malformed_plain(pam_env, raw):
    c = pam_env.start()
    c.ehlo()
    r = c.cmd("AUTH PLAIN " + (b64(raw) if raw else "="))
    assert r.code in (501, 535), r
    assert r.code != 235
    if r.code == 501:
        check(r, 501, "5.5.2")
    assert pam_env.backend_calls() == 0


# ---------------------------------------------------------------- credentials

@pytest.mark.parametrize("user,pw", [
    ("alice", "wrong"),
    ("alice", ALICE + "x"),
    ("alice", ALICE[:-1]),
    ("Alice", ALICE),
    ("nosuchuser", ALICE),
])
def test_bad_credentials(pam_env, user, pw):
    c = pam_env.start()
    c.ehlo()
    check(c.auth_plain(user, pw), 535, "5.7.8")
    assert pam_env.backend_calls() == 1
    check(c.mail("alice@example.org"), 530, "5.7.0")
    pam_env.no_calls()
    f = auth_failed(c.log)
    assert len(f) == 1 and f[0]["reason"] == "credentials", c.log


def test_same_reply_unknown_user_and_wrong_password(pam_env):
    c = pam_env.start(max_auth_failures=10)
    c.ehlo()
    a = c.auth_plain("alice", "wrong")
    b = c.auth_plain("nosuchuser", "wrong")
    assert a.raw == b.raw, (a, b)


def test_password_with_nul_is_not_truncated(pam_env):
    """LOGIN password "Alice-Pw-1\\0junk" must not authenticate as
    "Alice-Pw-1"."""
    c = pam_env.start()
    c.ehlo()
    r = c.auth_login("alice", ALICE.encode() + b"\0junk")
    assert r.code in (501, 535), r


@pytest.mark.parametrize("authzid", ["bob", "root", "alice ", "ALICE"])
def test_authzid_differs(pam_env, authzid):
    c = pam_env.start()
    c.ehlo()
    check(c.auth_plain("alice", ALICE, authzid=authzid), 535, "5.7.8")
    assert pam_env.backend_calls() == 0
    f = auth_failed(c.log)
    assert len(f) == 1 and f[0]["reason"] == "authzid", c.log


BAD_USERS = [
    ("cr", b"ali\rce"),
    ("lf", b"ali\nce"),
    ("crlf-end", b"alice\r\n"),
    ("nul", b"ali\0ce"),
    ("empty", b""),
    ("257", b"u" * 257),
]


@pytest.mark.parametrize("name,user", BAD_USERS, ids=[n for n, _ in BAD_USERS])
def test_bad_username_login(pam_env, name, user):
    c = pam_env.start()
    c.ehlo()
    check(c.cmd("AUTH LOGIN"), 334)
    r = c.cmd(b64(user) if user else "")
    if r.code == 334:
        r = c.cmd(b64(ALICE))
    check(r, 535, "5.7.8")
    assert pam_env.backend_calls() == 0
    f = auth_failed(c.log)
    assert len(f) == 1 and f[0]["reason"] == "bad-username", c.log


@pytest.mark.parametrize("name,user", [u for u in BAD_USERS if u[0] != "nul"],
                         ids=[n for n, _ in BAD_USERS if n != "nul"])
def test_bad_username_plain(pam_env, name, user):
    c = pam_env.start()
    c.ehlo()
    check(c.auth_plain(user, ALICE), 535, "5.7.8")
    assert pam_env.backend_calls() == 0


def test_username_256_reaches_backend(pam_env):
    c = pam_env.start()
    c.ehlo()
    check(c.auth_plain("u" * 256, ALICE), 535, "5.7.8")
    assert pam_env.backend_calls() == 1


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_empty_password(pam_env, mech):
    c = pam_env.start()
    c.ehlo()
    if mech == "PLAIN":
        r = c.cmd("AUTH PLAIN " + b64(b"\0alice\0"))
    else:
        check(c.cmd("AUTH LOGIN " + b64("alice")), 334)
        r = c.cmd("")
    check(r, 535, "5.7.8")
    assert pam_env.backend_calls() == 0
    f = auth_failed(c.log)
    assert len(f) == 1 and f[0]["reason"] == "empty-password", c.log


def test_auth_line_limits(pam_env):
    c = pam_env.start(max_auth_failures=10)
    c.ehlo()
    # 12000 octets of initial response fit in an AUTH line
    r = c.cmd("AUTH PLAIN " + b64(b"\0alice\0" + b"p" * 8900))
    assert r.code in (501, 535), r
    # 13000 do not
    check(c.cmd("AUTH PLAIN " + "QUFB" * 3250), 500, "5.5.2")
    check(c.cmd("NOOP"), 250)
    # ordinary commands keep the 512 limit
    check(c.cmd("NOOP " + "x" * 600), 500, "5.5.2")


def test_auth_continuation_line_limit(pam_env):
    """AUTH continuation lines may be up to 12288 octets, not 512."""
    c = pam_env.start(max_auth_failures=10)
    c.ehlo()
    check(c.cmd("AUTH LOGIN"), 334)
    r = c.cmd(b64(b"u" * 8000))            # 10668 octets: fits
    if r.code == 334:
        r = c.cmd(b64("pw"))
    check(r, 535, "5.7.8")                 # a bad username, not a long line
    check(c.cmd("AUTH LOGIN"), 334)
    r = c.cmd("QUFB" * 3300)               # 13200 octets: does not
    assert r.code in (500, 501), r
    check(c.cmd("NOOP"), 250)
    assert pam_env.backend_calls() == 0


# ---------------------------------------------------------------- limits

@pytest.mark.parametrize("failures", [
    ["bad", "bad", "bad"],
    ["cancel", "malformed", "bad"],
    ["bad", "badname", "emptypw"],
    ["malformed", "malformed", "malformed"],
])
def test_max_auth_failures(pam_env, failures):
    c = pam_env.start()   # max-auth-failures 3 (default)
    c.ehlo()

    def attempt(kind):
        if kind == "bad":
            return c.auth_plain("alice", "wrong")
        if kind == "cancel":
            check(c.cmd("AUTH LOGIN"), 334)
            return c.cmd("*")
        if kind == "malformed":
            return c.cmd("AUTH PLAIN YWxp!2U=")
        if kind == "badname":
            return c.auth_plain("ali\nce", "x")
        if kind == "emptypw":
            return c.cmd("AUTH PLAIN " + b64(b"\0alice\0"))
    expected = {"bad": 535, "cancel": 501, "malformed": 501, "badname": 535,
                "emptypw": 535}
    for kind in failures[:-1]:
        r = attempt(kind)
        check(r, expected[kind])
    check(attempt(failures[-1]), 421, "4.7.0")
    assert c.closed()
    assert pam_env.backend_calls() == failures.count("bad")
    d = find_events(c.log, "disconnect")
    assert d and kv(d[-1])["reason"] == "auth-failures", c.log


def test_max_auth_failures_one(pam_env):
    c = pam_env.start(max_auth_failures=1)
    c.ehlo()
    check(c.auth_plain("alice", "wrong"), 421, "4.7.0")
    assert c.closed()


def test_max_auth_failures_then_success(pam_env):
    c = pam_env.start(max_auth_failures=3)
    c.ehlo()
    check(c.auth_plain("alice", "wrong"), 535)
    check(c.auth_plain("alice", "wrong"), 535)
    check(c.auth_plain("alice", ALICE), 235, "2.7.0")
    check(c.transaction(), 250)


@pytest.mark.parametrize("kind", ["credentials", "bad-username", "empty-password",
                                  "malformed"])
def test_auth_failure_delay(pam_env, kind):
    c = pam_env.start(auth_failure_delay=1, max_auth_failures=10)
    c.ehlo()
    if kind == "credentials":
        r, took = timed(c.auth_plain, "alice", "wrong")
    elif kind == "bad-username":
        r, took = timed(c.auth_plain, "u" * 300, "x")
    elif kind == "empty-password":
        r, took = timed(c.cmd, "AUTH PLAIN " + b64(b"\0alice\0"))
    else:
        r, took = timed(c.cmd, "AUTH PLAIN YWxp!2U=")
    assert r.code in (501, 535), r
    assert took >= 0.95, "failed AUTH answered after %.3f s" % took


def test_auth_failure_delay_each_failure(pam_env):
    c = pam_env.start(auth_failure_delay=1, max_auth_failures=10)
    c.ehlo()
    t = time.monotonic()
    check(c.auth_plain("alice", "wrong"), 535)
    check(c.auth_plain("alice", "wrong2"), 535)
    assert time.monotonic() - t >= 1.9


def test_success_not_delayed(pam_env):
    c = pam_env.start(auth_failure_delay=3)
    c.ehlo()
    r, took = timed(c.auth_plain, "alice", ALICE)
    check(r, 235)
    assert took < 2.5, took


# ---------------------------------------------------------------- PAM results

# Codes that are no verdict on the user or the password: a broken module
# or stack, a backend down (test_pamstack.py has the broken files).
@pytest.mark.parametrize("ret", ["authinfo_unavail", "system_err", "buf_err",
                                 "module_unknown", "symbol_err",
                                 "service_err", "abort", "conv_err"])
def test_pam_unavailable_454(env, ret):
    env.use_pam(auth_ret=ret)
    c = env.start()
    c.ehlo()
    check(c.auth_plain("alice", ALICE), 454, "4.7.0")
    assert env.backend_calls() == 1
    check(c.mail("alice@example.org"), 530, "5.7.0")
    f = auth_failed(c.log)
    assert len(f) == 1 and f[0]["reason"] == "unavailable", c.log


def pam_pids(path, timeout=15):
    """The pids pam_counter wrote (the PAM process, its helper)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path) as f:
            text = f.read()
        if text.endswith("\n"):
            return [int(x) for x in text.split()]
        time.sleep(0.02)
    raise AssertionError("pam_counter wrote no pids to " + path)


def gone(pids, timeout=5):
    """Each pid has ended, or is a zombie (left to its parent or init)."""
    def alive(pid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not any(alive(p) for p in pids)


def hang_env(env, arg):
    pidfile = env.write("pam.pids", "", mode=0o666)
    env.use_pam(auth_args="%s=%s" % (arg, pidfile))
    return pidfile


def assert_gone(pids, what, timeout=5):
    """gone(), or the test fails, killing what lives on first so that a
    failure leaves nothing running for a minute or for ever."""
    if gone(pids, timeout):
        return
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    raise AssertionError("%s: still running: %r" % (what, pids))


def escape_env(env, hang=False):
    """pam_counter leaves a helper that called setsid() and forked again
    (escape=), then answers or, with hang, never does.  Returns the pid
    files: the escaped helper's, and hang='s."""
    escape = env.write("escape.pids", "", mode=0o666)
    args = "escape=%s" % escape
    hang_pidfile = None
    if hang:
        hang_pidfile = env.write("pam.pids", "", mode=0o666)
        args += " hang=%s" % hang_pidfile
    env.use_pam(auth_args=args)
    return escape, hang_pidfile


def test_pam_that_never_answers_is_stopped(env):
    """A PAM stack that never answers (a module waiting on an LDAP server
    that is down) costs the client `auth-timeout` seconds and a 454 - not
    `timeout`, nor a connection that hangs: the process running it is
    killed with the helper it forked, the monitor logs why, the failure
    counts, and the session goes on."""
    pidfile = hang_env(env, "hang")
    c = env.start(timeout=60, auth_timeout=2, max_auth_failures=2)
    c.ehlo()
    r, took = timed(c.auth_plain, "alice", ALICE)
    check(r, 454, "4.7.0")
    assert 1.5 <= took < 30, "454 after %.1f s, not auth-timeout's 2" % took
    pids = pam_pids(pidfile)
    assert len(pids) == 2 and c.proc.pid not in pids, pids
    assert gone(pids), "the PAM process or its helper lives on: %r" % pids
    assert re.search(r"monitor: authentication ip=%s took more than "
                     r"auth-timeout \(2 s\): stopped" % re.escape(PEER),
                     c.log), c.log
    f = auth_failed(c.log)
    assert len(f) == 1 and f[0]["reason"] == "timeout", c.log
    check(c.cmd("NOOP"), 250)
    # The second failure is the last one allowed.
    check(c.auth_plain("alice", ALICE), 421, "4.7.0")
    assert c.closed()
    assert env.backend_calls() == 2
    env.no_calls()


def test_pam_helper_does_not_outlive_the_check(env):
    """A module that leaves a process behind and answers: the login works,
    and the process is killed with the check's process group."""
    pidfile = hang_env(env, "helper")
    c = env.start()
    c.ehlo()
    check(c.auth_plain("alice", ALICE), 235, "2.7.0")
    pids = pam_pids(pidfile)
    assert gone(pids[1:]), "the helper outlived the check: %r" % pids
    check(c.transaction(), 250)
    assert len(env.calls()) == 1


def test_pam_daemon_does_not_outlive_the_check(env):
    """A module that starts a daemon - setsid(), a second fork, the first
    child gone - and answers: the daemon is in no process group of the
    check's and nobody's child, and still dies with the check."""
    escape, _ = escape_env(env)
    c = env.start()
    c.ehlo()
    check(c.auth_plain("alice", ALICE), 235, "2.7.0")
    pids = pam_pids(escape)
    assert len(pids) == 2 and c.proc.pid not in pids, pids
    assert_gone(pids[1:], "the daemon the check started")
    check(c.transaction(), 250)
    assert len(env.calls()) == 1


def test_pam_daemon_does_not_outlive_a_check_that_hangs(env):
    """The same daemon, then a stack that never answers: killed on the
    timeout with the check and its other helper."""
    escape, hang = escape_env(env, hang=True)
    c = env.start(auth_timeout=2)
    c.ehlo()
    check(c.auth_plain("alice", ALICE), 454, "4.7.0")
    daemon = pam_pids(escape)[1:]
    pids = pam_pids(hang)
    assert_gone(daemon + pids, "the check's daemon or processes")
    check(c.cmd("NOOP"), 250)


def pam_exec_env(env, hang=False):
    """A real pam_exec.so stack whose program starts `setsid sleep 61 &`
    (a sleep of 61.NNNNNN seconds, to know it among the processes) and
    writes its pid.  Returns (pidfile, marker, hang pidfile or None)."""
    if PAM_EXEC is None:
        pytest.skip("pam_exec.so not installed (libpam-modules)")
    marker = "61.%06d" % random.randrange(10 ** 6)
    pidfile = env.write("exec.pid", "", mode=0o666)
    script = env.write("pam-exec-helper",
                       "#!/bin/sh\n"
                       "setsid sleep %s </dev/null >/dev/null 2>&1 &\n"
                       "echo $! >%s\n" % (marker, pidfile), mode=0o755)
    hang_pidfile = None
    args = ""
    if hang:
        hang_pidfile = env.write("pam.pids", "", mode=0o666)
        args = "hang=%s" % hang_pidfile
    env.use_pam(auth_args=args,
                auth_before=["auth required %s %s" % (PAM_EXEC, script)])
    return pidfile, marker, hang_pidfile


def sleeps(marker):
    """The pids of live `sleep MARKER` processes."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if marker.encode() in argv:     # sleep, or setsid before its exec
            out.append(int(d))
    return out


@pytest.mark.parametrize("how", ["answer", "timeout"])
def test_pam_exec_setsid_helper_does_not_outlive_the_check(env, how):
    """pam_exec.so running a program that leaves `setsid sleep 61 &`
    behind: the sleep is gone when the check ends, whether it answered
    or was stopped on the timeout."""
    pidfile, marker, hang = pam_exec_env(env, hang=how == "timeout")
    # Room for the answer on a slow machine (valgrind: pam_exec forks a
    # shell); the timeout case needs a short one.
    c = env.start(auth_timeout=2 if hang else 60)
    c.ehlo()
    r = c.auth_plain("alice", ALICE)
    check(r, 235 if how == "answer" else 454)
    pid = pam_pids(pidfile)
    assert len(pid) == 1 and c.proc.pid not in pid, pid
    if hang:
        pid += pam_pids(hang)
    try:
        assert_gone(pid, "setsid sleep, or the check")
    finally:
        left = sleeps(marker)
        for p in left:
            os.kill(p, signal.SIGKILL)
    assert not left, "setsid sleep %s lives on: %r" % (marker, left)
    assert env.backend_calls() == 1


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "starttls"])
def test_client_that_leaves_stops_the_check(env, request, tls):
    """The client closes the connection while its check hangs: the
    session sees it and exits, the monitor stops the check at once - not
    after auth-timeout - with its helper and the daemon it started, and
    exits; the client's leaving is no failed login."""
    if tls:
        pki = request.getfixturevalue("pki")
        env.conf.update({"tls": "starttls", "tls-cert": pki.path("chain.pem"),
                         "tls-key": pki.path("leaf.key")})
    escape, hang = escape_env(env, hang=True)
    c = env.start(timeout=60, auth_timeout=60)
    c.ehlo()
    if tls:
        c.starttls()
        c.ehlo()
    c.send("AUTH PLAIN %s\r\n" % plain_blob("alice", ALICE))
    pids = pam_pids(hang) + pam_pids(escape)[1:]
    assert gone(pids, timeout=0.5) is False, "the check ended by itself"
    t = time.monotonic()
    assert c.finish(timeout=20) == 0
    assert time.monotonic() - t < 15
    assert_gone(pids, "the check, its helper or its daemon", timeout=10)
    assert re.search(r"monitor: authentication ip=%s: the client left; "
                     r"check stopped" % re.escape(PEER), c.log), c.log
    assert auth_failed(c.log) == [], c.log
    d = find_events(c.log, "disconnect")
    assert d and kv(d[-1])["reason"] == "eof", c.log
    env.no_calls()


def test_client_that_leaves_over_tcp_stops_the_check(env):
    """Over TCP a client that closes sends a FIN only, the same as one
    that half-closes: with nothing unread before it, it is gone."""
    pidfile = hang_env(env, "hang")
    srv = env.tcp(timeout=60, auth_timeout=60)
    c = srv.connect()
    c.ehlo()
    c.send("AUTH PLAIN %s\r\n" % plain_blob("alice", ALICE))
    pids = pam_pids(pidfile)
    assert gone(pids, timeout=0.5) is False, "the check ended by itself"
    c.sock.close()
    assert_gone(pids, "the check or its helper", timeout=10)
    deadline = time.monotonic() + 10
    while "the client left; check stopped" not in c.log and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    assert "the client left; check stopped" in c.log, c.log


def test_half_closed_client_with_commands_pending_gets_its_replies(env):
    """A client that sent a command after AUTH and then shut down its
    sending side may still read: it is not taken for gone, and gets both
    replies once auth-timeout has stopped the check."""
    pidfile = hang_env(env, "hang")
    c = env.start(timeout=60, auth_timeout=2)
    c.ehlo()
    c.send("AUTH PLAIN %s\r\nNOOP\r\n" % plain_blob("alice", ALICE))
    pam_pids(pidfile)
    c.sock.shutdown(socket.SHUT_WR)
    check(c.reply(30), 454, "4.7.0")
    check(c.reply(10), 250)
    assert c.closed()
    assert "took more than auth-timeout" in c.log, c.log
    assert "the client left" not in c.log, c.log


@pytest.mark.parametrize("signals", [1, 2, 5])
def test_monitor_stopped_during_a_hung_check_takes_its_daemon(env, signals):
    """SIGTERM to the monitor while a check that started a daemon hangs:
    the daemon goes too, and the monitor still dies of the signal; also
    when more stop signals follow at once (systemd, then an impatient
    administrator): the first may not leave a monitor that the next kills
    before it has swept the daemon away."""
    escape, hang = escape_env(env, hang=True)
    c = env.start(timeout=60)
    c.ehlo()
    c.send("AUTH PLAIN %s\r\n" % plain_blob("alice", ALICE))
    daemon = pam_pids(escape)[1:]
    pids = pam_pids(hang)
    assert gone(pids, timeout=0.5) is False, "the check ended by itself"
    for _ in range(signals):
        try:
            os.kill(c.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            break
        time.sleep(0.0005)
    assert c.proc.wait(15) == -signal.SIGTERM
    assert_gone(daemon + pids, "the check or its daemon, after its monitor")
    env.no_calls()


def test_monitor_stopped_during_a_hung_check(env):
    """SIGTERM to the monitor (systemd stopping the unit) while a check
    hangs: the check and its helper go with it."""
    pidfile = hang_env(env, "hang")
    c = env.start(timeout=60)
    c.ehlo()
    c.send("AUTH PLAIN %s\r\n" % plain_blob("alice", ALICE))
    pids = pam_pids(pidfile)
    assert gone(pids, timeout=0.5) is False, "the check ended by itself"
    os.kill(c.proc.pid, signal.SIGTERM)
    assert c.proc.wait(15) == -signal.SIGTERM
    assert gone(pids), "the check outlived its monitor: %r" % pids
    env.no_calls()


@pytest.mark.parametrize("ret", ["auth_err", "user_unknown", "maxtries",
                                 "cred_insufficient"])
def test_pam_auth_failure_codes_535(env, ret):
    env.use_pam(auth_ret=ret)
    c = env.start()
    c.ehlo()
    check(c.auth_plain("alice", ALICE), 535, "5.7.8")
    check(c.mail("alice@example.org"), 530, "5.7.0")


@pytest.mark.parametrize("ret", ["acct_expired", "perm_denied", "user_unknown"])
def test_pam_account_refused(env, ret):
    env.use_pam(acct_ret=ret)
    c = env.start()
    c.ehlo()
    check(c.auth_plain("alice", ALICE), 535, "5.7.8")
    assert len(env.pam_lines("account")) == 1
    check(c.mail("alice@example.org"), 530, "5.7.0")
    env.no_calls()


# ---------------------------------------------------------------- file backend

@pytest.mark.parametrize("line", [
    "carol:*",
    "carol:!",
    "carol:",
    "carol:!{hash}",
    "carol:*LK*{hash}",
])
def test_file_locked_or_empty_hash(env, line):
    env.users = {"alice": "Alice-Pw-1"}
    h = env.stage.hash("Carol-Pw-3")
    env.write_passwd([line.format(hash=h)])
    c = env.start()
    c.ehlo()
    check(c.auth_plain("carol", "Carol-Pw-3"), 535, "5.7.8")
    check(c.auth_plain("carol", "x"), 535, "5.7.8")
    check(c.auth_plain("alice", "Alice-Pw-1"), 235)


def test_file_sha512crypt_accepted(env):
    crypt = pytest.importorskip("crypt")
    env.users = {"alice": "Alice-Pw-1"}
    env.write_passwd(["dave:" + crypt.crypt("Dave-Pw-4",
                                            crypt.mksalt(crypt.METHOD_SHA512))])
    c = env.start()
    c.ehlo()
    check(c.auth_plain("dave", "Dave-Pw-5"), 535)
    check(c.auth_plain("dave", "Dave-Pw-4"), 235, "2.7.0")


def test_file_unknown_user(env):
    c = env.start()
    c.ehlo()
    check(c.auth_plain("mallory", "Alice-Pw-1"), 535, "5.7.8")
