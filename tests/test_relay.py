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
