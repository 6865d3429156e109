"""Root only: smtpauthd running as root against real Unix accounts through
PAM (pam_unix via the repository's pam.d/smtpauthd), and sendmail run as
the authenticated user.  Skipped unless run as root; every account, group
and file made here is removed at the end."""

import contextlib
import glob
import grp
import os
import pwd
import shutil
import re
import secrets
import statistics
import subprocess
import threading

import pytest

from smtptest import REPO, IS_ROOT, check, find_events, kv, timed

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root (useradd, /etc/pam.d)")

# A suffix per run, so that two runs at once (make check while a developer
# runs pytest) do not trample each other's accounts.
SFX = "%04x" % (os.getpid() & 0xffff)
SERVICE = "smtpauthd-satest" + SFX
GROUP = "satestg" + SFX
U1, U2, U3, U4 = ("satest%d%s" % (i, SFX) for i in range(1, 5))
# Passwords of this run only: an account a killed run leaves behind is no
# open door with a password written in the repository.
PW = secrets.token_urlsafe(9)
USERS = {
    U1: "Satest1-%s!" % PW,     # ordinary
    U2: "Satest2-%s!" % PW,     # locked (usermod -L)
    U3: "Satest3-%s!" % PW,     # expired (chage -E 0)
    U4: "Satest4-%s!" % PW,     # empty password field (passwd -d)
}


def sh(*cmd):
    r = subprocess.run(cmd, capture_output=True, timeout=60)
    assert r.returncode == 0, "%s: %s" % (" ".join(cmd), r.stderr.decode(errors="replace"))


def remove_accounts():
    for u in USERS:
        try:
            pwd.getpwnam(u)
        except KeyError:
            continue
        subprocess.run(["userdel", "-r", "-f", u], capture_output=True, timeout=60)
    try:
        grp.getgrnam(GROUP)
        subprocess.run(["groupdel", GROUP], capture_output=True, timeout=60)
    except KeyError:
        pass


@pytest.fixture(scope="module")
def accounts():
    for prog in ("useradd", "userdel", "groupadd", "chpasswd", "usermod",
                 "chage", "passwd"):
        if shutil.which(prog) is None:
            pytest.skip("%s not installed" % prog)
    remove_accounts()
    svc = "/etc/pam.d/" + SERVICE
    try:
        sh("groupadd", GROUP)
        for u in USERS:
            sh("useradd", "-m", "-d", "/home/" + u, "-s", "/bin/sh", "-G", GROUP, u)
        p = subprocess.run(["chpasswd"], input="".join(
            "%s:%s\n" % kv_ for kv_ in USERS.items()).encode(),
            capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr
        sh("usermod", "-L", U2)
        sh("chage", "-E", "0", U3)
        sh("passwd", "-d", U4)
        src = os.path.join(REPO, "pam.d", "smtpauthd")
        if os.path.exists(src):
            shutil.copyfile(src, svc)
        else:
            with open(svc, "w") as f:
                f.write("@include common-auth\n@include common-account\n")
        os.chmod(svc, 0o644)
        yield {u: pwd.getpwnam(u) for u in USERS}
    finally:
        try:
            os.unlink(svc)
        except FileNotFoundError:
            pass
        remove_accounts()


def root_session(env, **kw):
    conf = {"auth": "pam", "pam_service": SERVICE, "privsep_user": "nobody"}
    conf.update(kw)
    return env.start(as_root=True, **conf)


def test_right_password_runs_sendmail_as_user(env, accounts):
    pw = accounts[U1]
    c = root_session(env)
    c.ehlo()
    check(c.auth_plain(U1, USERS[U1]), 235, "2.7.0")
    check(c.transaction(sender=U1 + "@example.org", rcpts=["x@example.net"]),
          250, "2.0.0")
    c.quit()
    call = env.one_call()
    gid_extra = grp.getgrnam(GROUP).gr_gid
    assert (call.uid, call.euid) == (pw.pw_uid, pw.pw_uid)
    assert (call.gid, call.egid) == (pw.pw_gid, pw.pw_gid)
    assert gid_extra in call.groups, call.groups
    assert 0 not in call.groups, call.groups
    assert set(call.groups) <= {pw.pw_gid, gid_extra}, call.groups
    assert call.env == {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
                        "HOME": "/home/" + U1, "USER": U1,
                        "LOGNAME": U1, "SHELL": "/bin/sh"}, call.envlist
    assert call.fds == [0, 1, 2]
    # Reopened read-only by the monitor (root) before the user switch: the
    # spool is root's, mode 0600, and sendmail reads it all the same.
    assert call.stat0["access"] == "rdonly", call.stat0
    assert call.stat0["uid"] == "0" and call.stat0["mode"] == "600", \
        call.stat0
    assert int(call.stat0["size"]) == len(call.message), call.stat0
    assert b"(authenticated user %s)" % U1.encode() in call.received()
    ok = [kv(e) for e in find_events(c.log, "auth") if e.startswith("auth ok")]
    assert ok and ok[0]["user"] == U1, c.log


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_wrong_password(env, accounts, mech):
    c = root_session(env)
    c.ehlo()
    if mech == "PLAIN":
        check(c.auth_plain(U1, "Not-the-pw"), 535, "5.7.8")
    else:
        check(c.auth_login(U1, "Not-the-pw"), 535, "5.7.8")
    check(c.mail(U1 + "@example.org"), 530, "5.7.0")
    env.no_calls()


def test_unknown_user(env, accounts):
    c = root_session(env)
    c.ehlo()
    check(c.auth_plain("satest-nosuch", "whatever"), 535, "5.7.8")


def test_locked_account(env, accounts):
    c = root_session(env)
    c.ehlo()
    check(c.auth_plain(U2, USERS[U2]), 535, "5.7.8")
    env.no_calls()


def test_expired_account(env, accounts):
    c = root_session(env)
    c.ehlo()
    check(c.auth_plain(U3, USERS[U3]), 535, "5.7.8")
    check(c.mail(U3 + "@example.org"), 530, "5.7.0")
    env.no_calls()


@pytest.mark.parametrize("password", ["", "anything", USERS[U4]],
                         ids=["empty", "any", "its-own"])
def test_empty_password_field(env, accounts, password):
    """An account whose /etc/shadow password field is empty must not be
    usable: neither with an empty password nor with any other (pam_unix's
    nullok would otherwise let every password in)."""
    c = root_session(env)
    c.ehlo()
    check(c.auth_plain(U4, password), 535, "5.7.8")
    check(c.mail(U4 + "@example.org"), 530, "5.7.0")
    env.no_calls()


def test_file_backend_as_root(env, accounts):
    """auth file as root: sendmail runs as the file user's Unix account; a
    file user without one is refused (reason=no-account)."""
    pw = accounts[U1]
    env.users = {U1: "File-Pw-1", "ghost-satest": "File-Pw-2"}
    path = env.write_passwd()
    os.chown(path, 0, 0)          # smtpauthd wants it owned by its own uid
    c = env.start(as_root=True, auth="file", privsep_user="nobody",
                  max_auth_failures=5)
    c.ehlo()
    check(c.auth_plain("ghost-satest", "File-Pw-2"), 535, "5.7.8")
    check(c.auth_plain(U1, "File-Pw-1"), 235, "2.7.0")
    check(c.transaction(sender=U1 + "@example.org"), 250)
    c.quit()
    call = env.one_call()
    assert (call.uid, call.gid) == (pw.pw_uid, pw.pw_gid)
    assert call.env["HOME"] == "/home/" + U1
    f = [kv(e) for e in find_events(c.log, "auth") if e.startswith("auth failed")]
    assert len(f) == 1 and f[0]["reason"] == "no-account", c.log


def test_root_not_switched_for_unauthenticated(env, accounts):
    """No sendmail as root, ever: a root session without AUTH sends nothing."""
    c = root_session(env)
    c.ehlo()
    check(c.mail("root@example.org"), 530, "5.7.0")
    r = c.cmd("RCPT TO:<root@example.org>")
    assert (r.code, r.enh) in ((503, "5.5.1"), (530, "5.7.0")), r
    env.no_calls()


def test_no_auth_as_uid_0(env, accounts):
    """A file-backend entry for root (uid 0) never authenticates: sendmail
    would run as root."""
    env.users = {"root": "Root-File-Pw", U1: "File-Pw-1"}
    path = env.write_passwd()
    os.chown(path, 0, 0)
    c = env.start(as_root=True, auth="file", privsep_user="nobody",
                  max_auth_failures=5)
    c.ehlo()
    check(c.auth_plain("root", "Root-File-Pw"), 535, "5.7.8")
    check(c.mail("root@example.org"), 530, "5.7.0")
    check(c.auth_plain(U1, "File-Pw-1"), 235, "2.7.0")
    env.no_calls()


# ---------------------------------------------------------------- fail closed

def test_missing_service_is_not_other(env, accounts):
    """A pam-service with no file: libpam would use /etc/pam.d/other, on
    Debian common-auth, and let the right password in.  454, and the log
    names the missing file."""
    missing = SERVICE + "-nosuch"
    assert not os.path.exists("/etc/pam.d/" + missing)
    c = root_session(env, pam_service=missing)
    c.ehlo()
    check(c.auth_plain(U1, USERS[U1]), 454, "4.7.0")
    check(c.mail(U1 + "@example.org"), 530, "5.7.0")
    f = [kv(e) for e in find_events(c.log, "auth")]
    assert [e["reason"] for e in f] == ["unavailable"], c.log
    assert "no PAM service file %s" % missing in c.log, c.log
    env.no_calls()
    r = env.run(["-t", "-f", env.write_config({
        "auth": "pam", "pam_service": missing, "privsep_user": "nobody"})])
    assert r.returncode == 78 and \
        b"no PAM service file " + missing.encode() in r.stderr, r


def test_rhel_file_on_debian(env, accounts):
    """pam.d/smtpauthd.rhel where there is no password-auth (Debian): an
    empty stack, which libpam answers "Permission denied" - once a 535 for
    every user, and fail2ban banning them.  454, and -t says why."""
    if os.path.exists("/etc/pam.d/password-auth"):
        pytest.skip("password-auth exists here (a Red Hat system)")
    svc = "/etc/pam.d/%s-rhel" % SERVICE
    shutil.copyfile(os.path.join(REPO, "pam.d", "smtpauthd.rhel"), svc)
    try:
        c = root_session(env, pam_service=SERVICE + "-rhel")
        c.ehlo()
        check(c.auth_plain(U1, USERS[U1]), 454, "4.7.0")
        f = [kv(e) for e in find_events(c.log, "auth")]
        assert [e["reason"] for e in f] == ["unavailable"], c.log
        assert "includes password-auth, which does not exist" in c.log, c.log
        env.no_calls()
        r = env.run(["-t", "-f", env.write_config({
            "auth": "pam", "pam_service": SERVICE + "-rhel",
            "privsep_user": "nobody"})])
        assert r.returncode == 78, r
        assert b"includes password-auth, which does not exist" in r.stderr, r
    finally:
        os.unlink(svc)


def test_debian_file_checks_clean(env, accounts):
    """The shipped Debian file passes -t here: every include and module
    found where libpam looks."""
    if not os.path.exists("/etc/pam.d/common-auth"):
        pytest.skip("no common-auth here (not Debian)")
    r = env.run(["-t", "-f", env.write_config({
        "auth": "pam", "pam_service": SERVICE, "privsep_user": "nobody"})])
    assert r.returncode == 0, r


def unit_address_families():
    """RestrictAddressFamilies= of each shipped service unit."""
    out = {}
    for unit in glob.glob(os.path.join(REPO, "systemd", "*.service")):
        with open(unit) as f:
            for line in f:
                if line.startswith("RestrictAddressFamilies="):
                    out[os.path.basename(unit)] = set(line.split("=", 1)[1].split())
    return out


def test_units_allow_what_the_check_opens(env, accounts):
    """Every address family the password check opens through real
    pam_unix (libpam's audit records: AF_NETLINK) is one the units'
    RestrictAddressFamilies= allows; otherwise the audit records of every
    login are dropped without a word (libpam takes EAFNOSUPPORT as an
    audit-less kernel)."""
    if shutil.which("strace") is None:
        pytest.skip("strace not installed")
    with open(env.stage.binary, "rb") as f:
        if f.read(4) != b"\x7fELF":
            pytest.skip("the binary under test is a wrapper (check-valgrind)")
    traces = os.path.join(env.dir, "strace")
    os.mkdir(traces)
    wrapper = env.write("strace-smtpauthd", "#!/bin/sh\nexec strace -f -qq "
                        "-e trace=socket -o %s/trace %s \"$@\"\n"
                        % (traces, env.stage.binary), 0o755)
    # LeakSanitizer cannot work under ptrace (the -asan build).
    environ = env.environ()
    environ["ASAN_OPTIONS"] = ":".join(
        o for o in (environ.get("ASAN_OPTIONS"), "detect_leaks=0") if o)
    binary, env.stage.binary = env.stage.binary, wrapper
    try:
        c = env.start(as_root=True, environ=environ, auth="pam",
                      pam_service=SERVICE, privsep_user="nobody")
        c.ehlo()
        check(c.auth_plain(U1, USERS[U1]), 235, "2.7.0")
        c.quit()
        c.finish()
    finally:
        env.stage.binary = binary
    opened = set()
    for name in os.listdir(traces):
        with open(os.path.join(traces, name)) as f:
            opened |= set(re.findall(r"socket\((AF_[A-Z0-9]+),", f.read()))
    assert "AF_NETLINK" in opened, opened      # libpam's audit, here
    units = unit_address_families()
    assert len(units) == 2, units
    for unit, allowed in units.items():
        assert opened <= allowed, (unit, sorted(opened - allowed))


# ---------------------------------------------------------------- timing

def test_failures_answer_alike(env, accounts):
    """Timing says nothing of why an AUTH failed.  pam_unix asks libpam
    for a 2 s (+-25 %) delay that libpam applies only when the password
    is wrong: a right password for an account refused afterwards (uid 0
    here; an expired one, the account stack) used to answer sooner, and
    so confirm the password.  Real pam_unix, 20 attempts each of: the
    right password of a uid-0 account, the right password of an expired
    account, a wrong password, an unknown user, on four connections at
    once (so that the machine's load falls on all alike).  Their medians
    lie within 50 ms of each other, their ranges overlap, and none
    answers before auth-failure-delay."""
    n, delay = 20, 1
    kinds = {"root": (UROOT, "Satest-Root-%s!" % PW),
             "expired": (U3, USERS[U3]),
             "wrong": (U1, "Not-the-pw-1"),
             "unknown": ("satestnosuch" + SFX, "Whatever-Pw-1")}
    times = {k: [] for k in kinds}
    errors = []
    clients = {}
    with uid0_account(UROOT, kinds["root"][1]):
        for kind in kinds:
            clients[kind] = root_session(env, auth_failure_delay=delay,
                                         max_auth_failures=n + 1)
            clients[kind].ehlo()
        run_threads(kinds, n, clients, times, errors)
    assert not errors, errors
    reasons = {k: {kv(e)["reason"] for e in find_events(c.log, "auth")}
               for k, c in clients.items()}
    # Debian's common-account refuses the expired account through
    # pam_deny, whose code reads as a wrong password: so be it.
    assert reasons == {"root": {"root"}, "expired": {"credentials"},
                       "wrong": {"credentials"},
                       "unknown": {"credentials"}}, reasons
    medians = {k: statistics.median(v) for k, v in times.items()}
    summary = {k: (round(min(v), 3), round(medians[k], 3), round(max(v), 3))
               for k, v in times.items()}
    for k, v in times.items():
        assert len(v) == n and min(v) >= delay - 0.01, summary
    for a in kinds:
        for b in kinds:
            assert abs(medians[a] - medians[b]) < 0.050, summary
            assert min(times[a]) <= max(times[b]), summary
    for c in clients.values():
        c.quit()
    env.no_calls()


UROOT = "satestr" + SFX


@contextlib.contextmanager
def uid0_account(name, password):
    """A second name for uid 0 with a password of its own (useradd -o):
    what smtpauthd must refuse after PAM accepted the password."""
    subprocess.run(["userdel", "-f", name], capture_output=True, timeout=60)
    sh("useradd", "-o", "-u", "0", "-g", "0", "-M", "-d", "/nonexistent",
       "-s", "/usr/sbin/nologin", name)
    try:
        p = subprocess.run(["chpasswd"], input=("%s:%s\n" % (name, password))
                           .encode(), capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr
        yield
    finally:
        subprocess.run(["userdel", "-f", name], capture_output=True,
                       timeout=60)
    assert name not in [p.pw_name for p in pwd.getpwall()]


def run_threads(kinds, n, clients, times, errors):
    """Each kind's n attempts on its own connection, all at once."""
    def attempts(kind):
        user, pw = kinds[kind]
        try:
            for _ in range(n):
                r, took = timed(clients[kind].auth_plain, user, pw)
                check(r, 535, "5.7.8")
                times[kind].append(took)
        except Exception as e:      # reported below, in the main thread
            errors.append("%s: %r" % (kind, e))

    threads = [threading.Thread(target=attempts, args=(k,)) for k in kinds]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)


@pytest.mark.parametrize("how", ["usermod-L", "chage-E0"])
def test_account_locked_between_messages(env, accounts, how):
    """An account locked or expired while its connection is open sends
    nothing more: pam_acct_mgmt and the shadow entry are checked again at
    the end of each DATA, and the refusal holds for the connection."""
    lock, unlock = {"usermod-L": (["usermod", "-L"], ["usermod", "-U"]),
                    "chage-E0": (["chage", "-E", "0"],
                                 ["chage", "-E", "-1"])}[how]
    c = root_session(env)
    c.ehlo()
    check(c.auth_plain(U1, USERS[U1]), 235, "2.7.0")
    check(c.transaction(sender=U1 + "@example.org", rcpts=["x@example.net"]),
          250, "2.0.0")
    try:
        sh(*(lock + [U1]))
        r = c.transaction(sender=U1 + "@example.org", rcpts=["y@example.net"])
        check(r, 550, "5.7.1")
        assert r.text == "5.7.1 Account not permitted to send", r
        check(c.mail(U1 + "@example.org"), 550, "5.7.1")
        c.quit()
    finally:
        sh(*(unlock + [U1]))
    assert len(env.calls()) == 1
    denied = [kv(e) for e in find_events(c.log, "denied")]
    assert [(d["user"], d["cmd"]) for d in denied] == [
        (U1, "DATA"), (U1, "MAIL")], c.log
    # Debian's common-account ends in pam_deny: an expired account reads
    # as a plain account refusal there.
    assert denied[0]["reason"] in (
        ("account-locked",) if how == "usermod-L" else
        ("account-expired", "account")), c.log
    assert denied[1]["reason"] == "account", c.log
