"""Privilege separation (privsep.c): the two processes of a connection.

- The confined session: while a client is connected (before AUTH, after
  AUTH, mid-DATA) the one process holding the client socket is the child of
  smtpauthd, runs as privsep-user with no groups, NoNewPrivs 1, Seccomp 2,
  chrooted into privsep-dir; its parent, the monitor, stays root and holds
  no client socket.  Without root, the same two processes, without the user
  switch.
- The monitor's refusals, through tests/monitor-probe (a real monitor whose
  confined session sends raw packets from a script): each ends with exit
  status 70, a "monitor: refused a request from the session" line and
  nothing injected; well-formed requests next to them work.
- Real accounts and real PAM as root: sendmail runs with the user's uid,
  gid and groups, forked by the monitor.
- A session that dies (SIGSEGV, SIGKILL, the seccomp filter) leaves no
  monitor, no sendmail and no spool file behind.
- What a taken-over session tries, through monitor-probe under the real
  filter: fcntl's asynchronous I/O signals (F_SETOWN, F_SETOWN_EX,
  F_SETSIG, O_ASYNC), executable memory and tgkill to another process kill
  it (SIGSYS) and leave another process of its user alive; abort() dies of
  SIGABRT, logged as signal 6.
- A privsep-user in root's group (primary or in /etc/group) is refused as
  uid 0 is, at the connection and by -t.

The channel packets are u32s in host order (struct "=I") and bytes; see the
comment at the top of privsep.c.
"""

import ctypes
import glob
import grp
import os
import re
import pwd
import shutil
import signal
import ssl
import struct
import subprocess
import time

import pytest

import smtptest
from smtptest import (IS_ROOT, PEER, REPO, RUN_GID, RUN_UID, TESTS, USERS,
                      check, drop_kwargs, process_alive, read_log,
                      received_re, find_events, kv)

# The probe of the build under test: monitor-probe-asan with smtpauthd-asan.
PROBE_BIN = os.path.abspath(
    os.environ.get("MONITOR_PROBE")
    or os.path.join(TESTS, "monitor-probe-asan"
                    if os.environ.get("SMTPAUTHD", "").endswith("-asan")
                    else "monitor-probe"))
EX_SOFTWARE = 70
REFUSED = "monitor: refused a request from the session: "

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")


# --------------------------------------------------------------------------
# /proc

def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def ids(status, key):
    return [int(x) for x in status[key].split()]


def children(pid):
    kids = []
    for path in glob.glob("/proc/%d/task/*/children" % pid):
        try:
            with open(path) as f:
                kids += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return sorted(kids)


def the_session(monitor, timeout=5):
    """The one child of the smtpauthd process."""
    deadline = time.monotonic() + timeout
    while True:
        kids = children(monitor)
        if len(kids) == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(kids) == 1, "smtpauthd %d has children %r, not one session" % (
        monitor, kids)
    return kids[0]


def fd_targets(pid):
    out = {}
    try:
        names = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return out
    for n in names:
        try:
            out[int(n)] = os.readlink("/proc/%d/fd/%s" % (pid, n))
        except OSError:
            pass
    return out


def socket_inodes(pid):
    """The socket inodes among pid's descriptors (pid must be readable)."""
    os.listdir("/proc/%d/fd" % pid)     # raises if not allowed to look
    return {int(t[8:-1]) for t in fd_targets(pid).values()
            if t.startswith("socket:[")}


def all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def holders_of_socket(ino):
    want = "socket:[%d]" % ino
    return {p for p in all_pids() if want in fd_targets(p).values()}


def spool_holders(spool):
    """Processes with a descriptor to a file in spool (O_TMPFILE ones read
    "SPOOL/#INO (deleted)")."""
    out = {}
    for p in all_pids():
        hits = [t for t in fd_targets(p).values() if t.startswith(spool + "/")]
        if hits:
            out[p] = hits
    return out


def tcp_server_inode(port, client_port):
    """The inode of the accepted socket 127.0.0.1:port <-> client_port."""
    local, remote = "0100007F:%04X" % port, "0100007F:%04X" % client_port
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[1] == local and parts[2] == remote:
                return int(parts[9])
    raise AssertionError("no accepted socket for port %d" % client_port)


def wait_gone(pid, timeout=5):
    """pid has ended (a zombie left to init counts as ended)."""
    deadline = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not process_alive(pid)


# --------------------------------------------------------------------------
# the two processes

def check_two_processes(monitor, server_ino, uid, gid, root_dir, rootmode,
                        max_message_size=None):
    """The session (the monitor's only child) holds the client socket and is
    confined; the monitor does not hold it.  Returns the session's pid."""
    session = the_session(monitor)
    st = proc_status(session)
    assert st["NoNewPrivs"] == "1", st
    assert st["Seccomp"] == "2", st
    mst = proc_status(monitor)
    if rootmode:
        assert ids(st, "Uid") == [uid] * 4, st["Uid"]
        assert ids(st, "Gid") == [gid] * 4, st["Gid"]
        assert st["Groups"] == "", st["Groups"]
        assert ids(mst, "Uid") == [0] * 4, mst["Uid"]
        assert mst["Groups"] != "", "start_root() gives smtpauthd groups"
    else:
        # No user switch: the session runs as whoever started smtpauthd.
        assert ids(st, "Uid") == ids(mst, "Uid") == [uid] * 4, (st, mst)
        assert ids(st, "Gid") == ids(mst, "Gid"), (st, mst)
    if IS_ROOT:     # a non-dumpable process's fds need CAP_SYS_PTRACE
        assert os.readlink("/proc/%d/root" % session) == root_dir
        assert server_ino in socket_inodes(session), fd_targets(session)
        # Right after the fork the monitor still has the client on 0 and 1
        # until it puts /dev/null there, and the session does not wait for
        # that: under load the greeting and EHLO can come first.  Give the
        # monitor a moment, no more.
        deadline = time.monotonic() + 2
        while server_ino in socket_inodes(monitor) and \
                time.monotonic() < deadline:
            time.sleep(0.01)
        assert server_ino not in socket_inodes(monitor), fd_targets(monitor)
        assert holders_of_socket(server_ino) == {session}
        # The monitor reads nothing from the network: 0 and 1 are /dev/null.
        mfd = fd_targets(monitor)
        assert mfd.get(0) == mfd.get(1) == "/dev/null", mfd
        with open("/proc/%d/limits" % session) as f:
            limits = f.read()
        for name, value in (("Max core file size", "0"),
                            ("Max processes", "0"),
                            ("Max open files", "16")):
            line = [l for l in limits.splitlines() if l.startswith(name)]
            assert line and line[0][len(name):].split()[:2] == [value] * 2, \
                limits
        if max_message_size is not None:
            line = [l for l in limits.splitlines()
                    if l.startswith("Max file size")]
            want = str(max_message_size + 65536)
            assert line and line[0].split()[3:5] == [want] * 2, limits
    return session


# --------------------------------------------------------------------------
# real accounts (root)

SFX = "%04x" % (os.getpid() & 0xffff)
SERVICE = "smtpauthd-pstest" + SFX
GROUP = "pstestg" + SFX
USER = "pstest" + SFX
PASSWORD = "Pstest-Pw-1!"
ROOT_EXTRA_GID = 4242       # any group will do; it need not exist


def sh(*cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, timeout=60, **kw)
    assert r.returncode == 0, "%s: %s" % (" ".join(cmd),
                                         r.stderr.decode(errors="replace"))


def remove_users(users, groups=()):
    """userdel each of users that exists, then groupdel each of groups
    that is left (a user group userdel did not take with it)."""
    for name in users:
        try:
            pwd.getpwnam(name)
            subprocess.run(["userdel", "-f", name], capture_output=True,
                           timeout=60)
        except KeyError:
            pass
    for name in groups:
        try:
            grp.getgrnam(name)
            subprocess.run(["groupdel", name], capture_output=True,
                           timeout=60)
        except KeyError:
            pass


def remove_account():
    remove_users([USER], [GROUP])


@pytest.fixture(scope="module")
def account(privsep_user):
    """A Unix account with an extra group, and a PAM service for it (the
    repository's pam.d/smtpauthd: pam_unix)."""
    for prog in ("useradd", "userdel", "groupadd", "groupdel", "chpasswd"):
        if shutil.which(prog) is None:
            pytest.skip("%s not installed" % prog)
    remove_account()
    svc = "/etc/pam.d/" + SERVICE
    try:
        sh("groupadd", GROUP)
        sh("useradd", "-M", "-d", "/home/" + USER, "-s", "/bin/sh",
           "-G", GROUP, USER)
        sh("chpasswd", input=("%s:%s\n" % (USER, PASSWORD)).encode())
        shutil.copyfile(os.path.join(REPO, "pam.d", "smtpauthd"), svc)
        os.chmod(svc, 0o644)
        yield {"pw": pwd.getpwnam(USER), "extra_gid": grp.getgrnam(GROUP).gr_gid}
    finally:
        try:
            os.unlink(svc)
        except FileNotFoundError:
            pass
        remove_account()


def start_root(env, **kw):
    """smtpauthd as root with the default privsep-user and privsep-dir,
    started with supplementary groups (which the session must shed)."""
    conf = {"auth": "pam", "pam_service": SERVICE, "privsep_user": None}
    conf.update(kw)
    return env.start(as_root=True, popen={"extra_groups": [0, ROOT_EXTRA_GID]},
                     **conf)


def login_root(c):
    c.ehlo()
    check(c.auth_plain(USER, PASSWORD), 235, "2.7.0")


# --------------------------------------------------------------------------
# 1. the confined session while a client is connected

def run_phases(env, c, uid, gid, root_dir, rootmode, login, sender):
    monitor = c.proc.pid
    seen = set()

    def look(phase):
        try:
            seen.add(check_two_processes(monitor, c.server_ino, uid, gid,
                                         root_dir, rootmode, 10485760))
        except AssertionError as e:
            raise AssertionError("%s: %s" % (phase, e)) from None
    c.ehlo()
    look("before AUTH")
    login(c)
    look("after AUTH")
    check(c.mail(sender), 250)
    check(c.rcpt("rcpt@example.net"), 250)
    check(c.cmd("DATA"), 354)
    c.send(b"Subject: privsep\r\n\r\nsome of the message\r\n")
    time.sleep(0.1)
    look("mid-DATA")
    c.send(b"the rest\r\n.\r\n")
    check(c.reply(30), 250, "2.0.0")
    assert len(seen) == 1, "the session changed: %r" % seen
    c.quit()
    assert c.finish() == 0, c.log
    env.one_call()


@needs_root
def test_session_confined_as_root(env, account, privsep_user):
    c = start_root(env, max_message_size=10485760)
    run_phases(env, c, privsep_user.pw_uid, privsep_user.pw_gid,
               "/run/smtpauthd", True, login_root, USER + "@example.org")


@needs_root
def test_session_confined_in_another_privsep_dir(env, account, privsep_user):
    """privsep-dir is honoured and made when missing: root's, empty."""
    d = os.path.join(env.dir, "empty")
    c = start_root(env, privsep_dir=d, max_message_size=10485760)
    st = os.lstat(d)
    assert st.st_uid == 0 and st.st_mode & 0o022 == 0, st
    assert os.listdir(d) == []
    run_phases(env, c, privsep_user.pw_uid, privsep_user.pw_gid, d, True,
               login_root, USER + "@example.org")


def test_session_confined_not_root(env):
    """Not root: the same two processes, no user switch, no chroot."""
    c = env.start(max_message_size=10485760)
    run_phases(env, c, RUN_UID, RUN_GID, "/", False,
               lambda c: check(c.auth_plain("alice", USERS["alice"]), 235),
               "alice@example.org")


@needs_root
def test_missing_privsep_user_refuses(env):
    c = env.start(as_root=True, greet=False, privsep_user="nosuch-pstest")
    r = c.reply(10)
    check(r, 421)
    assert c.finish() == 78
    assert "privsep-user nosuch-pstest does not exist" in c.log, c.log
    env.no_calls()


# privsep-user in root's group: refused like uid 0 (issue 10)

GID0_USER = "pstg0" + SFX       # primary group 0
GRP0_USER = "pstr0" + SFX       # its own group, and root's in /etc/group


def remove_root_group_users():
    remove_users([GID0_USER, GRP0_USER], [GRP0_USER])


@pytest.fixture(scope="module")
def root_group_users():
    if not IS_ROOT:
        pytest.skip("needs root")
    for prog in ("useradd", "userdel", "groupdel"):
        if shutil.which(prog) is None:
            pytest.skip("%s not installed" % prog)
    remove_root_group_users()
    common = ("--system", "-M", "-d", "/nonexistent", "-s",
              "/usr/sbin/nologin")
    try:
        sh("useradd", *common, "-N", "-g", "0", GID0_USER)
        sh("useradd", *common, "-U", "-G", "root", GRP0_USER)
        assert pwd.getpwnam(GID0_USER).pw_gid == 0
        assert GRP0_USER in grp.getgrgid(0).gr_mem
        yield
    finally:
        remove_root_group_users()


@needs_root
@pytest.mark.parametrize("name,why", [(GID0_USER, "has gid 0"),
                                      (GRP0_USER, "is a member of group 0")],
                         ids=["primary", "supplementary"])
def test_privsep_user_in_root_group_refuses(env, root_group_users, name, why):
    """A connection refuses itself (421, 78, the reason logged) and -t
    names the problem, as for uid 0: the one line more than -t says of the
    default privsep-user (which, as root, finds the test's passwd-file not
    root's)."""
    line = "privsep-user %s %s" % (name, why)
    c = env.start(as_root=True, greet=False, privsep_user=name)
    check(c.reply(10), 421, "4.3.0")
    assert c.finish() == 78
    assert line in c.log, c.log
    env.no_calls()
    good = env.run(["-t", "-f", env.write_config({"privsep_user": None})],
                   as_root=True)
    r = env.run(["-t", "-f", env.write_config({"privsep_user": name})],
                as_root=True)
    assert r.returncode == 78, r
    assert set(r.stderr.decode().splitlines()) - \
        set(good.stderr.decode().splitlines()) == {"smtpauthd: " + line}, \
        (good, r)


# --------------------------------------------------------------------------
# 5. two processes over TCP (inetd-style, systemd-socket-activate)

def test_two_processes_over_tcp(env):
    if shutil.which("systemd-socket-activate") is None:
        pytest.skip("systemd-socket-activate not installed")
    srv = env.tcp()
    c = srv.connect()
    client_port = c.sock.getsockname()[1]
    kids = []
    deadline = time.monotonic() + 5
    while not kids and time.monotonic() < deadline:
        kids = children(srv.proc.pid)
        time.sleep(0.02)
    assert len(kids) == 1, kids
    monitor = kids[0]
    ino = tcp_server_inode(srv.port, client_port)
    c.login()
    session = check_two_processes(monitor, ino, RUN_UID, RUN_GID, "/", False)
    check(c.transaction(), 250, "2.0.0")
    call = env.one_call()
    assert call.pgid["ppid"] == monitor, (call.pgid, monitor, session)
    c.quit()
    assert wait_gone(monitor) and wait_gone(session)


# --------------------------------------------------------------------------
# 3. real accounts, real PAM, sendmail as the user

@needs_root
def test_sendmail_as_user_through_the_monitor(env, account, privsep_user):
    pw = account["pw"]
    c = start_root(env)
    monitor = c.proc.pid
    login_root(c)
    session = check_two_processes(monitor, c.server_ino, privsep_user.pw_uid,
                                  privsep_user.pw_gid, "/run/smtpauthd", True)
    check(c.transaction(sender=USER + "@example.org",
                        rcpts=["x@example.net", "y@example.net"]),
          250, "2.0.0")
    c.quit()
    assert c.finish() == 0, c.log
    call = env.one_call()
    assert call.argv == [env.sendmail, "-i", "-f", USER + "@example.org",
                         "--", "x@example.net", "y@example.net"]
    assert (call.uid, call.euid) == (pw.pw_uid, pw.pw_uid)
    assert (call.gid, call.egid) == (pw.pw_gid, pw.pw_gid)
    assert account["extra_gid"] in call.groups, call.groups
    assert set(call.groups) <= {pw.pw_gid, account["extra_gid"]}, call.groups
    assert 0 not in call.groups
    # Forked by the root monitor, not by the confined session.
    assert call.pgid["ppid"] == monitor != session, call.pgid
    # Written by the chrooted session: the date has its time zone.
    assert received_re(helo=r"client\.example", user=USER).match(
        call.received().decode()), call.received()
    assert call.body() == b"Subject: test\n\nhello\n"


# --------------------------------------------------------------------------
# 4. a session that dies

def no_segv_handler():
    """ASan would catch the SIGSEGV we send and report a crash; the signal
    itself is what is tested."""
    opts = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (opts + ":" if opts else "") + "handle_segv=0"}


def to_phase(c, phase, login, sender):
    c.ehlo()
    if phase == "before-auth":
        return
    login(c)
    if phase == "after-auth":
        return
    check(c.mail(sender), 250)
    check(c.rcpt("rcpt@example.net"), 250)
    check(c.cmd("DATA"), 354)
    c.send(b"Subject: doomed\r\n\r\n" + b"a line of the message\r\n" * 2000)


def check_died(env, c, session, sig, spool_held_before):
    monitor = c.proc.pid
    try:
        rc = c.proc.wait(5)
    except subprocess.TimeoutExpired:
        raise AssertionError("the monitor %d outlived its session" % monitor)
    assert rc == EX_SOFTWARE, (rc, c.log)
    assert c.closed(5), "the client socket is still open"
    assert wait_gone(session)
    line = "session ip=%s: killed by signal %d" % (PEER, sig)
    assert line in c.log, c.log
    # The session's own disconnect line never came: the monitor's did.
    assert re.search(r"disconnect ip=%s user=\S+ reason=killed commands=- "
                     r"messages=0$" % re.escape(PEER), c.log, re.M), c.log
    assert REFUSED not in c.log
    # The check below is worth something: while it lived, the monitor held
    # the (unlinked) spool file.
    assert monitor in spool_held_before, spool_held_before
    assert os.listdir(env.spool) == []
    assert spool_holders(env.spool) == {}
    env.no_calls()


@pytest.mark.parametrize("phase,sig", [
    ("before-auth", signal.SIGSEGV),
    ("mid-data", signal.SIGSEGV),
    ("before-auth", signal.SIGKILL),
    ("after-auth", signal.SIGKILL),
    ("mid-data", signal.SIGKILL),
])
def test_session_death(env, phase, sig):
    c = env.start(environ=no_segv_handler())
    to_phase(c, phase, lambda c: check(c.auth_plain("alice", USERS["alice"]),
                                       235), "alice@example.org")
    session = the_session(c.proc.pid)
    time.sleep(0.1)
    held = spool_holders(env.spool)
    os.kill(session, sig)
    check_died(env, c, session, sig, held)


@needs_root
@pytest.mark.parametrize("phase,sig", [
    ("before-auth", signal.SIGSEGV),
    ("mid-data", signal.SIGSEGV),
    ("mid-data", signal.SIGKILL),
])
def test_session_death_as_root(env, account, privsep_user, phase, sig):
    c = start_root(env, environ=no_segv_handler())
    to_phase(c, phase, login_root, USER + "@example.org")
    session = check_two_processes(c.proc.pid, c.server_ino,
                                  privsep_user.pw_uid, privsep_user.pw_gid,
                                  "/run/smtpauthd", True)
    time.sleep(0.1)
    held = spool_holders(env.spool)
    os.kill(session, sig)
    check_died(env, c, session, sig, held)


def kill_while_sendmail_runs(env, sig):
    """The session sent a complete SUBMIT and waits for the reply while
    sendmail (sleeping 1 s) runs: kill it then."""
    env.knob("sleep", 1)
    c = env.start(environ=no_segv_handler())
    c.login()
    session = the_session(c.proc.pid)
    check(c.mail("alice@example.org"), 250)
    check(c.rcpt("rcpt@example.net"), 250)
    check(c.cmd("DATA"), 354)
    c.send(b"Subject: late\r\n\r\nhello\r\n.\r\n")
    deadline = time.monotonic() + 10
    while not env.calls() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert env.calls(), "sendmail did not start"
    os.kill(session, sig)
    try:
        rc = c.proc.wait(10)
    except subprocess.TimeoutExpired:
        raise AssertionError("the monitor outlived its session")
    return c, session, rc


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL])
def test_session_death_while_sendmail_runs(env, sig):
    """The request was complete: the message goes out once (as when the
    client vanishes after its final dot), and nothing is left behind."""
    c, session, rc = kill_while_sendmail_runs(env, sig)
    assert c.closed(5)
    assert wait_gone(session)
    call = env.one_call()
    assert call.done and call.body() == b"Subject: late\n\nhello\n"
    assert os.listdir(env.spool) == []
    assert spool_holders(env.spool) == {}


def test_session_death_while_sendmail_runs_is_reported(env):
    c, session, rc = kill_while_sendmail_runs(env, signal.SIGSEGV)
    assert "session ip=%s: killed by signal %d" % (PEER, signal.SIGSEGV) \
        in c.log, c.log
    assert rc == EX_SOFTWARE, rc


def test_monitor_death_ends_the_session(env):
    """The other way round: no orphaned session keeps the client."""
    c = env.start()
    c.login()
    session = the_session(c.proc.pid)
    os.kill(c.proc.pid, signal.SIGKILL)
    c.proc.wait(5)
    assert wait_gone(session), "the session outlived its monitor"
    assert c.closed(5)
    env.no_calls()


# --- the seccomp filter, hit by a system call injected with ptrace

class UserRegs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_ulonglong) for n in (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8",
        "rax", "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags",
        "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs")]


PTRACE_PEEKTEXT, PTRACE_SINGLESTEP, PTRACE_GETREGS, PTRACE_SETREGS = 1, 9, 12, 13
PTRACE_ATTACH, PTRACE_DETACH = 16, 17
WALL = 0x40000000
NR_GETPID, NR_GETUID = 39, 102      # x86_64


class Tracer:
    """Makes a process that is blocked in a system call run another one, as
    if its own code had: attach, point it at the syscall instruction it is
    stopped after, step over it, put everything back."""

    def __init__(self, pid):
        self.pid = pid
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.ptrace.restype = ctypes.c_long
        self.libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long,
                                     ctypes.c_void_p, ctypes.c_void_p]

    def call(self, req, addr=None, data=None):
        ctypes.set_errno(0)
        r = self.libc.ptrace(req, self.pid, addr, data)
        e = ctypes.get_errno()
        if r == -1 and e != 0:
            raise OSError(e, "ptrace(%d): %s" % (req, os.strerror(e)))
        return r

    def attach(self):
        self.call(PTRACE_ATTACH)
        _, status = os.waitpid(self.pid, WALL)
        assert os.WIFSTOPPED(status), status

    def syscall(self, nr):
        """Runs system call nr in the tracee; returns its wait status
        afterwards (stopped: it survived, and is detached again)."""
        saved = UserRegs()
        self.call(PTRACE_GETREGS, None, ctypes.addressof(saved))
        insn = self.call(PTRACE_PEEKTEXT, ctypes.c_void_p(saved.rip - 2)) & 0xffff
        if insn != 0x050f:      # "syscall"
            self.call(PTRACE_DETACH, None, None)
            pytest.skip("the tracee is not stopped after a syscall instruction")
        regs = UserRegs.from_buffer_copy(saved)
        regs.rip = saved.rip - 2
        regs.rax = nr
        regs.orig_rax = 2 ** 64 - 1     # no system call restart
        self.call(PTRACE_SETREGS, None, ctypes.addressof(regs))
        self.call(PTRACE_SINGLESTEP, None, None)
        _, status = os.waitpid(self.pid, WALL)
        if os.WIFSTOPPED(status):
            # Back into the interrupted call, from its start.
            restore = UserRegs.from_buffer_copy(saved)
            restore.rip = saved.rip - 2
            restore.rax = saved.orig_rax
            self.call(PTRACE_SETREGS, None, ctypes.addressof(restore))
            self.call(PTRACE_DETACH, None, None)
        return status


def test_seccomp_kill_is_reported(env):
    """A system call outside the filter kills the session (SIGSYS); the
    monitor says so and leaves nothing behind.  A system call inside it,
    injected the same way, is harmless: the injection is not what kills."""
    if os.uname().machine != "x86_64":
        pytest.skip("the syscall injection is written for x86_64")
    c = env.start()
    c.login()
    session = the_session(c.proc.pid)
    time.sleep(0.1)         # blocked reading the next command
    t = Tracer(session)
    try:
        t.attach()
    except OSError as e:
        pytest.skip("cannot ptrace the session: %s" % e)
    status = t.syscall(NR_GETPID)
    assert os.WIFSTOPPED(status), "getpid killed the session: %r" % status
    check(c.cmd("NOOP"), 250)
    time.sleep(0.1)
    held = spool_holders(env.spool)
    t.attach()
    status = t.syscall(NR_GETUID)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS, \
        status
    check_died(env, c, session, signal.SIGSYS, held)
    assert "(a system call the seccomp filter does not allow)" in c.log


# --------------------------------------------------------------------------
# 2. the monitor, spoken to directly

RECV = "recv"
GOOD_ID = b"0123456789ABCDEF"


def u32(*v):
    return struct.pack("=%dI" % len(v), *v)


def b(x):
    return x.encode() if isinstance(x, str) else x


def auth_pkt(user, password, mech=1, tls="none"):
    user, password, tls = b(user), b(password), b(tls)
    return u32(1, mech, len(user), len(password), len(tls)) + user + \
        password + tls


def mail_pkt(sender):
    sender = b(sender)
    return u32(6, len(sender)) + sender


def rcpt_pkt(addr):
    addr = b(addr)
    return u32(3, len(addr)) + addr


def submit_pkt(qid=GOOD_ID):
    return u32(2) + qid


def envelope(sender, *rcpts, qid=GOOD_ID):
    """MAIL, each RCPT and SUBMIT, each followed by its reply."""
    steps = [mail_pkt(sender), RECV]
    for r in rcpts:
        steps += [rcpt_pkt(r), RECV]
    return steps + [submit_pkt(qid), RECV]


SPOOL = u32(5)
AUTH_OK = auth_pkt("alice", USERS["alice"])
AUTH_BAD = auth_pkt("alice", "Not-The-Password")
MAIL1 = mail_pkt("alice@example.org")
RCPT1 = rcpt_pkt("rcpt@example.net")
SUBMIT1 = submit_pkt()
MESSAGE1 = envelope("alice@example.org", "rcpt@example.net")


def auth_reply(pkt):
    assert pkt is not None, "no AUTH reply"
    typ, result, rlen, clen = struct.unpack("=4I", pkt[:16])
    assert typ == 1 and len(pkt) == 16 + rlen + clen, pkt
    return result, pkt[16 + rlen:].decode()


def code_reply(pkt, want_type):
    assert pkt is not None, "no reply"
    typ, code, tlen = struct.unpack("=3I", pkt[:12])
    assert typ == want_type and len(pkt) == 12 + tlen, pkt
    return code, pkt[12:].decode()


def submit_reply(pkt):
    return code_reply(pkt, 2)


def mail_reply(pkt):
    return code_reply(pkt, 6)


def rcpt_reply(pkt):
    return code_reply(pkt, 3)


class ProbeResult:
    def __init__(self, status, replies, log, did=()):
        self.status = status
        self.replies = replies      # bytes, or None for "eof"
        self.log = log
        self.did = list(did)        # "NAME RC ERRNO": calls that returned

    def __repr__(self):
        return "ProbeResult(status=%r, replies=%r, did=%r, log=%r)" % (
            self.status, self.replies, self.did, self.log)


@pytest.fixture(scope="module")
def probe_bin(stage):
    if not os.access(PROBE_BIN, os.X_OK):
        r = subprocess.run(["make", "-C", REPO, "tests/monitor-probe"],
                           capture_output=True, timeout=300)
        if r.returncode != 0:
            pytest.fail("cannot build tests/monitor-probe: %s"
                        % r.stderr.decode(errors="replace"), pytrace=False)
    path = os.path.join(stage.dir, "monitor-probe")
    shutil.copy2(PROBE_BIN, path)
    os.chmod(path, 0o755)
    return path


def probe(env, probe_bin, steps, as_root=False, **conf):
    """Runs monitor-probe: steps are packets (bytes) to send, RECV, and
    the probe's other script lines (str: "abort", "setown PID"...)."""
    path = env.write_config(conf)
    script = "".join(s + "\n" if isinstance(s, str) else
                     "send %s\n" % s.hex() for s in steps)
    sp = env.write("script-%d" % (env.nlog + 1), script)
    logpath = env.newlog()
    kw = {} if (as_root or not IS_ROOT) else drop_kwargs()
    with open(logpath, "wb") as logf:
        r = subprocess.run([probe_bin, path, sp], stdout=subprocess.PIPE,
                           stderr=logf, env=env.environ(), timeout=60, **kw)
    replies, did = [], []
    for line in r.stdout.decode().splitlines():
        if line.startswith("did "):
            did.append(line[4:])
        elif line.startswith("reply "):
            replies.append(bytes.fromhex(line[6:]))
        elif line == "eof":
            replies.append(None)
        elif line == "send failed":
            replies.append("send failed")
        else:
            raise AssertionError("monitor-probe said %r" % line)
    return ProbeResult(r.returncode, replies, read_log(logpath), did)


def assert_refused(env, r, why):
    assert r.status == EX_SOFTWARE, r
    lines = [l for l in r.log.splitlines() if REFUSED in l]
    assert len(lines) == 1, r
    assert lines[0].endswith(REFUSED + why + "; closing"), r
    env.no_calls()
    assert os.listdir(env.spool) == []


def test_probe_well_formed(env, probe_bin):
    """AUTH, MAIL, two RCPTs, SUBMIT: each approved, the monitor runs
    sendmail once with the envelope it approved and answers 250.  (What
    makes the refusals below mean something.)"""
    r = probe(env, probe_bin, [AUTH_OK, RECV] +
              envelope("alice@example.org", "r1@example.net",
                       "r2@example.net"))
    assert r.status == 0, r
    assert auth_reply(r.replies[0]) == (0, "alice"), r
    assert mail_reply(r.replies[1]) == (250, "2.1.0 Ok"), r
    assert rcpt_reply(r.replies[2]) == (250, "2.1.5 Ok"), r
    assert rcpt_reply(r.replies[3]) == (250, "2.1.5 Ok"), r
    code, text = submit_reply(r.replies[4])
    assert code == 250 and text.startswith("2.0.0 ") and \
        text.endswith(GOOD_ID.decode()), r
    call = env.one_call()
    assert call.argv == [env.sendmail, "-i", "-f", "alice@example.org", "--",
                         "r1@example.net", "r2@example.net"]
    assert REFUSED not in r.log


def test_probe_monitor_logs_each_auth(env, probe_bin):
    """The record fail2ban reads is the monitor's: a session that speaks
    the channel itself (as a subverted one would) and logs nothing still
    leaves one auth line per AUTH request, the failures after the delay,
    with tls= as the session said it."""
    r = probe(env, probe_bin, [AUTH_BAD, RECV,
                               auth_pkt("alice", USERS["alice"], mech=2,
                                        tls="TLSv1.3"), RECV],
              auth_failure_delay=1)
    assert r.status == 0, r
    assert [auth_reply(p)[0] for p in r.replies] == [1, 0], r
    ev = [kv(e) for e in find_events(r.log, "auth")]
    lines = [e for e in find_events(r.log, "auth")]
    assert len(lines) == 2, r.log
    assert lines[0].startswith("auth failed ") and \
        lines[1].startswith("auth ok "), r.log
    assert (ev[0]["user"], ev[0]["mech"], ev[0]["ip"], ev[0]["reason"],
            ev[0]["tls"]) == ("alice", "PLAIN", "192.0.2.9", "credentials",
                              "none"), r.log
    assert (ev[1]["user"], ev[1]["mech"], ev[1]["ip"], ev[1]["tls"]) == \
        ("alice", "LOGIN", "192.0.2.9", "TLSv1.3"), r.log


def test_probe_limits_inclusive(env, probe_bin):
    """max-auth-failures requests, the last one right, and max-recipients
    recipients, the null sender: all accepted."""
    r = probe(env, probe_bin, [AUTH_BAD, RECV, AUTH_OK, RECV] +
              envelope("", *["r%d@example.net" % i for i in range(3)]),
              max_auth_failures=2, max_recipients=3)
    assert r.status == 0, r
    assert auth_reply(r.replies[0])[0] == 1, r      # AUTH_FAIL
    assert auth_reply(r.replies[1]) == (0, "alice"), r
    assert submit_reply(r.replies[-1])[0] == 250, r
    call = env.one_call()
    assert call.argv == [env.sendmail, "-i", "-f", "<>", "--",
                         "r0@example.net", "r1@example.net", "r2@example.net"]


def test_probe_two_messages(env, probe_bin):
    """Two messages after one AUTH are allowed, each its own envelope."""
    r = probe(env, probe_bin, [AUTH_OK, RECV] + MESSAGE1 +
              envelope("alice@example.org", "two@example.net",
                       qid=b"FEDCBA9876543210"))
    assert r.status == 0, r
    assert [submit_reply(r.replies[i])[0] for i in (3, 6)] == [250, 250], r
    calls = env.calls()
    assert [c.argv[-1] for c in calls] == ["rcpt@example.net",
                                           "two@example.net"], calls


def test_probe_submit_delivers_what_was_approved(env, probe_bin):
    """A new MAIL starts over: the recipients of the abandoned
    transaction are not delivered, and a SUBMIT delivers the envelope
    once - the next needs a MAIL again."""
    r = probe(env, probe_bin, [AUTH_OK, RECV, MAIL1, RECV,
                               rcpt_pkt("old@example.net"), RECV] +
              envelope("", "new@example.net") + [SUBMIT1, RECV])
    assert r.status == EX_SOFTWARE, r
    call = env.one_call()
    assert call.argv == [env.sendmail, "-i", "-f", "<>", "--",
                         "new@example.net"]
    assert REFUSED + "SUBMIT without an approved MAIL; closing" in r.log


def test_probe_spool(env, probe_bin):
    """SPOOL after AUTH: a file each time (the descriptor itself is
    dropped by the probe's recv()); a SUBMIT still works after it."""
    r = probe(env, probe_bin, [AUTH_OK, RECV, SPOOL, RECV, SPOOL, RECV] +
              MESSAGE1)
    assert r.status == 0, r
    assert r.replies[1] == u32(5, 0) and r.replies[2] == u32(5, 0), r
    assert submit_reply(r.replies[-1])[0] == 250, r
    assert REFUSED not in r.log


LONG = "a" * 300
REFUSALS = {
    # order
    "mail-before-auth": ([MAIL1, RECV], "MAIL before a successful AUTH"),
    "rcpt-before-auth": ([RCPT1, RECV], "RCPT before a successful AUTH"),
    "submit-before-auth": ([SUBMIT1, RECV], "SUBMIT before a successful AUTH"),
    "submit-after-failed-auth": ([AUTH_BAD, RECV, MAIL1, RECV],
                                 "MAIL before a successful AUTH"),
    "second-auth": ([AUTH_OK, RECV, AUTH_OK, RECV],
                    "AUTH after a successful AUTH"),
    "second-auth-other-user": ([AUTH_OK, RECV, auth_pkt("bob", USERS["bob"]),
                                RECV], "AUTH after a successful AUTH"),
    "too-many-auth": ([AUTH_BAD, RECV, AUTH_BAD, RECV, AUTH_BAD, RECV],
                      "more AUTH requests than max-auth-failures"),
    "too-many-auth-right-password": ([AUTH_BAD, RECV, AUTH_BAD, RECV,
                                      AUTH_OK, RECV],
                                     "more AUTH requests than max-auth-failures"),
    "rcpt-without-mail": ([AUTH_OK, RECV, RCPT1, RECV],
                          "RCPT without an approved MAIL"),
    "submit-without-mail": ([AUTH_OK, RECV, SUBMIT1, RECV],
                            "SUBMIT without an approved MAIL"),
    "submit-without-rcpt": ([AUTH_OK, RECV, MAIL1, RECV, SUBMIT1, RECV],
                            "SUBMIT without an approved RCPT"),
    "spool-before-auth": ([SPOOL, RECV], "SPOOL before a successful AUTH"),
    "spool-after-failed-auth": ([AUTH_BAD, RECV, SPOOL, RECV],
                                "SPOOL before a successful AUTH"),
    "spool-trailing-bytes": ([AUTH_OK, RECV, SPOOL + b"x", RECV],
                             "malformed SPOOL"),
    "auth-in-transaction": ([AUTH_OK, RECV, MAIL1, RECV, RCPT1, RECV,
                             AUTH_OK, RECV], "AUTH after a successful AUTH"),
    # sizes
    "user-300": ([auth_pkt(LONG, "pw")], "malformed AUTH"),
    "password-1025": ([auth_pkt("alice", "p" * 1025)], "malformed AUTH"),
    "ulen-beyond-packet": ([u32(1, 1, 5, 50, 4) + b"alice" + b"short" +
                            b"none"], "malformed AUTH"),
    "ulen-huge": ([u32(1, 1, 0xffffffff, 2, 4) + b"alice" + b"pw" + b"none"],
                  "malformed AUTH"),
    "plen-huge": ([u32(1, 1, 5, 0xfffffffc, 4) + b"alice" + b"pw" + b"none"],
                  "malformed AUTH"),
    "tlen-huge": ([u32(1, 1, 5, 2, 0xfffffffc) + b"alice" + b"pw" + b"none"],
                  "malformed AUTH"),
    "auth-without-tls": ([u32(1, 1, 5, 2) + b"alice" + b"pw"],
                         "malformed AUTH"),
    "tls-empty": ([auth_pkt("alice", USERS["alice"], tls="")],
                  "malformed AUTH"),
    "tls-spoofed-log": ([auth_pkt("alice", USERS["alice"],
                                  tls="none reason=x")], "malformed AUTH"),
    "tls-too-long": ([auth_pkt("alice", USERS["alice"], tls="T" * 16)],
                     "malformed AUTH"),
    "auth-trailing-bytes": ([AUTH_OK + b"x"], "malformed AUTH"),
    "auth-packet-too-big": ([AUTH_OK + b"\0" * 4000], "malformed AUTH"),
    "nul-in-user": ([auth_pkt("ali\0ce", USERS["alice"])], "malformed AUTH"),
    "nul-in-password": ([auth_pkt("alice", USERS["alice"] + "\0x")],
                        "malformed AUTH"),
    "bad-mechanism": ([auth_pkt("alice", USERS["alice"], mech=3)],
                      "malformed AUTH"),
    "sender-300": ([AUTH_OK, RECV, mail_pkt(LONG + "@example.org"), RECV],
                   "malformed MAIL"),
    "slen-beyond-packet": ([AUTH_OK, RECV, u32(6, 40) + b"a@b.example", RECV],
                           "malformed MAIL"),
    "slen-huge": ([AUTH_OK, RECV, u32(6, 0xfffffffc) + b"a@b.example", RECV],
                  "malformed MAIL"),
    "mail-trailing-bytes": ([AUTH_OK, RECV, MAIL1 + b"\0", RECV],
                            "malformed MAIL"),
    "nul-in-sender": ([AUTH_OK, RECV, mail_pkt("a\0@example.org"), RECV],
                      "malformed MAIL"),
    "rcpt-300": ([AUTH_OK, RECV, MAIL1, RECV,
                  rcpt_pkt(LONG + "@example.net"), RECV], "malformed RCPT"),
    "rlen-beyond-packet": ([AUTH_OK, RECV, MAIL1, RECV,
                            u32(3, 99) + b"rcpt@example.net", RECV],
                           "malformed RCPT"),
    "rcpt-trailing-bytes": ([AUTH_OK, RECV, MAIL1, RECV, RCPT1 + b"\0", RECV],
                            "malformed RCPT"),
    "bad-queue-id": ([AUTH_OK, RECV, MAIL1, RECV, RCPT1, RECV,
                      submit_pkt(b"../../etc/passwd"), RECV],
                     "malformed SUBMIT"),
    "lowercase-queue-id": ([AUTH_OK, RECV, MAIL1, RECV, RCPT1, RECV,
                            submit_pkt(b"0123456789abcdef"), RECV],
                           "malformed SUBMIT"),
    "submit-with-envelope": ([AUTH_OK, RECV, MAIL1, RECV, RCPT1, RECV,
                              SUBMIT1 + u32(1, 3) + b"a@b", RECV],
                             "malformed SUBMIT"),
    # addresses
    "sender-dash": ([AUTH_OK, RECV, mail_pkt("-oQ/tmp@example.org"), RECV],
                    "MAIL with an unsafe sender"),
    "sender-dash-bare": ([AUTH_OK, RECV, mail_pkt("-bs"), RECV],
                         "MAIL with an unsafe sender"),
    "sender-no-at": ([AUTH_OK, RECV, mail_pkt("postmaster"), RECV],
                     "MAIL with an unsafe sender"),
    "rcpt-dash": ([AUTH_OK, RECV, MAIL1, RECV, rcpt_pkt("-oi@example.net"),
                   RECV], "RCPT with an unsafe recipient"),
    "second-rcpt-dash": ([AUTH_OK, RECV, MAIL1, RECV, RCPT1, RECV,
                          rcpt_pkt("-X/tmp/log@example.net"), RECV],
                         "RCPT with an unsafe recipient"),
    "rcpt-empty": ([AUTH_OK, RECV, MAIL1, RECV, rcpt_pkt(""), RECV],
                   "RCPT with an unsafe recipient"),
    "rcpt-newline": ([AUTH_OK, RECV, MAIL1, RECV,
                      rcpt_pkt("a@example.net\nb@example.net"), RECV],
                     "RCPT with an unsafe recipient"),
    # counts
    "too-many-rcpts": ([AUTH_OK, RECV, MAIL1, RECV] +
                       [x for i in range(4)
                        for x in (rcpt_pkt("r%d@example.net" % i), RECV)],
                       "more RCPT requests than max-recipients"),
    # truncated, garbage, unknown
    "truncated-type": ([b"\x01\x00"], "unknown request"),
    "truncated-auth": ([u32(1)], "malformed AUTH"),
    "truncated-auth-fields": ([AUTH_OK[:-3]], "malformed AUTH"),
    "truncated-mail": ([AUTH_OK, RECV, u32(6)], "malformed MAIL"),
    "truncated-submit": ([AUTH_OK, RECV, MAIL1, RECV, RCPT1, RECV,
                          u32(2) + GOOD_ID[:10]], "malformed SUBMIT"),
    "truncated-rcpt": ([AUTH_OK, RECV, MAIL1, RECV, u32(3)[:3]],
                       "unknown request"),
    "garbage": ([bytes(range(7, 200, 3))], "unknown request"),
    "garbage-after-auth": ([AUTH_OK, RECV, b"\xde\xad\xbe\xef" * 9],
                           "unknown request"),
    "garbage-as-submit": ([AUTH_OK, RECV, MAIL1, RECV, RCPT1, RECV,
                           u32(2) + b"\xff" * 40], "malformed SUBMIT"),
    "type-0": ([u32(0) + AUTH_OK[4:]], "unknown request"),
    "type-4": ([AUTH_OK, RECV, u32(4) + MAIL1[4:], RECV], "unknown request"),
    "type-7": ([AUTH_OK, RECV, u32(7) + MAIL1[4:], RECV], "unknown request"),
    "type-max": ([u32(0xffffffff)], "unknown request"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_probe_refused(env, probe_bin, case):
    steps, why = REFUSALS[case]
    r = probe(env, probe_bin, steps, max_auth_failures=2, max_recipients=3)
    assert_refused(env, r, why)
    # The bad request got no answer (the session saw the end of the
    # channel, or was killed with its monitor before it could say so).
    if steps[-1] == RECV:
        answered = [p for p in r.replies if p is not None]
        assert len(answered) < steps.count(RECV), r


def test_probe_failed_auth_replies(env, probe_bin):
    """Refused after max-auth-failures: the earlier ones were answered
    (fail), the extra one was not even checked."""
    r = probe(env, probe_bin, REFUSALS["too-many-auth-right-password"][0],
              max_auth_failures=2)
    assert [auth_reply(p)[0] for p in r.replies[:2]] == [1, 1], r
    assert r.replies[2:] in ([], [None]), r


@pytest.mark.parametrize("when", ["first", "after-auth"])
def test_probe_empty_packet_refused(env, probe_bin, when):
    steps = [b"", AUTH_OK, RECV] if when == "first" else \
        [AUTH_OK, RECV, b""] + MESSAGE1
    r = probe(env, probe_bin, steps)
    env.no_calls()
    assert r.status == EX_SOFTWARE and REFUSED in r.log, r


@needs_root
def test_probe_as_root(env, probe_bin, account, privsep_user):
    """The monitor as root, with real PAM (pam_unix's delay after a wrong
    password would cost seconds: test_root.py has those): the confined
    session's requests are answered and sendmail runs as the user."""
    pw = account["pw"]
    r = probe(env, probe_bin, [auth_pkt(USER, PASSWORD), RECV] +
              envelope(USER + "@example.org", "rcpt@example.net"),
              as_root=True, auth="pam", pam_service=SERVICE, privsep_user=None)
    assert r.status == 0, r
    assert auth_reply(r.replies[0]) == (0, USER), r
    assert submit_reply(r.replies[-1])[0] == 250, r
    call = env.one_call()
    assert (call.uid, call.gid) == (pw.pw_uid, pw.pw_gid)
    assert account["extra_gid"] in call.groups


@needs_root
def test_probe_as_root_refuses(env, probe_bin, account, privsep_user):
    r = probe(env, probe_bin, [auth_pkt(USER, PASSWORD), RECV,
                               mail_pkt("-oQ@example.org"), RECV],
              as_root=True, auth="pam", pam_service=SERVICE, privsep_user=None)
    assert auth_reply(r.replies[0]) == (0, USER), r
    assert_refused(env, r, "MAIL with an unsafe sender")


# --- what a taken-over session tries, under the real filter (issue 10)

PROBE_PEER = "192.0.2.9"    # tests/monitor-probe's peer
KILLED_BY = "session ip=%s: killed by signal %%d" % PROBE_PEER
SECCOMP_NOTE = " (a system call the seccomp filter does not allow)"


@pytest.fixture
def victim():
    """A process of the session's user (privsep-user is the same for every
    connection): another connection's session, as far as signals go."""
    kw = drop_kwargs() if IS_ROOT else {}
    p = subprocess.Popen(["sleep", "60"], **kw)
    yield p
    if p.poll() is None:
        p.kill()
    p.wait(5)


def assert_victim_alive(victim):
    time.sleep(0.2)     # a signal the kernel sent is delivered by now
    assert victim.poll() is None, \
        "the session signalled another process of its user: %r" % \
        victim.returncode


def assert_killed_by(r, sig, seccomp):
    assert r.status == EX_SOFTWARE, r
    lines = [l for l in r.log.splitlines() if "killed by signal" in l]
    assert len(lines) == 1, r
    want = KILLED_BY % sig + (SECCOMP_NOTE if seccomp else "")
    assert lines[0].endswith(want), r


@pytest.mark.parametrize("call", [
    "setown %(pid)d", "setown-ex %(pid)d", "setsig 9", "async", "mmap-exec",
    "mprotect-exec", "tgkill %(pid)d 9"])
def test_probe_session_call_refused(env, probe_bin, victim, call):
    """fcntl's asynchronous I/O signals (an owner, a signal, O_ASYNC),
    executable memory and tgkill to another process: each kills the
    session (SIGSYS) before it returns, and the monitor says so."""
    line = call % {"pid": victim.pid}
    r = probe(env, probe_bin, [line, AUTH_OK, RECV])
    assert r.did == [], "%s returned in the session: %r" % (line, r)
    assert_killed_by(r, signal.SIGSYS, True)
    assert_victim_alive(victim)
    env.no_calls()


def test_probe_session_cannot_signal_by_sigio(env, probe_bin, victim):
    """The whole attack: the channel owned by another process of the same
    user, SIGKILL as its signal, O_ASYNC; the monitor's reply would send
    it.  The first step kills the session, and the process lives."""
    r = probe(env, probe_bin, ["setown %d" % victim.pid, "setsig 9", "async",
                               AUTH_OK, RECV])
    assert_victim_alive(victim)
    assert r.did == [], r
    assert_killed_by(r, signal.SIGSYS, True)


def test_probe_session_calls_allowed(env, probe_bin):
    """What the filter still allows - fcntl's descriptor and status flags,
    F_DUPFD_CLOEXEC, a signal to itself (0: none sent) - works, and the
    session goes on to AUTH."""
    r = probe(env, probe_bin, ["fcntl-ok", "tgkill-self 0", AUTH_OK, RECV])
    assert r.did == ["fcntl-ok 0 0", "tgkill-self 0 0"], r
    assert r.status == 0, r
    assert auth_reply(r.replies[0]) == (0, "alice"), r


@pytest.mark.parametrize("how", ["abort", "stack-chk"])
def test_probe_session_abort_is_sigabrt(env, probe_bin, how):
    """abort(3) in the confined session, itself or by the stack protector:
    the session dies of SIGABRT and the monitor logs signal 6, not a
    seccomp violation."""
    r = probe(env, probe_bin, [how, AUTH_OK, RECV])
    assert_killed_by(r, signal.SIGABRT, False)
    assert SECCOMP_NOTE not in r.log, r
    env.no_calls()


# --------------------------------------------------------------------------
# 6. TLS inside the confined session (the context is loaded by the monitor,
# the handshake happens after chroot and under the seccomp filter)

@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("privsep-tls")
    key, crt = str(d / "key.pem"), str(d / "cert.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
                        "-out", crt, "-days", "3", "-subj",
                        "/CN=" + smtptest.HOSTNAME],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    with open(key, "rb") as f, open(crt, "rb") as g:
        return f.read(), g.read()


def tls_conf(env, cert, mode):
    key = env.write("tls.key", cert[0], 0o600)
    crt = env.write("tls.crt", cert[1], 0o644)
    return {"tls": mode, "tls_cert": crt, "tls_key": key,
            "auth_require_tls": "yes"}


def client_tls(c):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    assert c.buf == b""
    c.sock.settimeout(10)
    c.sock = ctx.wrap_socket(c.sock, server_hostname=smtptest.HOSTNAME)


def tls_session(env, c, login, sender, implicit, rootmode, uid, gid,
                root_dir):
    if implicit:
        client_tls(c)
        c.greeting()
    else:
        c.greeting()
        c.ehlo()
        check(c.cmd("STARTTLS"), 220)
        client_tls(c)
    login(c)
    check_two_processes(c.proc.pid, c.server_ino, uid, gid, root_dir,
                        rootmode)
    check(c.transaction(sender=sender), 250, "2.0.0")
    c.quit()
    assert c.finish() == 0, c.log
    call = env.one_call()
    assert b" with ESMTPSA " in call.received(), call.received()


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_tls_in_the_session_not_root(env, cert, mode):
    c = env.start(greet=False, **tls_conf(env, cert, mode))
    tls_session(env, c, lambda c: c.login(), "alice@example.org",
                mode == "implicit", False, RUN_UID, RUN_GID, "/")


@needs_root
@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_tls_in_the_session_as_root(env, cert, account, privsep_user, mode):
    c = start_root(env, greet=False, **tls_conf(env, cert, mode))
    tls_session(env, c, login_root, USER + "@example.org",
                mode == "implicit", True, privsep_user.pw_uid,
                privsep_user.pw_gid, "/run/smtpauthd")
