"""The shipped systemd units under a real systemd: systemd booted as PID 1
in a container (systemd-nspawn, Debian's systemd-container), the socket
units as shipped with only their listen address and the binary's path
rewritten, real PAM (pam_unix through the repository's pam.d/smtpauthd and
a real account), syslog into the container's journal, and sendmail (the
capture program) run as the authenticated user under the service's
hardening.

How the container is made (one per module, about two seconds to boot):
  systemd-nspawn --directory=/ --volatile=yes --register=no --keep-unit
      --bind-ro=... --bind=DIR:/srv/smtpauthd-test
      --boot systemd.firstboot=off systemd.unit=smtpauthd-test.target
- --volatile=yes: the container's root is a tmpfs with the host's /usr
  read-only; /etc and /var start empty.  What the units need from /etc is
  bound read-only into it: passwd, shadow, group, gshadow, nsswitch.conf,
  a copy of /etc/pam.d with pam.d/smtpauthd added, the configuration as
  /etc/smtpauthd.conf (the default path, so ExecStart= keeps its
  arguments), and each unit file into /etc/systemd/system.
- systemd.unit=smtpauthd-test.target: the container's systemd starts only
  sysinit and the sockets under test.  Booting the default target would
  start, in a container that shares the host's network, every service
  the host's presets enable (Postfix, fail2ban, ...).
- The per-run directory is bound at /srv/smtpauthd-test (not under /tmp
  or /var/tmp, which the service's PrivateTmp=yes hides): the binary, the
  certificate and key, the capture sendmail and what it records.
- The container shares the host's network: the sockets listen on
  127.0.0.1 at free ports and the test connects to them directly.
- systemctl and journalctl run inside through nsenter into the
  namespaces of the container's PID 1 (the child of the nspawn process):
  with --register=no there is no machine for systemctl --machine, and
  nsenter needs nothing running on the host.
- At the end the nspawn process gets SIGTERM, which shuts the container
  down cleanly (SIGKILL after 30 s); the test checks that no process is
  left in the container's PID namespace.

The burst test checks its own strength: a control socket, the shipped
587 one without its TriggerLimit line, must fail (Result
trigger-limit-hit) on the same burst, or the test fails.

Root only: skipped otherwise or without systemd-nspawn or nsenter; under
SMTPAUTHD_REQUIRE_E2E=1 (CI) a skip is a failure, as for the end-to-end
tests.  Skipped under make check-valgrind, whose wrapper script cannot
run in the container (make check runs it against both builds).  The
account made here (e2e.Accounts) is removed at the end.
"""

import os
import re
import shutil
import socket
import tempfile
import time

import pytest

import e2e
import smtptest
from container import Container, bind_files, boot_target
from e2e import SFX
from smtptest import (IS_ROOT, REPO, Client, ConnectionClosed, check,
                      free_port, tls_client_context)

CT = "/srv/smtpauthd-test"          # the run's directory, in the container
UNITS = ["smtpauthd.socket", "smtpauthd@.service", "smtpauthd-smtps.socket",
         "smtpauthd-smtps@.service"]
SHIPPED_SBIN = "/usr/local/sbin/smtpauthd"
BURST = 500                         # connections, well past the default 200/2 s


@pytest.fixture(scope="module", autouse=True)
def _gate():
    if not IS_ROOT:
        e2e.skip("needs root (systemd-nspawn, accounts)")
    for prog in ("systemd-nspawn", "nsenter", "useradd", "chpasswd",
                 "userdel", "openssl"):
        if shutil.which(prog) is None:
            e2e.skip("%s not installed (systemd-nspawn: Debian's "
                     "systemd-container, tools/packages ci)" % prog)
    with open(smtptest.BINARY, "rb") as f:
        if f.read(4) != b"\x7fELF":
            # make check-valgrind's wrapper script: it names valgrind and
            # files the container does not have.  make check runs this
            # module against both real builds.
            pytest.skip("%s is not a program but a wrapper"
                        % smtptest.BINARY)


def rewrite_socket(text, port):
    """The shipped socket unit listening on 127.0.0.1:port instead."""
    out, n = re.subn(r"^ListenStream=\d+$", "ListenStream=127.0.0.1:%d" % port,
                     text, flags=re.M)
    assert n == 1, text
    return out


def rewrite_service(text, binary):
    assert text.count(SHIPPED_SBIN) == 1, text
    return text.replace(SHIPPED_SBIN, binary)


class Units:
    """The run: an account, the files, the container."""

    def __init__(self):
        self.top = tempfile.mkdtemp(prefix="smtpauthd-nspawn.")
        os.chmod(self.top, 0o755)
        self.dir = os.path.join(self.top, "srv")     # /srv/smtpauthd-test
        os.mkdir(self.dir)
        os.chmod(self.dir, 0o755)
        self.accounts = None
        self.container = None
        self.ports = {}

    def host(self, ct_path):
        assert ct_path.startswith(CT + "/")
        return self.dir + ct_path[len(CT):]

    def setup(self, stage, pki):
        self.accounts = e2e.Accounts({"user": "sdunit" + SFX}).create()
        self.user = self.accounts.name("user")
        self.password = self.accounts.password("user")
        d = self.dir
        shutil.copy2(stage.binary, os.path.join(d, "smtpauthd"))
        os.chmod(os.path.join(d, "smtpauthd"), 0o755)
        sm = os.path.join(d, "sm")
        os.mkdir(sm)
        os.chmod(sm, 0o1777)
        shutil.copy2(stage.capture, os.path.join(sm, "sendmail"))
        os.chmod(os.path.join(sm, "sendmail"), 0o755)
        self.smdir = sm
        shutil.copy(pki.path("chain.pem"), os.path.join(d, "chain.pem"))
        shutil.copy(pki.path("leaf.key"), os.path.join(d, "leaf.key"))
        os.chown(os.path.join(d, "leaf.key"), 0, 0)
        os.chmod(os.path.join(d, "leaf.key"), 0o600)
        conf = os.path.join(self.top, "smtpauthd.conf")
        with open(conf, "w") as f:
            f.write("hostname %s\n" % smtptest.HOSTNAME
                    + "tls-cert %s/chain.pem\n" % CT
                    + "tls-key %s/leaf.key\n" % CT
                    + "sendmail %s/sm/sendmail\n" % CT
                    + "sender-domains example.org\n"
                    + "auth-failure-delay 0\n")
        os.chmod(conf, 0o644)
        # /etc/pam.d as the host has it, with the repository's service.
        pamd = os.path.join(self.top, "pam.d")
        shutil.copytree("/etc/pam.d", pamd, symlinks=True)
        shutil.copy(os.path.join(REPO, "pam.d", "smtpauthd"),
                    os.path.join(pamd, "smtpauthd"))
        # The units as shipped, listen address and binary rewritten; the
        # control: the 587 socket without its trigger-limit lines.
        units = os.path.join(self.top, "units")
        os.mkdir(units)
        binds = []
        texts = {}
        for u in UNITS:
            with open(os.path.join(REPO, "systemd", u)) as f:
                texts[u] = f.read()
        for u in ("smtpauthd.socket", "smtpauthd-smtps.socket"):
            self.ports[u] = free_port()
            texts[u] = rewrite_socket(texts[u], self.ports[u])
        for u in ("smtpauthd@.service", "smtpauthd-smtps@.service"):
            texts[u] = rewrite_service(texts[u], CT + "/smtpauthd")
        self.ports["control.socket"] = free_port()
        control = re.sub(r"^TriggerLimit\w+=.*\n", "",
                         texts["smtpauthd.socket"], flags=re.M)
        texts["control.socket"] = re.sub(
            r"^ListenStream=.*$", "ListenStream=127.0.0.1:%d"
            % self.ports["control.socket"], control, flags=re.M)
        texts["control@.service"] = texts["smtpauthd@.service"]
        texts["smtpauthd-test.target"] = boot_target(
            "the sockets only", ("smtpauthd.socket",
                                 "smtpauthd-smtps.socket", "control.socket"))
        bind_files(units, texts, "/etc/systemd/system", binds)
        for f in ("passwd", "shadow", "group", "gshadow", "nsswitch.conf"):
            if os.path.exists("/etc/" + f):
                binds.append(("/etc/" + f, "/etc/" + f))
        binds += [(pamd, "/etc/pam.d"), (conf, "/etc/smtpauthd.conf")]
        self.container = Container(self.top, binds, [(self.dir, CT)],
                                   "smtpauthd-test.target")
        c = self.container
        c.find_pid1()
        e2e.wait_until(lambda: all(
            c.prop(u, "ActiveState") == "active"
            for u in ("smtpauthd.socket", "smtpauthd-smtps.socket",
                      "control.socket")) and all(
            smtptest.listening(p) for p in self.ports.values()),
            timeout=60, what="the sockets in the container")

    def cleanup(self):
        left = []
        if self.container is not None:
            left = self.container.stop()
        if self.accounts is not None:
            self.accounts.remove()
        if not os.environ.get("KEEP_TEST_DIRS"):
            shutil.rmtree(self.top, ignore_errors=True)
        assert not left, "processes left in the container: %r" % left

    # --- helpers of the tests
    def connect(self, unit, tls=False, greet=True):
        s = socket.create_connection(("127.0.0.1", self.ports[unit]),
                                     timeout=10)
        c = Client(s)
        if tls:
            c.wrap_tls()
        if greet:
            c.greeting(15)
        return c

    def calls(self):
        return smtptest.calls_in(self.smdir)

    def instances(self, prefix="smtpauthd"):
        r = self.container.systemctl("list-units", "--all", "--plain",
                                     "--no-legend", prefix + "*@*.service")
        return [l.split()[0] for l in r.stdout.splitlines()
                if l.split() and l.split()[2] not in ("inactive",)]

    def wait_idle(self, timeout=30):
        e2e.wait_until(lambda: not self.instances("smtpauthd") and
                       not self.instances("control"), timeout=timeout,
                       what="every session's instance to end")


@pytest.fixture(scope="module")
def units(stage, pki):
    u = Units()
    try:
        u.setup(stage, pki)
        yield u
    finally:
        u.cleanup()


def submit(u, c, tag):
    """EHLO, AUTH PLAIN as the account, one message; sendmail's record."""
    c.ehlo()
    check(c.auth_plain(u.user, u.password), 235, "2.7.0")
    before = len(u.calls())
    r = c.transaction(sender="%s@example.org" % u.user,
                      rcpts=["rcpt@example.net"],
                      body=("Subject: %s\r\n\r\nhello\r\n" % tag).encode())
    check(r, 250, "2.0.0")
    c.quit()
    calls = u.calls()
    assert len(calls) == before + 1, calls
    return calls[-1]


def journal_has(u, pattern, timeout=10):
    e2e.wait_until(lambda: re.search(pattern, u.container.journal(), re.M),
                   timeout=timeout, what="%r in the journal" % pattern)


def test_units_rewritten_only_where_needed(units):
    """Only ListenStream= and the binary's path differ from systemd/."""
    for u in UNITS:
        with open(os.path.join(REPO, "systemd", u)) as f:
            shipped = f.read().splitlines()
        with open(os.path.join(units.top, "units", u)) as f:
            used = f.read().splitlines()
        diff = [(a, b) for a, b in zip(shipped, used) if a != b]
        assert len(shipped) == len(used) and len(diff) == 1, diff
        assert diff[0][0].startswith(("ListenStream=", "ExecStart=")), diff
    for s in ("smtpauthd.socket", "smtpauthd-smtps.socket"):
        c = units.container
        assert c.prop(s, "Accept") == "yes"
        assert c.prop(s, "MaxConnections") == "64"
        assert c.prop(s, "MaxConnectionsPerSource") == "8"
        assert c.prop(s, "TriggerLimitIntervalUSec") in ("0", "infinity"), \
            c.prop(s, "TriggerLimitIntervalUSec")
    assert units.container.prop("control.socket",
                                "TriggerLimitBurst") == "200"


def test_submission_starttls_pam_syslog_sendmail(units):
    c = units.connect("smtpauthd.socket")
    c.ehlo()
    c.starttls()
    call = submit(units, c, "587")
    pw = units.accounts.pw("user")
    assert (call.uid, call.euid) == (pw.pw_uid, pw.pw_uid), call
    assert call.rcpts() == ["rcpt@example.net"], call.argv
    assert b"Subject: 587" in call.message
    assert b"with ESMTPSA" in call.received()
    journal_has(units, r"^auth ok user=%s mech=PLAIN ip=127\.0\.0\.1 "
                r"tls=TLSv1\.[23]$" % units.user)
    journal_has(units, r"^queued id=\S+ user=%s .*ip=127\.0\.0\.1"
                % units.user)


def test_submission_implicit_tls(units):
    c = units.connect("smtpauthd-smtps.socket", tls=True)
    call = submit(units, c, "465")
    assert call.uid == units.accounts.uid("user")
    assert b"Subject: 465" in call.message


def test_wrong_password_through_pam(units):
    c = units.connect("smtpauthd.socket")
    c.ehlo()
    c.starttls()
    c.ehlo()
    check(c.auth_plain(units.user, "not-" + units.password), 535, "5.7.8")
    c.quit()
    journal_has(units, r"^auth failed user=%s mech=PLAIN ip=127\.0\.0\.1 "
                r"reason=credentials tls=\S+$" % units.user)
    # The failure is remembered where the units' StateDirectory= put the
    # default store, root's alone, under the hardening (ProtectSystem=full).
    r = units.container.run("stat", "-c", "%a %U %F",
                            "/var/lib/smtpauthd", "/var/lib/smtpauthd/state.db",
                            "/var/lib/smtpauthd/state.db.key")
    assert r.stdout.split("\n")[:3] == ["700 root directory",
                                         "600 root regular file",
                                         "600 root regular file"], r
    assert "failing open" not in units.container.journal()


def test_max_connections_per_source(units):
    units.wait_idle()
    held = [units.connect("smtpauthd.socket") for _ in range(8)]
    ninth = units.connect("smtpauthd.socket", greet=False)
    with pytest.raises(ConnectionClosed):
        ninth.reply(10)
    # One leaves: there is room again once its instance has ended.
    held.pop().quit()
    e2e.wait_until(lambda: len(units.instances()) <= 7, timeout=20,
                   what="the instance of the closed connection to end")
    held.append(units.connect("smtpauthd.socket"))
    for c in held:
        c.quit()
    units.wait_idle()
    c = units.container
    assert c.prop("smtpauthd.socket", "ActiveState") == "active"


def burst(port, n):
    """n connections opened and closed at once: (seconds it took, how
    many were refused or reset)."""
    t = time.monotonic()
    refused = 0
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.close()
        except (ConnectionRefusedError, ConnectionResetError):
            refused += 1
    return time.monotonic() - t, refused


def test_burst_past_the_trigger_limit(units):
    c = units.container
    units.wait_idle()
    # The control (the default trigger limit) fails on such a burst: this
    # is what the units' TriggerLimitIntervalSec=0 prevents.
    took, _ = burst(units.ports["control.socket"], BURST)
    assert took < 2, "the burst took %.1f s: too slow to show anything" % took
    e2e.wait_until(lambda: c.prop("control.socket", "ActiveState")
                   == "failed", timeout=10,
                   what="the control socket to fail (%s)" %
                   c.prop("control.socket", "Result"))
    assert c.prop("control.socket", "Result") == "trigger-limit-hit"

    took, refused = burst(units.ports["smtpauthd.socket"], BURST)
    assert took < 2, took
    assert refused == 0, "%d of %d connections refused" % (refused, BURST)
    units.wait_idle()
    assert c.prop("smtpauthd.socket", "ActiveState") == "active"
    assert c.prop("smtpauthd.socket", "Result") == "success"
    s = units.connect("smtpauthd.socket")
    s.ehlo()
    s.quit()
