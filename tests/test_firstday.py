"""The administrator's first day (issue 16): -t refuses the state of a
fresh install before the certificate is set, and a host without syslog
(no /dev/log: a container, a minimal VM) is told so, once, on standard
error and by -t.

Without /dev/log: smtpauthd runs in a mount namespace (unshare -m) whose
/dev is a fresh tmpfs holding only null, zero, full, random and urandom
(bound from the real /dev) and, for the control case, /dev/log bound to a
datagram socket of the test's own; it then runs as the harness's
unprivileged user (setpriv), as the other protocol tests do.  Root only
(mounts); skipped otherwise, failed under SMTPAUTHD_REQUIRE_E2E=1 (CI)."""

import os
import shutil
import socket
import subprocess

import pytest

import smtptest
from smtptest import check

NO_TLS_ERROR = ("tls none with auth-require-tls yes: AUTH is never offered, "
                "so no one can send; set tls-cert and tls-key, or "
                "auth-require-tls no if the network is trusted")
UNAVAILABLE = "logging unavailable: /dev/log: "


def test_t_tls_none_with_auth_require_tls_is_an_error(env):
    """The defaults of a fresh install (no tls-cert, so tls none; and
    auth-require-tls yes) are an error naming what to set; auth-require-tls
    no is how the administrator says logins without TLS are meant."""
    path = env.write_config({"auth-require-tls": None})
    r = env.run(["-t", "-f", path])
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 78, err
    assert "smtpauthd: " + NO_TLS_ERROR + "\n" in err, err
    assert "configuration ok" not in err, err
    path = env.write_config({"auth-require-tls": "no"})
    r = env.run(["-t", "-f", path])
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 0, err
    assert "auth-require-tls" not in err and "configuration ok" in err, err


# ------------------------------------------------------- without /dev/log

# $1: an empty directory to build the new /dev in; $2: a socket to bind
# at /dev/log, or empty for none; the rest: the command, run as $UID:$GID.
NEW_DEV = r"""
set -e
d=$1 log=$2
shift 2
mount -t tmpfs -o mode=0755 smtpauthd-test "$d"
for n in null zero full random urandom; do
	: > "$d/$n"
	mount --bind "/dev/$n" "$d/$n"
done
if [ -n "$log" ]; then
	: > "$d/log"
	mount --bind "$log" "$d/log"
fi
mount --move "$d" /dev
exec setpriv --reuid="$RUN_UID" --regid="$RUN_GID" --clear-groups -- "$@"
"""


def skip(reason):
    if os.environ.get("SMTPAUTHD_REQUIRE_E2E") == "1":
        pytest.fail(reason + " (SMTPAUTHD_REQUIRE_E2E is set)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def devlog(env):
    """(wrap, listener): wrap(cmd, with_log) is cmd in a namespace whose
    /dev has no log, or one bound to listener (a datagram socket)."""
    if not smtptest.IS_ROOT:
        skip("needs root (mount namespaces)")
    for prog in ("unshare", "setpriv", "mount"):
        if shutil.which(prog) is None:
            skip(prog + " not installed (util-linux, mount)")
    path = os.path.join(env.dir, "syslog.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    os.chmod(path, 0o666)
    listener.settimeout(10)
    n = [0]

    def wrap(cmd, with_log):
        n[0] += 1
        d = os.path.join(env.dir, "dev-%d" % n[0])
        os.mkdir(d)
        return ["unshare", "--mount", "--propagation", "private", "sh",
                "-c", NEW_DEV, "sh", d, path if with_log else ""] + cmd

    probe = subprocess.run(wrap(["true"], False), capture_output=True,
                           text=True, timeout=30, check=False,
                           env=dict(os.environ, RUN_UID=str(smtptest.RUN_UID),
                                    RUN_GID=str(smtptest.RUN_GID)))
    if probe.returncode != 0:
        skip("unshare --mount: " + probe.stderr.strip())
    yield wrap, listener
    listener.close()


def session(env, wrap, with_log):
    """One connection to smtpauthd logging to syslog (no -d): greeting,
    QUIT.  Its standard error."""
    path = env.write_config()
    a, b = socket.socketpair()
    logpath = env.newlog()
    e = env.environ({"RUN_UID": str(smtptest.RUN_UID),
                     "RUN_GID": str(smtptest.RUN_GID)})
    with open(logpath, "wb") as logf:
        proc = subprocess.Popen(wrap([env.stage.binary, "-f", path],
                                     with_log),
                                stdin=b, stdout=b, stderr=logf, env=e,
                                close_fds=True)
    b.close()
    c = smtptest.Client(a, proc, logpath)
    env.clients.append(c)
    check(c.reply(15), 220)
    c.quit()
    assert c.wait_exit() == 0, c.log
    return c.log


def t_check(env, wrap, with_log):
    path = env.write_config()
    e = env.environ({"RUN_UID": str(smtptest.RUN_UID),
                     "RUN_GID": str(smtptest.RUN_GID)})
    r = subprocess.run(wrap([env.stage.binary, "-t", "-f", path], with_log),
                       capture_output=True, text=True, env=e, timeout=60,
                       check=False)
    return r.returncode, r.stderr


def test_no_syslog_is_said_once_on_stderr(env, devlog):
    wrap, listener = devlog
    log = session(env, wrap, False)
    lines = [ln for ln in log.splitlines() if UNAVAILABLE in ln]
    assert len(lines) == 1, log
    assert lines[0].startswith("smtpauthd["), log
    assert "No such file or directory" in lines[0], log
    # The control: with a /dev/log that listens, stderr stays empty and
    # the lines go there.
    log = session(env, wrap, True)
    assert UNAVAILABLE not in log, log
    got = listener.recv(4096).decode(errors="replace")
    assert "smtpauthd[" in got and "connect ip=" in got, got


def test_t_warns_without_dev_log(env, devlog):
    wrap, _ = devlog
    rc, err = t_check(env, wrap, False)
    assert rc == 0, err
    assert "smtpauthd: warning: /dev/log: No such file or directory: " \
        "nothing smtpauthd logs would be kept" in err, err
    assert err.endswith("smtpauthd: configuration ok\n"), err
    rc, err = t_check(env, wrap, True)
    assert rc == 0 and "/dev/log" not in err, err
