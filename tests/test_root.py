"""Root only: smtpauthd running as root against real Unix accounts through
PAM (pam_unix via the repository's pam.d/smtpauthd), and sendmail run as
the authenticated user.  Skipped unless run as root; every account, group
and file made here is removed at the end."""

import grp
import os
import pwd
import shutil
import subprocess

import pytest

from smtptest import REPO, IS_ROOT, check, find_events, kv

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root (useradd, /etc/pam.d)")

# A suffix per run, so that two runs at once (make check while a developer
# runs pytest) do not trample each other's accounts.
SFX = "%04x" % (os.getpid() & 0xffff)
SERVICE = "smtpauthd-satest" + SFX
GROUP = "satestg" + SFX
U1, U2, U3, U4 = ("satest%d%s" % (i, SFX) for i in range(1, 5))
USERS = {
    U1: "Satest1-Pw!",     # ordinary
    U2: "Satest2-Pw!",     # locked (usermod -L)
    U3: "Satest3-Pw!",     # expired (chage -E 0)
    U4: "Satest4-Pw!",     # empty password field (passwd -d)
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


@pytest.mark.parametrize("password", ["", "anything", USERS[U4]])
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
