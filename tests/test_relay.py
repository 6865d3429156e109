"""What reaches sendmail and how its outcome becomes the reply: argv in both
inject modes, the message bytes, environment, descriptors, ids, process
group, signals; every exit status of DESIGN.md's table; a sendmail that
hangs, dies, floods stderr or reads only part of its input."""

import os
import re
import time

import pytest

from smtptest import (RUN_GID, RUN_HOME, RUN_NAME, RUN_UID, QUEUED_RE,
                      check, find_events, kv, log_events, process_alive,
                      process_exists, received_re)

BODY = b"From: alice@example.org\r\nTo: r1@example.net\r\nSubject: relay\r\n\r\nline 1\r\n..dotted\r\nline 3\r\n"
SPOOLED = b"From: alice@example.org\nTo: r1@example.net\nSubject: relay\n\nline 1\n.dotted\nline 3\n"


# ---------------------------------------------------------------- argv

@pytest.mark.parametrize("inject", ["envelope", "headers"])
@pytest.mark.parametrize("sender", ["alice@example.org", ""])
@pytest.mark.parametrize("nrcpt", [1, 3])
def test_argv(env, inject, sender, nrcpt):
    c = env.session(inject=inject)
    rcpts = ["r%d@example.net" % i for i in range(1, nrcpt + 1)]
    check(c.transaction(sender=sender, rcpts=rcpts, body=BODY), 250, "2.0.0")
    call = env.one_call()
    f = sender or "<>"
    if inject == "envelope":
        assert call.argv == [env.sendmail, "-i", "-f", f, "--"] + rcpts
    else:
        assert call.argv == [env.sendmail, "-i", "-t", "-f", f]
    assert call.body() == SPOOLED


def test_message_bytes_exact(env):
    c = env.session()
    r = check(c.transaction(rcpts=["r1@example.net"], body=BODY), 250)
    qid = QUEUED_RE.match(r.text.split(" ", 1)[1]).group(1)
    msg = env.one_call().message
    m = received_re(helo="client\\.example", rcpt="r1@example.net").match(
        msg[:msg.index(b"From: ")].decode())
    assert m and m.group("id") == qid, msg
    assert msg[m.end():] == SPOOLED


# ---------------------------------------------------------------- process

def test_environment_exact(env):
    c = env.session(environ={"FOO": "bar", "LD_LIBRARY_PATH": "/nonexistent",
                             "IFS": "x", "HOME": "/root", "SHELL": "/bin/bash",
                             "PERL5LIB": "/tmp", "MAIL": "/tmp/evil"})
    check(c.transaction(), 250)
    call = env.one_call()
    assert RUN_NAME is not None, "uid %d has no passwd entry" % RUN_UID
    assert call.env == {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
                        "HOME": RUN_HOME, "USER": RUN_NAME,
                        "LOGNAME": RUN_NAME, "SHELL": "/bin/sh"}, call.envlist
    assert len(call.envlist) == 5, call.envlist


def test_environment_exact_with_pam_preload(pam_env):
    """LD_PRELOAD and PAM_WRAPPER* of smtpauthd's own environment do not
    leak into sendmail's."""
    c = pam_env.session()
    check(c.transaction(), 250)
    call = pam_env.one_call()
    assert set(call.env) == {"PATH", "HOME", "USER", "LOGNAME", "SHELL"}, call.envlist


def test_descriptors(env):
    c = env.session()
    check(c.transaction(), 250)
    call = env.one_call()
    assert call.fds == [0, 1, 2], call.fdinfo
    assert call.fdinfo[0].startswith(env.spool + "/"), call.fdinfo
    assert "(deleted)" in call.fdinfo[0] or "#" in call.fdinfo[0], call.fdinfo
    for fd in (1, 2):
        assert call.fdinfo[fd].startswith("pipe:"), call.fdinfo
    assert call.stat0["type"] == "file", call.stat0
    assert call.stat0["mode"] == "600", call.stat0
    assert call.stat0["offset"] == "0", call.stat0
    assert int(call.stat0["size"]) == len(call.message), call.stat0


def test_ids_cwd_pgroup_signals(env):
    c = env.session()
    check(c.transaction(), 250)
    call = env.one_call()
    assert (call.uid, call.euid) == (RUN_UID, RUN_UID)
    assert (call.gid, call.egid) == (RUN_GID, RUN_GID)
    assert call.cwd == "/"
    assert call.pgid["pgid"] == call.pgid["pid"], call.pgid
    # Signals 32 and 33 are glibc's own (SIGCANCEL, SIGSETXID): no program
    # can set them through libc, so a launcher that ignored them passes that
    # on.  Every other signal must be back at its default.
    glibc_internal = (1 << 31) | (1 << 32)
    ignored = call.sigs.get("SigIgn") & ~glibc_internal
    assert ignored == 0, "sendmail inherits ignored signals %x" % ignored
    assert call.sigs.get("SigBlk") == 0, "sendmail inherits blocked signals %x" % call.sigs.get("SigBlk")


def test_sendmail_not_run_before_final_dot(env):
    c = env.session()
    check(c.mail("alice@example.org"), 250)
    check(c.rcpt("r@example.net"), 250)
    check(c.cmd("DATA"), 354)
    c.send(b"Subject: wait\r\n\r\n" + b"line\r\n" * 1000)
    time.sleep(0.5)
    env.no_calls()
    c.send(b".\r\n")
    check(c.reply(), 250)
    env.one_call()


# ---------------------------------------------------------------- exit codes

EXIT_TABLE = [
    (0, 250, "2.0.0"),
    (64, 554, "5.3.0"), (65, 554, "5.6.0"), (66, 554, "5.3.0"),
    (67, 550, "5.1.1"), (68, 550, "5.1.2"), (69, 554, "5.3.0"),
    (70, 554, "5.3.0"), (71, 451, "4.3.0"), (72, 554, "5.3.0"),
    (73, 550, "5.2.0"), (74, 554, "5.3.0"), (75, 451, "4.3.0"),
    (76, 554, "5.5.0"), (77, 550, "5.7.0"), (78, 554, "5.3.5"),
    (1, 451, "4.3.0"), (2, 451, "4.3.0"), (63, 451, "4.3.0"),
    (79, 451, "4.3.0"), (100, 451, "4.3.0"), (126, 451, "4.3.0"),
    (127, 451, "4.3.0"), (255, 451, "4.3.0"),
]


@pytest.mark.parametrize("status,code,enh", EXIT_TABLE,
                         ids=["exit%d" % e[0] for e in EXIT_TABLE])
def test_exit_status_reply(env, status, code, enh):
    env.knob("exit", status)
    c = env.session()
    r = check(c.transaction(), code, enh)
    if code == 250:
        assert QUEUED_RE.match(r.text.split(" ", 1)[1]), r
    call = env.one_call()
    assert call.done
    # the session goes on
    check(c.cmd("NOOP"), 250)
    c.quit()
    queued = find_events(c.log, "queued")
    rejected = [kv(e) for e in find_events(c.log, "rejected")]
    if code == 250:
        assert len(queued) == 1 and not rejected, c.log
    else:
        assert not queued, c.log
        assert any(x.get("cmd") == "END-OF-MESSAGE" and
                   x.get("reply", "").startswith("%d %s" % (code, enh))
                   for x in rejected), c.log


@pytest.mark.parametrize("sig", [9, 15, 11, 6, 1])
def test_sendmail_killed_by_signal(env, sig):
    env.knob("signal", sig)
    c = env.session()
    check(c.transaction(), 451, "4.3.0")
    check(c.cmd("NOOP"), 250)


def test_failure_then_success_in_same_session(env):
    env.knob("exit", 75)
    c = env.session()
    check(c.transaction(rcpts=["first@example.net"]), 451, "4.3.0")
    os.unlink(os.path.join(env.smdir, "exit"))
    check(c.transaction(rcpts=["second@example.net"]), 250, "2.0.0")
    assert [x.rcpts() for x in env.calls()] == [["first@example.net"],
                                                 ["second@example.net"]]


@pytest.mark.parametrize("child", [False, True])
def test_sendmail_timeout(env, child):
    env.knob("sleep", 30)
    if child:
        env.knob("child", 30)
    c = env.session(sendmail_timeout=1)
    t = time.monotonic()
    r = c.transaction(timeout=15)
    took = time.monotonic() - t
    check(r, 451, "4.3.0")
    assert 0.9 <= took < 6, took
    call = env.one_call()
    assert call.pid and not process_exists(call.pid), \
        "sendmail pid %d still there after 451" % call.pid
    if child:
        time.sleep(0.2)
        assert call.childpid and not process_alive(call.childpid), \
            "sendmail's child %d survived" % call.childpid
    check(c.cmd("NOOP"), 250)


def test_sendmail_reaped_after_success(env):
    c = env.session()
    check(c.transaction(), 250)
    call = env.one_call()
    assert not process_exists(call.pid)


@pytest.mark.parametrize("limit,code", [(0, 451), (10, 451), (10 ** 7, 250)])
def test_sendmail_reads_part_of_input(env, limit, code):
    env.knob("readlimit", limit)
    c = env.session()
    check(c.transaction(body=b"Subject: part\r\n\r\n" + b"data line\r\n" * 200),
          code, "4.3.0" if code == 451 else "2.0.0")
    call = env.one_call()
    if code == 451:
        assert len(call.message) == limit


@pytest.mark.parametrize("nbytes", [100, 1 << 20])
def test_sendmail_stderr(env, nbytes):
    env.knob("stderr", nbytes)
    c = env.session(sendmail_timeout=10)
    r = check(c.transaction(), 250, "2.0.0")
    qid = QUEUED_RE.match(r.text.split(" ", 1)[1]).group(1)
    assert c.pending(0.3) == b"", "sendmail's stderr reached the client"
    c.quit()
    log = c.log
    assert len(log) < 65536, "log not bounded: %d octets" % len(log)
    assert "\x1b" not in log and "\x01" not in log and "\r" not in log, \
        "control characters in the log"
    sm = [e for e in log_events(log) if e.startswith("sendmail ")]
    assert sm and all(e.startswith("sendmail id=%s stderr: " % qid) for e in sm), log
    assert "junk" in sm[0]


def test_sendmail_missing_program(env):
    """sendmail that cannot be executed: a temporary failure, no crash."""
    c = env.start(sendmail=os.path.join(env.dir, "no-such-sendmail"), greet=False)
    r = c.reply()
    if r.code == 421:               # found at start-up: a configuration error
        check(r, 421, "4.3.0")
        assert c.wait_exit() == 78
        return
    check(r, 220)
    c.login("alice", env.users["alice"])
    r = c.transaction()
    assert r.code in (451, 554), r
    env.no_calls()


# ---------------------------------------------------------------- the spool

def test_spool_read_only_and_one_file_per_message(env):
    """sendmail's standard input is a read-only descriptor, and each message
    of a connection is in a file of its own: a background child of the
    first sendmail that kept its standard input after the 250 can neither
    rewrite the second message nor read it (issue 10, item 9)."""
    env.knob("tamper", 10)
    c = env.session()
    check(c.transaction(rcpts=["first@example.net"],
                        body=b"Subject: one\r\n\r\nfirst\r\n"), 250, "2.0.0")
    check(c.transaction(rcpts=["second@example.net"],
                        body=b"Subject: two\r\n\r\nsecond\r\n"), 250, "2.0.0")
    first, second = env.calls()
    # The attack first: the second message as the client sent it.
    assert second.message.startswith(b"Received: "), second.message[:100]
    assert second.body() == b"Subject: two\n\nsecond\n"
    assert received_re(helo="client\\.example", rcpt="second@example.net"
                       ).match(second.received().decode()), second.message
    tamper = first.rd("tamper").decode()
    assert tamper == "write=error:EBADF\n", tamper
    # What the child still reads is the first message, not the second.
    assert first.rd("tamperread") == first.message
    assert first.body() == b"Subject: one\n\nfirst\n"
    for call in (first, second):
        assert call.stat0["access"] == "rdonly", call.stat0
        assert call.stat0["offset"] == "0", call.stat0
    assert (first.stat0["dev"], first.stat0["ino"]) != \
        (second.stat0["dev"], second.stat0["ino"]), "one file for both"


def test_spool_after_a_refused_message_is_new(env):
    """A message refused before sendmail (too big) leaves its file behind
    with the session: the next message still gets a new one."""
    c = env.session(max_message_size=100)
    check(c.transaction(body=b"Subject: big\r\n\r\n" + b"x" * 200 + b"\r\n"),
          552, "5.3.4")
    check(c.transaction(body=b"Subject: small\r\n\r\nok\r\n"), 250)
    check(c.transaction(body=b"Subject: small\r\n\r\nagain\r\n"), 250)
    calls = env.calls()
    assert [x.body() for x in calls] == [b"Subject: small\n\nok\n",
                                         b"Subject: small\n\nagain\n"]
    assert calls[0].stat0["ino"] != calls[1].stat0["ino"]


# ---------------------------------------------------------------- recipients

RCPTS_MAX = 5000


def longest_address(i):
    """A distinct address of the longest length accepted (254 octets:
    SMTP_PATH_MAX less the angle brackets; local part 64, labels 63)."""
    local = "%05d" % i + "a" * 59
    domain = "b" * 63 + "." + "c" * 63 + "." + "d" * 61
    addr = local + "@" + domain
    assert len(addr) == 254
    return addr


def test_max_recipients_ceiling_reaches_sendmail(env):
    """max-recipients at its ceiling, every recipient as long as can be:
    all of them reach sendmail in one argv (issue 10, item 10: 30000 gave
    "Argument list too long" and a 451 for ever)."""
    rcpts = [longest_address(i) for i in range(RCPTS_MAX)]
    c = env.session(max_recipients=RCPTS_MAX)
    check(c.mail("alice@example.org"), 250)
    for start in range(0, RCPTS_MAX, 500):      # pipelined, in batches
        batch = rcpts[start:start + 500]
        c.send(b"".join(b"RCPT TO:<%s>\r\n" % a.encode() for a in batch))
        for r in c.replies(len(batch), timeout=60):
            check(r, 250, "2.1.5")
    check(c.rcpt(longest_address(RCPTS_MAX)), 452, "4.5.3")
    r = c.data(b"Subject: many\r\n\r\nhello\r\n", timeout=60)
    check(r, 250, "2.0.0")
    call = env.one_call()
    assert call.rcpts() == rcpts
    assert call.body() == b"Subject: many\n\nhello\n"


def test_max_recipients_above_ceiling_refused(env):
    path = env.write_config({"max-recipients": RCPTS_MAX})
    r = env.run(["-t", "-f", path])
    assert r.returncode == 0, r
    path = env.write_config({"max-recipients": RCPTS_MAX + 1})
    r = env.run(["-t", "-f", path])
    assert r.returncode == 78, r
    err = r.stderr.decode()
    assert "max-recipients" in err and "from 1 to %d" % RCPTS_MAX in err, err
    assert "argument list" in err, err


# ---------------------------------------------------------------- umask

@pytest.mark.parametrize("conf,want", [(None, "022"), ("027", "027"),
                                       ("0", "000"), ("0077", "077"),
                                       ("777", "777")])
def test_sendmail_umask(env, conf, want):
    """sendmail's umask: 022, what MTAs expect from a login shell, unless
    sendmail-umask says otherwise (smtpauthd itself runs with 077)."""
    c = env.session(sendmail_umask=conf)
    check(c.transaction(), 250)
    assert env.one_call().rd("umask") == want.encode() + b"\n"


# ---------------------------------------------------------------- Received:

@pytest.mark.parametrize("peer,literal", [
    ("2001:db8::1", "[IPv6:2001:db8::1]"),
    ("::ffff:192.0.2.7", "[IPv6:::ffff:192.0.2.7]"),
    ("192.0.2.1", "[192.0.2.1]"),
])
def test_received_address_literal(env, peer, literal):
    """RFC 5321 4.1.3: an IPv6 client is [IPv6:...] in Received:, an IPv4
    one stays [a.b.c.d] (issue 10, item 12)."""
    c = env.session(environ={"REMOTE_ADDR": peer})
    check(c.transaction(), 250)
    hdr = env.one_call().received().decode()
    assert hdr.startswith("Received: from client.example (%s)\n" % literal), hdr
    m = received_re(ip=peer, rcpt="rcpt@example.net").match(hdr)
    assert m and m.group("ip") == peer, hdr
