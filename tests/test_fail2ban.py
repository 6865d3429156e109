"""The shipped fail2ban filter and jail (contrib/fail2ban/), with Debian's
fail2ban: fail2ban-regex over the log lines of a real run of smtpauthd, and
fail2ban-client -t over the jail.

The lines come from smtpauthd's own log (-d, stderr) of connections that
log in, guess wrong passwords and unknown users (IPv4 and IPv6), meet a
PAM stack that is down, an expired password or account, and malformed or
cancelled AUTH exchanges.  Lines that do not exist yet (the coming
limiter's "blocked" lines) or that the harness cannot make cheaply (a
password check that times out) are written literally below.  Every line
gets a fixed date with year and zone (ISO 8601, as rsyslog's
RSYSLOG_FileFormat writes it), so that what fail2ban-regex makes of them is
the same whatever the day, time zone or locale.

fail2ban is in tools/packages' ci part (installing it starts a daemon that
bans addresses, not for a developer's make check): the tests skip without
it, and fail instead under SMTPAUTHD_REQUIRE_E2E=1 (CI), as the
end-to-end tests do.
"""

import os
import shutil
import subprocess
import tempfile

import pytest

import e2e
import smtptest
from smtptest import LOG_PREFIX, check, kv

CONTRIB = os.path.join(smtptest.REPO, "contrib", "fail2ban")
FILTER = os.path.join(CONTRIB, "filter.d", "smtpauthd.conf")
JAIL = os.path.join(CONTRIB, "jail.d", "smtpauthd.conf")
FAIL2BAN_ETC = "/etc/fail2ban"

# The reasons that are guesses (the filter's comment says why these).
GUESS = {"credentials", "unknown-user"}

# Written literally: lines no test run here produces.
LITERAL = [
    "blocked ip=192.0.2.70 reason=auth-limit-ip",
    "blocked ip=192.0.2.71 reason=auth-limit-net",
    "blocked ip=2001:db8:70::1 reason=auth-limit-ip",
    "blocked user=alice ip=192.0.2.72 reason=auth-limit-user",
    "blocked user=alice ip=2001:db8:72::1 reason=auth-limit-user",
    "auth failed user=alice mech=PLAIN ip=192.0.2.73 reason=timeout "
    "tls=TLSv1.3",
    "auth failed user=alice mech=LOGIN ip=2001:db8:73::1 reason=timeout "
    "tls=TLSv1.3",
    # A PAM module's line under the ident that names an address in the
    # text it passes on: not smtpauthd's line, not matched.
    "pam_x(smtpauthd:auth): server said: auth failed user=x mech=PLAIN "
    "ip=192.0.2.74 reason=credentials tls=-",
    # Behind a load balancer (proxy-protocol-from): its address is never
    # banned, whatever its connections' headers were.
    "connect ip=192.0.2.75 proxy=127.0.0.1",
    "disconnect ip=127.0.0.1 user=- reason=proxy-malformed commands=0 "
    "messages=0 detail=signature",
]


@pytest.fixture(scope="module", autouse=True)
def _fail2ban():
    for prog in ("fail2ban-regex", "fail2ban-client"):
        if shutil.which(prog) is None:
            e2e.skip("%s not installed (Debian's fail2ban, tools/packages "
                     "ci)" % prog)
    if not os.path.isfile(os.path.join(FAIL2BAN_ETC, "filter.d",
                                       "common.conf")):
        e2e.skip("%s/filter.d/common.conf missing" % FAIL2BAN_ETC)


@pytest.fixture
def confdir():
    """A copy of /etc/fail2ban with no jail of its own (Debian's enables
    sshd) and the shipped filter and jail, the jail enabled."""
    d = tempfile.mkdtemp(prefix="smtpauthd-f2b.")
    etc = os.path.join(d, "fail2ban")
    shutil.copytree(FAIL2BAN_ETC, etc, symlinks=True)
    for sub in ("jail.d", "fail2ban.d"):
        shutil.rmtree(os.path.join(etc, sub), ignore_errors=True)
        os.mkdir(os.path.join(etc, sub))
    shutil.copy(FILTER, os.path.join(etc, "filter.d", "smtpauthd.conf"))
    with open(JAIL) as f:
        jail = f.read()
    assert "\nenabled  = false\n" in jail, "the jail is shipped disabled"
    with open(os.path.join(etc, "jail.d", "smtpauthd.conf"), "w") as f:
        f.write(jail.replace("\nenabled  = false\n", "\nenabled  = true\n"))
    yield etc
    shutil.rmtree(d, ignore_errors=True)


def attempt(env, ip, user, password, how="plain", **conf):
    """One connection from ip (REMOTE_ADDR over the socketpair) with one
    AUTH; returns its reply."""
    c = env.start(environ={"REMOTE_ADDR": ip}, **conf)
    c.ehlo()
    if how == "plain":
        r = c.auth_plain(user, password)
    elif how == "login":
        r = c.auth_login(user, password)
    elif how == "malformed":
        r = c.cmd("AUTH PLAIN !!notbase64!!")
    else:                                   # cancelled
        check(c.cmd("AUTH LOGIN"), 334)
        r = c.cmd("*")
    c.cmd("QUIT")
    c.finish()
    return r


def run_log(stage):
    """(smtpauthd's log events with their pids, from a real run)."""
    envs = []

    def new_env():
        e = smtptest.Env(stage)
        envs.append(e)
        return e

    alice = smtptest.USERS["alice"]
    pam_alice = smtptest.PAM_USERS["alice"]
    try:
        env = new_env()                     # auth file
        check(attempt(env, "192.0.2.10", "alice", alice), 235)
        check(attempt(env, "2001:db8:10::1", "alice", alice, "login"), 235)
        check(attempt(env, "192.0.2.11", "alice", "guess-1"), 535)
        check(attempt(env, "192.0.2.11", "alice", "guess-2", "login"), 535)
        check(attempt(env, "2001:db8:11::1", "alice", "guess-3"), 535)
        check(attempt(env, "192.0.2.12", "mallory", "guess-4"), 535)
        check(attempt(env, "2001:db8:12::1", "nobody-here", "x", "login"),
              535)
        check(attempt(env, "192.0.2.13", "alice", "", "malformed"), 501)
        check(attempt(env, "192.0.2.14", "alice", "", "cancelled"), 501)
        # AUTH before TLS: a refusal line, never a guess (no password read)
        check(attempt(env, "192.0.2.15", "alice", alice,
                      auth_require_tls="yes"), 538)

        env = new_env()                     # PAM: a wrong password, a success
        env.use_pam()
        check(attempt(env, "198.51.100.20", "alice", "guess-5"), 535)
        check(attempt(env, "2001:db8:20::1", "bob", "guess-6", "login"), 535)
        check(attempt(env, "198.51.100.21", "alice", pam_alice), 235)
        env = new_env()                     # PAM: the stack is down
        env.use_pam(auth_ret="authinfo_unavail")
        check(attempt(env, "198.51.100.22", "alice", pam_alice), 454)
        check(attempt(env, "2001:db8:22::1", "alice", "guess-7"), 454)
        env = new_env()                     # PAM: the password expired
        env.use_pam(acct_ret="new_authtok_reqd")
        check(attempt(env, "198.51.100.23", "alice", pam_alice), 535)
        env = new_env()                     # PAM: the account expired
        env.use_pam(acct_ret="acct_expired")
        check(attempt(env, "198.51.100.24", "alice", pam_alice), 535)

        env = new_env()                     # the limits' own refusals
        lim = {"auth_limit_ip": "1/1h", "auth_limit_net": "0",
               "auth_limit_user": "1/1h"}
        check(attempt(env, "203.0.113.30", "carol", "guess-8", **lim), 535)
        c = env.start(environ={"REMOTE_ADDR": "203.0.113.30"}, greet=False,
                      **lim)
        check(c.reply(15), 421, "4.7.0")
        assert c.closed()
        c.wait_exit()
        check(attempt(env, "203.0.113.31", "carol", "guess-9", **lim), 454)

        events = []
        for e in envs:
            bad = e.sanitizer_reports()
            assert not bad, "\n".join(bad)
            for path in e.logs:
                for line in smtptest.read_log(path).split("\n"):
                    m = LOG_PREFIX.match(line)
                    if m:
                        events.append((int(m.group(1)), m.group(2)))
        return events
    finally:
        for e in envs:
            e.cleanup()


@pytest.fixture(scope="module")
def log_file(stage):
    """The run's lines and the literal ones as a syslog file:
    (path, [(ip the filter must find, or None, line)])."""
    events = run_log(stage) + [(4242, ev) for ev in LITERAL]
    d = tempfile.mkdtemp(prefix="smtpauthd-f2b-log.")
    path = os.path.join(d, "mail.log")
    lines = []
    with open(path, "w") as f:
        for n, (pid, ev) in enumerate(events):
            line = "2024-12-03T12:%02d:%02d.000000+00:00 mail smtpauthd[%d]: %s" \
                % (n // 60 % 60, n % 60, pid, ev)
            f.write(line + "\n")
            a = kv(ev)
            guess = ev.startswith("auth failed ") and \
                a.get("reason") in GUESS
            lines.append((a["ip"] if guess else None, line))
    yield path, lines
    shutil.rmtree(d, ignore_errors=True)


def fail2ban_regex(confdir, path, *more):
    r = subprocess.run(["fail2ban-regex", "-c", confdir, "-r", "-o",
                        "<ip> <msg>"] + list(more) + [path, "smtpauthd"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    return r.stdout


def matched(out):
    """fail2ban-regex -o '<ip> <msg>': [(ip, line)]."""
    return [tuple(l.split(" ", 1)) for l in out.splitlines() if l.strip()]


def test_the_run_has_every_kind_of_line(log_file):
    """The run made what the filter is tested against (else the test
    below would prove little)."""
    _, lines = log_file
    reasons = {}
    for _, line in lines:
        ev = line.split(": ", 1)[1]
        if ev.startswith("auth "):
            a = kv(ev)
            key = a.get("reason", "ok")
            reasons.setdefault(key, set()).add(":" in a["ip"])
    for reason in ("ok", "credentials", "unknown-user", "unavailable"):
        assert reasons.get(reason) == {False, True}, (reason, reasons)
    for reason in ("password-expired", "account-expired", "malformed",
                   "cancelled", "timeout"):
        assert reason in reasons, (reason, reasons)
    # The limits' refusals, from the run itself (not only the literal ones).
    real = [l for _, l in lines if "smtpauthd[4242]" not in l]
    for what in ("blocked ip=203.0.113.30 reason=auth-limit-ip",
                 "blocked user=carol ip=203.0.113.31 reason=auth-limit-user",
                 "limit reached ip:203.0.113.30 reason=auth-limit-ip",
                 "rejected ip=192.0.2.15 user=- cmd=AUTH reply=\"538 "):
        assert any(what in l for l in real), (what, real)


def test_filter_matches_guesses_only(confdir, log_file):
    path, lines = log_file
    want = [(ip, line) for ip, line in lines if ip is not None]
    got = matched(fail2ban_regex(confdir, path))
    assert sorted(got) == sorted(want), \
        "matched but not a guess: %r\nguesses missed: %r" % (
            sorted(set(got) - set(want)), sorted(set(want) - set(got)))
    ips = {ip for ip, _ in got}
    assert "192.0.2.11" in ips and "2001:db8:11::1" in ips, ips
    assert not any(l for _, l in got if " blocked " in l or " auth ok " in l)


def test_filter_matches_on_any_day(confdir, log_file):
    """The same lines, found the same under another time zone and locale
    (the dates carry their year and zone)."""
    path, lines = log_file
    want = sorted((ip, l) for ip, l in lines if ip is not None)
    env = dict(os.environ, TZ="Pacific/Kiritimati", LC_ALL="C.UTF-8")
    r = subprocess.run(["fail2ban-regex", "-c", confdir, "-r", "-o",
                        "<ip> <msg>", path, "smtpauthd"], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert sorted(matched(r.stdout)) == want


def test_jail_accepted_by_fail2ban_client(confdir):
    r = subprocess.run(["fail2ban-client", "-c", confdir, "-t"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "configuration test is successful" in r.stdout + r.stderr
    r = subprocess.run(["fail2ban-client", "-c", confdir, "-d"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    dump = r.stdout
    assert "['add', 'smtpauthd', 'systemd']" in dump, dump
    assert "'addjournalmatch', 'SYSLOG_IDENTIFIER=smtpauthd'" in dump, dump
    # Without the filter the same jail is refused: -t reads it.
    os.unlink(os.path.join(confdir, "filter.d", "smtpauthd.conf"))
    r = subprocess.run(["fail2ban-client", "-c", confdir, "-t"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0, r.stdout + r.stderr


def test_jail_logpath_variant(confdir):
    """The commented syslog-file variant works once uncommented."""
    jail = os.path.join(confdir, "jail.d", "smtpauthd.conf")
    with open(jail) as f:
        text = f.read()
    assert "\nbackend  = systemd\n" in text and \
        "\n#backend  = auto\n#logpath  = /var/log/mail.log\n" in text
    d = os.path.dirname(confdir)
    log = os.path.join(d, "mail.log")
    open(log, "w").close()
    text = text.replace("\nbackend  = systemd\n", "\n").replace(
        "\n#backend  = auto\n#logpath  = /var/log/mail.log\n",
        "\nbackend  = auto\nlogpath  = %s\n" % log)
    with open(jail, "w") as f:
        f.write(text)
    r = subprocess.run(["fail2ban-client", "-c", confdir, "-d"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "'addlogpath', '%s'" % log in r.stdout, r.stdout
