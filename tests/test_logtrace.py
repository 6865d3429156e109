"""The log traces every message (issue 12): msgid= on the queued line, one
recipient line per recipient, from= and id= on rejected lines, a line for
AUTH refused before TLS, the process title after AUTH, and
received-client hide (no client address or HELO in what reaches
sendmail)."""

import os
import re
import time

import pytest

from smtptest import (HOSTNAME, PEER, QUEUED_RE, check, find_events, kv,
                      log_events)

REJECTED_RE = re.compile(r'^rejected ip=\S+ user=\S+ cmd=\S+ reply="[^"]*"'
                         r'(?: from=<[^>\s]*>)?(?: id=[0-9A-F]{16})?$')


def queued_id(r):
    return QUEUED_RE.match(r.text.split(" ", 1)[1]).group(1)


def one_message(env, body, rcpts=("rcpt@example.net",)):
    """One message with body; (its queued line's fields, the log)."""
    c = env.session()
    r = check(c.transaction(rcpts=rcpts, body=body), 250)
    c.quit()
    assert c.finish() == 0
    q = find_events(c.log, "queued")
    assert len(q) == 1, c.log
    fields = kv(q[0])
    assert fields["id"] == queued_id(r), (q, r)
    return fields, c.log


# ---------------------------------------------------------------- msgid=

@pytest.mark.parametrize("body,msgid", [
    (b"Message-ID: <abc.123@example.org>\r\nSubject: x\r\n\r\nhi\r\n",
     "<abc.123@example.org>"),
    # the field name in any case, after other (folded) fields
    (b"Subject: a\r\n long subject\r\nmessage-id:   <lower@example.org>  \r\n"
     b"\r\nhi\r\n", "<lower@example.org>"),
    # folded: the line break goes
    (b"Subject: x\r\nMessage-ID:\r\n <folded.1@example.org>\r\n\r\nhi\r\n",
     "<folded.1@example.org>"),
    # the first one
    (b"Message-ID: <first@example.org>\r\nMessage-ID: <second@example.org>"
     b"\r\n\r\nhi\r\n", "<first@example.org>"),
    # none
    (b"Subject: no id\r\n\r\nhi\r\n", "-"),
    # only in the body (after the empty line): not taken
    (b"Subject: fwd\r\n\r\nMessage-ID: <in.body@example.org>\r\n", "-"),
    # a field that only starts like it
    (b"Message-IDs: <not@example.org>\r\n\r\nhi\r\n", "-"),
    # a headers-only message (no empty line at all)
    (b"Message-ID: <only.headers@example.org>\r\n", "<only.headers@example.org>"),
], ids=["plain", "case-and-blanks", "folded", "first", "none", "body-only",
        "other-field", "headers-only"])
def test_msgid(env, body, msgid):
    q, _ = one_message(env, body)
    assert q["msgid"] == msgid, q


def test_msgid_escaped_and_bounded(env):
    evil = b"<a b\"c=d\x1b[2J@example.org>"
    q, log = one_message(env, b"Message-ID: " + evil + b"\r\n\r\nhi\r\n")
    assert q["msgid"] == "<a\\x20b\\x22c\\x3dd\\x1b[2J@example.org>", q
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", log), repr(log)
    long_id = b"<" + b"x" * 900 + b"@example.org>"
    q, _ = one_message(env, b"Message-ID: " + long_id + b"\r\n\r\nhi\r\n")
    assert q["msgid"].startswith("<xxxx") and q["msgid"].endswith("..."), q
    assert len(q["msgid"]) < 300, q


# ---------------------------------------------------------------- recipient

def test_one_recipient_line_each_in_order(env):
    c = env.session()
    rcpts = ["z@example.net", "a@example.net", "m@example.com"]
    r1 = check(c.transaction(rcpts=rcpts), 250)
    r2 = check(c.transaction(rcpts=["second@example.net"]), 250)
    c.quit()
    c.finish()
    ev = log_events(c.log)
    verbs = [e.split(" ", 1)[0] for e in ev]
    assert verbs == ["connect", "auth", "queued", "recipient", "recipient",
                     "recipient", "queued", "recipient", "disconnect"], c.log
    id1, id2 = queued_id(r1), queued_id(r2)
    assert id1 != id2
    assert [kv(e) for e in ev[3:6]] == [{"id": id1, "to": "<%s>" % a}
                                        for a in rcpts], ev
    assert kv(ev[7]) == {"id": id2, "to": "<second@example.net>"}, ev
    assert ev[3] == "recipient id=%s to=<z@example.net>" % id1, ev[3]
    # and the same id is the one in the Received: header sendmail got
    calls = env.calls()
    assert [("id %s" % i).encode() in call.received()
            for call, i in zip(calls, (id1, id2))] == [True, True]


def test_no_recipient_lines_when_not_queued(env):
    env.knob("exit", 67)
    c = env.session()
    check(c.transaction(rcpts=["gone@example.net"]), 550, "5.1.1")
    c.quit()
    c.finish()
    assert find_events(c.log, "queued") == [], c.log
    assert find_events(c.log, "recipient") == [], c.log
    rej = find_events(c.log, "rejected")
    assert len(rej) == 1 and REJECTED_RE.match(rej[0]), c.log
    assert kv(rej[0])["cmd"] == "END-OF-MESSAGE" and \
        kv(rej[0])["from"] == "<alice@example.org>" and \
        "id" in kv(rej[0]), rej


# ---------------------------------------------------------------- rejected

def test_rejected_lines_name_sender_and_id(env):
    c = env.start()
    c.ehlo()
    check(c.mail("alice@example.org"), 530)             # before AUTH
    check(c.auth_plain("alice", env.users["alice"]), 235)
    check(c.mail("alice@example.org"), 250)
    check(c.rcpt("|x@example.net"), 553)                 # in the transaction
    check(c.rcpt("ok@example.net"), 250)
    r = check(c.data(b"Subject: x\r\n\r\nhi\r\n"), 250)
    qid = queued_id(r)
    check(c.mail("alice@example.org"), 250)
    check(c.rcpt("ok@example.net"), 250)
    r = c.data(b"Subject: bare\nLF\r\n\r\nhi\r\n")       # end of data
    check(r, 554, "5.6.0")
    check(c.cmd("RSET"), 250)
    check(c.mail("-x@example.org"), 501)                 # no transaction
    c.quit()
    c.finish()
    rej = find_events(c.log, "rejected")
    assert len(rej) == 4, c.log
    for e in rej:
        assert REJECTED_RE.match(e), e
    f = [kv(e) for e in rej]
    assert (f[0]["cmd"], f[0]["user"]) == ("MAIL", "-") and \
        "from" not in f[0] and "id" not in f[0], rej[0]
    assert (f[1]["cmd"], f[1]["from"], f[1]["id"]) == \
        ("RCPT", "<alice@example.org>", qid), rej[1]
    assert f[1]["reply"].startswith("553 5.1.3"), rej[1]
    assert (f[2]["cmd"], f[2]["from"]) == \
        ("END-OF-MESSAGE", "<alice@example.org>"), rej[2]
    assert re.fullmatch(r"[0-9A-F]{16}", f[2]["id"]) and f[2]["id"] != qid
    assert f[2]["reply"].startswith("554 5.6.0"), rej[2]
    assert f[3]["cmd"] == "MAIL" and "from" not in f[3] and \
        "id" not in f[3], rej[3]
    # the old keys keep their order: ip user cmd reply
    assert rej[1].startswith("rejected ip=%s user=alice cmd=RCPT reply=\"553 "
                             % PEER), rej[1]


def test_rejected_null_sender(env):
    c = env.session()
    check(c.mail(""), 250)
    check(c.rcpt("|x@example.net"), 553)
    c.quit()
    c.finish()
    rej = find_events(c.log, "rejected")
    assert len(rej) == 1 and REJECTED_RE.match(rej[0]), c.log
    assert kv(rej[0])["from"] == "<>", rej


# ---------------------------------------------------------------- 538

def test_auth_before_tls_is_logged(env):
    c = env.start(auth_require_tls="yes")
    c.ehlo()
    check(c.cmd("AUTH PLAIN AGFsaWNlAEFsaWNlLVB3LTE="), 538, "5.7.11")
    check(c.cmd("AUTH LOGIN"), 538, "5.7.11")
    c.quit()
    c.finish()
    rej = find_events(c.log, "rejected")
    assert rej == ['rejected ip=%s user=- cmd=AUTH reply="538 5.7.11 '
                   'Encryption required for requested authentication '
                   'mechanism"' % PEER] * 2, c.log
    # not an auth line: fail2ban's filter counts those, and no password
    # was checked (nor logged: the initial response is nowhere)
    assert find_events(c.log, "auth") == [], c.log
    assert "AGFsaWNl" not in c.log


# ---------------------------------------------------------------- title

def children(pid):
    kids = []
    for path in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/children" % (pid, path)) as f:
                kids += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return kids


def the_session(monitor):
    deadline = time.monotonic() + 5
    while True:
        kids = children(monitor)
        if len(kids) == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(kids) == 1, (monitor, kids)
    return kids[0]


def cmdline(pid):
    """/proc/PID/cmdline as ps -o args shows it (NULs as blanks)."""
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        raw = f.read()
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")


def test_process_title_after_auth(env):
    c = env.start(environ={"REMOTE_ADDR": "198.51.100.9"})
    c.ehlo()
    session = the_session(c.proc.pid)
    before = cmdline(session)
    assert before.split(" ")[0] == env.stage.binary and "-f" in before, before
    check(c.auth_plain("alice", env.users["alice"]), 235)
    check(c.cmd("NOOP"), 250)       # the title is set before the 235
    assert cmdline(session) == "smtpauthd: alice@198.51.100.9", \
        cmdline(session)
    # The monitor, the process to stop to stop the user, says so too.
    assert cmdline(c.proc.pid) == "smtpauthd: alice@198.51.100.9", \
        cmdline(c.proc.pid)
    # Both keep their short name: the session's seccomp filter forbids
    # prctl, and pidof and killall find the monitor by it.
    for pid in (session, c.proc.pid):
        with open("/proc/%d/comm" % pid) as f:
            assert f.read().strip() == \
                os.path.basename(env.stage.binary)[:15]
    # The session still works (no system call of the title killed it).
    check(c.transaction(), 250)
    c.quit()
    assert c.finish() == 0
    assert "killed" not in c.log, c.log


def test_process_title_not_before_auth(env):
    c = env.start()
    c.ehlo()
    session = the_session(c.proc.pid)
    check(c.auth_plain("alice", "wrong"), 535)
    check(c.cmd("NOOP"), 250)
    assert "smtpauthd:" not in cmdline(session), cmdline(session)
    c.quit()
    c.finish()


# ---------------------------------------------------------------- Received:

HOME_IP = "198.51.100.77"
HOME_HELO = "home-pc.dsl.example"


def received_with(env, **conf):
    c = env.start(environ={"REMOTE_ADDR": HOME_IP}, **conf)
    c.ehlo(HOME_HELO)
    check(c.auth_plain("alice", env.users["alice"]), 235)
    r = check(c.transaction(rcpts=["r@example.net"]), 250)
    c.quit()
    c.finish()
    return env.one_call().message, queued_id(r), c.log


def test_received_client_hide(env):
    msg, qid, log = received_with(env, received_client="hide")
    assert HOME_IP.encode() not in msg and HOME_HELO.encode() not in msg and \
        b"home-pc" not in msg, msg
    hdr, _, rest = msg.partition(b"\n\t(authenticated user alice)")
    assert re.fullmatch(rb"Received: by %s \(smtpauthd\) with ESMTPA id %s" % (
        re.escape(HOSTNAME.encode()), qid.encode()), hdr), msg
    assert re.match(rb"\n\tfor <r@example\.net>; [^\n]+\nSubject: test\n",
                    rest), msg
    # the log still has them
    assert kv(find_events(log, "queued")[0])["ip"] == HOME_IP, log
    assert kv(find_events(log, "connect")[0])["ip"] == HOME_IP, log


@pytest.mark.parametrize("conf", [{}, {"received_client": "show"}],
                         ids=["default", "show"])
def test_received_client_show(env, conf):
    msg, qid, _ = received_with(env, **conf)
    assert msg.startswith(b"Received: from %s ([%s])\n\tby %s (smtpauthd) "
                          b"with ESMTPA id %s\n" % (
                              HOME_HELO.encode(), HOME_IP.encode(),
                              HOSTNAME.encode(), qid.encode())), msg


def test_received_client_in_T(env):
    r = env.run(["-T", "-f", env.write_config({"received_client": "hide"})])
    assert r.returncode == 0, r
    assert "received-client hide" in r.stdout.decode().splitlines(), r.stdout
