"""Accounts that exist only in a directory: OpenLDAP (Debian's slapd,
started here on 127.0.0.1 with a temporary database) seen through
nss-pam-ldapd (nslcd, libnss-ldapd's NSS module, libpam-ldapd's pam_ldap),
with smtpauthd run as root by the shipped socket units in the systemd
container of test_systemd (tests/container.py), whose /etc is a tmpfs:
nsswitch.conf, nslcd.conf and the PAM files are written there, never on
the host.

Why nslcd and not SSSD: one small daemon with one configuration file and
no cache of its own, so "the directory is down" is what the test sees the
moment slapd stops (SSSD answers from its cache for a while, which is
what a site wants but makes the test wait or configure the cache away).

The host installs nothing of it: nslcd, libnss-ldapd and libpam-ldapd are
unpacked (dpkg-deb -x) from the .debs that .ci/run fetches with apt-get
download into $SMTPAUTHD_CI_DEBS (default /var/cache/smtpauthd-ci/debs;
fetched into the run's directory when missing there), because installing
them runs pam-auth-update and may edit the host's nsswitch.conf, and the
whole suite runs on that host.  In the container:
  - pam_ldap.so joins a copy of the host's PAM module directory, bound
    read-only over it (where libpam and smtpauthd's stack check look);
  - libnss_ldap.so.2 is found through /etc/ld.so.conf and ldconfig run
    inside (the container's /etc is empty at boot: no cache to spoil);
  - nslcd runs as a transient service (systemd-run) of the container's
    systemd, so it is stopped with the container.
The container shares the host's network, so nslcd reaches slapd on the
host's loopback.  slapd itself (tools/packages ci, installed with
slapd/no_configuration so that no directory of the host's is made or
started) runs on the host from a slapd.conf in the run's directory.

Four smtpauthd services, one socket unit each:
  - smtpauthd: pam.d/smtpauthd.ldap, the shipped file for directory
    accounts, installed as /etc/pam.d/smtpauthd: a directory that is down
    answers 454 (reason=unavailable), not 535, and before a message 451,
    not 550.
  - stock: the shipped pam.d/smtpauthd unchanged, with common-auth and
    common-account as pam-auth-update writes them once libpam-ldapd is
    installed: directory users log in, but a directory that is down is
    a wrong password to it (pam_deny after pam_ldap's authinfo_unavail
    is ignored).  That is why pam.d/smtpauthd.ldap exists; the test keeps
    both true.
  - nss: pam_permit only, so that smtpauthd's own getpwnam() of the
    account is what meets the directory that is down.
  - postfix: the smtpauthd PAM service, with Postfix's sendmail.  Postfix
    (the host's binaries) runs inside the container, started only by the
    test that uses it: its /etc/postfix is written here (local delivery
    only, no inet listener, nothing chrooted), its queue and /var/mail
    are the container's, so the host's Postfix, running or not, is not
    involved.  local(8) finds the recipient, a second directory user,
    through the container's NSS, as a real host's would.
Two hosts sharing the one slapd (issue 13, part 4; the fixture fleet,
started only by the tests that use it): two more socket units in the same
container, on 127.0.0.2:P and 127.0.0.3:P, whose configurations differ in
hostname only: the directory's PAM service (smtpauthd), the capture
sendmail, `proxy-protocol-from 127.0.0.1` and one `state redis://...` (a
redis-server on the host's loopback, which the container shares).  One
haproxy on the host in front of them (TCP, roundrobin, send-proxy-v2,
source 127.0.0.1); each client connects to it from a loopback address of
its own, so that a log line names the connection it belongs to.  No
haproxy health checks: test_fleet.py shows what they do, and here each
would start an instance of the service in the container.

Root only (systemd-nspawn, slapd); a skip is a failure under
SMTPAUTHD_REQUIRE_E2E=1.  Skipped under make check-valgrind for the reason
test_systemd is.
"""

import base64
import glob
import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile

import pytest

import e2e
import services
import smtptest
from container import Container, bind_files, boot_target
from e2e import SFX
from smtptest import IS_ROOT, REPO, Client, check, free_port, received_re

CT = "/srv/smtpauthd-test"
SHIPPED_SBIN = "/usr/local/sbin/smtpauthd"
DEBS = os.environ.get("SMTPAUTHD_CI_DEBS", "/var/cache/smtpauthd-ci/debs")
LDAPD_PKGS = ("nslcd", "libnss-ldapd", "libpam-ldapd")
BASE = "dc=example,dc=test"
USER = "dirusr" + SFX
PASSWORD = "Dir-secret-" + SFX
RCPT = "dirrcp" + SFX            # a second directory user, Postfix's recipient
PF_HOSTNAME = "postfix-ldap.test"
F2B_FILTER = os.path.join(REPO, "contrib", "fail2ban", "filter.d",
                          "smtpauthd.conf")

# What pam-auth-update writes once libpam-ldapd is installed (Debian 12,
# libpam-runtime's unix profile and libpam-ldapd's "ldap" profile).
COMMON_AUTH = """\
auth	[success=2 default=ignore]	pam_unix.so nullok
auth	[success=1 default=ignore]	pam_ldap.so minimum_uid=1000 use_first_pass
auth	requisite			pam_deny.so
auth	required			pam_permit.so
"""
COMMON_ACCOUNT = """\
account	[success=1 new_authtok_reqd=done default=ignore]	pam_unix.so
account	requisite			pam_deny.so
account	required			pam_permit.so
account	[success=ok new_authtok_reqd=done ignore=ignore user_unknown=ignore \
authinfo_unavail=ignore default=bad]	pam_ldap.so minimum_uid=1000
"""
# The nss service: PAM says yes to anyone, so that what is tested is
# smtpauthd's own getpwnam() of the account (at AUTH and before each
# message) while the directory is down, not pam_ldap's answer.
NSS_ONLY_PAM = """\
auth	required	pam_permit.so
account	required	pam_permit.so
"""


@pytest.fixture(scope="module", autouse=True)
def _gate():
    if not IS_ROOT:
        e2e.skip("needs root (systemd-nspawn, slapd)")
    for prog in ("systemd-nspawn", "nsenter", "dpkg-deb", "openssl"):
        if shutil.which(prog) is None:
            e2e.skip("%s not installed (tools/packages ci)" % prog)
    for prog in ("/usr/sbin/slapd", "/usr/sbin/slapadd"):
        if not os.access(prog, os.X_OK):
            e2e.skip("%s not installed (slapd, tools/packages ci)" % prog)
    with open(smtptest.BINARY, "rb") as f:
        if f.read(4) != b"\x7fELF":
            pytest.skip("%s is not a program but a wrapper"
                        % smtptest.BINARY)


def free_uid(uid=None):
    """A uid number no account of the host has (the directory's own)."""
    if uid is None:
        uid = 70000 + (os.getpid() & 0x3fff)
    while True:
        try:
            pwd.getpwuid(uid)
            uid += 1
        except KeyError:
            return uid


def ssha(password):
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def unpack_ldapd(top):
    """nslcd, libnss-ldapd and libpam-ldapd unpacked into top/ldapd."""
    out = os.path.join(top, "ldapd")
    fetch = os.path.join(top, "debs")
    os.mkdir(fetch)
    for pkg in LDAPD_PKGS:
        debs = sorted(glob.glob(os.path.join(DEBS, pkg + "_*.deb")))
        if not debs:
            os.chmod(fetch, 0o777)      # apt-get download runs as _apt
            r = subprocess.run(["apt-get", "download", "-q", pkg], cwd=fetch,
                               capture_output=True, text=True, timeout=120)
            debs = sorted(glob.glob(os.path.join(fetch, pkg + "_*.deb")))
            if not debs:
                e2e.skip("no %s .deb in %s and apt-get download failed: %s"
                         % (pkg, DEBS, r.stderr.strip()))
        subprocess.run(["dpkg-deb", "-x", debs[-1], out], check=True)
    return out


class Slapd:
    """slapd on 127.0.0.1:port with an mdb database in dir."""

    def __init__(self, dir, uid, rcpt_uid):
        self.dir = dir
        self.port = free_port()
        self.proc = None
        db = os.path.join(dir, "db")
        os.makedirs(db)
        self.conf = os.path.join(dir, "slapd.conf")
        with open(self.conf, "w") as f:
            f.write("include /etc/ldap/schema/core.schema\n"
                    "include /etc/ldap/schema/cosine.schema\n"
                    "include /etc/ldap/schema/nis.schema\n"
                    "include /etc/ldap/schema/inetorgperson.schema\n"
                    "pidfile %s/slapd.pid\n" % dir
                    + "modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
                    "database mdb\nmaxsize 10485760\n"
                    "suffix \"%s\"\n" % BASE
                    + "directory %s\n" % db
                    + "access to attrs=userPassword by anonymous auth "
                    "by * none\naccess to * by * read\n")
        ldif = os.path.join(dir, "base.ldif")
        with open(ldif, "w") as f:
            f.write("dn: %s\nobjectClass: dcObject\nobjectClass: "
                    "organization\no: test\ndc: example\n\n" % BASE
                    + "dn: ou=people,%s\nobjectClass: organizationalUnit\n"
                    "ou: people\n\n" % BASE
                    + "dn: ou=groups,%s\nobjectClass: organizationalUnit\n"
                    "ou: groups\n\n" % BASE
                    + "dn: cn=%s,ou=groups,%s\nobjectClass: posixGroup\n"
                    "cn: %s\ngidNumber: %d\n\n" % (USER, BASE, USER, uid)
                    + "dn: uid=%s,ou=people,%s\nobjectClass: account\n"
                    "objectClass: posixAccount\nuid: %s\ncn: %s\n"
                    "uidNumber: %d\ngidNumber: %d\n"
                    "homeDirectory: /nonexistent\nloginShell: /bin/sh\n"
                    "userPassword: %s\n"
                    % (USER, BASE, USER, USER, uid, uid, ssha(PASSWORD))
                    + "\ndn: uid=%s,ou=people,%s\nobjectClass: account\n"
                    "objectClass: posixAccount\nuid: %s\ncn: %s\n"
                    "uidNumber: %d\ngidNumber: %d\n"
                    "homeDirectory: /nonexistent\nloginShell: /bin/sh\n"
                    % (RCPT, BASE, RCPT, RCPT, rcpt_uid, uid))
        r = subprocess.run(["/usr/sbin/slapadd", "-f", self.conf, "-l", ldif],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr

    def start(self):
        self.log = open(os.path.join(self.dir, "slapd.log"), "ab")
        # -d: in the foreground (a child to wait for), logging nothing.
        self.proc = subprocess.Popen(
            ["/usr/sbin/slapd", "-d", "0", "-f", self.conf, "-h",
             "ldap://127.0.0.1:%d/" % self.port], stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        e2e.wait_until(lambda: self.proc.poll() is not None or
                       smtptest.listening(self.port), timeout=30,
                       what="slapd listening")
        assert self.proc.poll() is None, smtptest.read_log(self.log.name)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()
            self.log = None


class Directory:
    """The run: slapd, the unpacked nss-pam-ldapd, the container."""

    def __init__(self):
        self.top = tempfile.mkdtemp(prefix="smtpauthd-ldap.")
        os.chmod(self.top, 0o755)
        self.dir = os.path.join(self.top, "srv")     # CT in the container
        os.mkdir(self.dir)
        os.chmod(self.dir, 0o755)
        self.slapd = None
        self.container = None
        self.ports = {}
        self.uid = free_uid()
        self.rcpt_uid = free_uid(self.uid + 1)
        self.local = None

    def setup(self, stage, pki):
        d = self.dir
        # A local account too, made before the container binds the host's
        # /etc/passwd and /etc/shadow (useradd replaces the files).
        self.local = e2e.Accounts({"local": "ldloc" + SFX}).create()
        ldapd = unpack_ldapd(self.top)
        self.slapd = Slapd(os.path.join(self.top, "slapd"), self.uid,
                           self.rcpt_uid)
        self.slapd.start()

        shutil.copy2(stage.binary, os.path.join(d, "smtpauthd"))
        os.chmod(os.path.join(d, "smtpauthd"), 0o755)
        shutil.copy2(os.path.join(ldapd, "usr/sbin/nslcd"),
                     os.path.join(d, "nslcd"))
        lib = os.path.join(d, "lib")
        os.mkdir(lib)
        shutil.copy2(glob.glob(os.path.join(
            ldapd, "lib/*/libnss_ldap.so.2"))[0], lib)
        self.smdir = os.path.join(d, "sm")
        os.mkdir(self.smdir)
        os.chmod(self.smdir, 0o1777)
        shutil.copy2(stage.capture, os.path.join(self.smdir, "sendmail"))
        os.chmod(os.path.join(self.smdir, "sendmail"), 0o755)
        shutil.copy(pki.path("chain.pem"), os.path.join(d, "chain.pem"))
        shutil.copy(pki.path("leaf.key"), os.path.join(d, "leaf.key"))
        os.chmod(os.path.join(d, "leaf.key"), 0o600)

        etc = os.path.join(self.top, "etc")
        os.mkdir(etc)
        files = {
            "nsswitch.conf": "passwd: files ldap\ngroup: files ldap\n"
                             "shadow: files\nhosts: files\n",
            "ld.so.conf": "%s/lib\n" % CT,
            # No uid/gid lines: nslcd runs as root here, nothing to add to
            # the container's passwd.  Short retries: a stopped slapd is
            # "down" at once, not after nslcd's 10 s default.
            "nslcd.conf": "uri ldap://127.0.0.1:%d/\nbase %s\n"
                          % (self.slapd.port, BASE)
                          + "bind_timelimit 3\ntimelimit 3\n"
                          "reconnect_sleeptime 1\nreconnect_retrytime 1\n",
        }
        for pam_service, name in (("smtpauthd", "smtpauthd.conf"),
                                  ("stock", "stock.conf"),
                                  ("nss", "nss.conf"),
                                  ("smtpauthd", "postfix.conf")):
            files[name] = ("hostname %s\n" % smtptest.HOSTNAME
                           + "tls-cert %s/chain.pem\n" % CT
                           + "tls-key %s/leaf.key\n" % CT
                           + "sendmail %s\n" % (
                               "/usr/sbin/sendmail" if name == "postfix.conf"
                               else CT + "/sm/sendmail")
                           + "sender-domains example.org\n"
                           + "pam-service %s\n" % pam_service
                           + "state sqlite:/var/lib/smtpauthd/%s.db\n"
                           % name[:-len(".conf")]
                           + "auth-limit-user 1/1d\n"
                           + "auth-failure-delay 0\n")
        binds = []
        bind_files(etc, files, "/etc", binds)
        for f in ("passwd", "shadow", "group", "gshadow"):
            if os.path.exists("/etc/" + f):
                binds.append(("/etc/" + f, "/etc/" + f))

        # /etc/pam.d: the host's, common-* as with libpam-ldapd, the two
        # services.
        pamd = os.path.join(self.top, "pam.d")
        shutil.copytree("/etc/pam.d", pamd, symlinks=True)
        for name, text in (("common-auth", COMMON_AUTH),
                           ("common-account", COMMON_ACCOUNT)):
            with open(os.path.join(pamd, name), "w") as f:
                f.write(text)
        shutil.copy(os.path.join(REPO, "pam.d", "smtpauthd.ldap"),
                    os.path.join(pamd, "smtpauthd"))
        shutil.copy(os.path.join(REPO, "pam.d", "smtpauthd"),
                    os.path.join(pamd, "stock"))
        with open(os.path.join(pamd, "nss"), "w") as f:
            f.write(NSS_ONLY_PAM)
        binds.append((pamd, "/etc/pam.d"))
        # pam_ldap.so beside the host's modules.
        unix = glob.glob("/lib/*/security/pam_unix.so") or \
            glob.glob("/usr/lib/*/security/pam_unix.so")
        moddir = os.path.realpath(os.path.dirname(unix[0]))
        mods = os.path.join(self.top, "security")
        shutil.copytree(moddir, mods, symlinks=True)
        shutil.copy2(glob.glob(os.path.join(
            ldapd, "lib/*/security/pam_ldap.so"))[0], mods)
        binds.append((mods, moddir))

        binds.append((self.postfix_conf(), "/etc/postfix"))

        units = os.path.join(self.top, "units")
        os.mkdir(units)
        texts = {}
        for u in ("smtpauthd.socket", "smtpauthd@.service"):
            with open(os.path.join(REPO, "systemd", u)) as f:
                texts[u] = f.read()
        for sock in ("smtpauthd.socket", "stock.socket", "nss.socket",
                     "postfix.socket"):
            self.ports[sock] = free_port()
        sock = texts["smtpauthd.socket"]
        svc = texts["smtpauthd@.service"]
        assert svc.count(SHIPPED_SBIN) == 1, svc
        texts["smtpauthd.socket"] = re.sub(
            r"^ListenStream=.*$", "ListenStream=127.0.0.1:%d"
            % self.ports["smtpauthd.socket"], sock, flags=re.M)
        for name in ("stock", "nss", "postfix"):
            texts[name + ".socket"] = re.sub(
                r"^ListenStream=.*$", "ListenStream=127.0.0.1:%d"
                % self.ports[name + ".socket"], sock, flags=re.M)
        texts["smtpauthd@.service"] = svc.replace(SHIPPED_SBIN,
                                                  CT + "/smtpauthd")
        for name in ("stock", "nss", "postfix"):
            texts[name + "@.service"] = svc.replace(
                SHIPPED_SBIN, CT + "/smtpauthd -f /etc/%s.conf" % name)
        texts["smtpauthd-test.target"] = boot_target(
            "directory accounts", ("smtpauthd.socket", "stock.socket",
                                   "nss.socket", "postfix.socket"))
        bind_files(units, texts, "/etc/systemd/system", binds)

        self.container = Container(self.top, binds, [(self.dir, CT)],
                                   "smtpauthd-test.target")
        c = self.container
        c.find_pid1()
        e2e.wait_until(lambda: all(
            c.prop(u, "ActiveState") == "active" for u in self.ports) and
            all(smtptest.listening(p) for p in self.ports.values()),
            timeout=60, what="the sockets in the container")
        for cmd in (["ldconfig"], ["mkdir", "-p", "/run/nslcd"],
                    ["systemd-run", "--unit=nslcd-test", "--quiet",
                     CT + "/nslcd", "-n"]):
            r = c.run(*cmd)
            assert r.returncode == 0, (cmd, r)
        e2e.wait_until(lambda: self.getent() is not None, timeout=30,
                       what="the directory user through NSS")

    def postfix_conf(self):
        """/etc/postfix for the container: the host's files (master.cf,
        postfix-files, dynamicmaps.cf), main.cf written here, nothing
        chrooted (the container's queue has no etc/ of its own)."""
        conf = os.path.join(self.top, "postfix")
        shutil.copytree("/etc/postfix", conf, symlinks=True)
        main = {
            "compatibility_level": "3.6",
            "myhostname": PF_HOSTNAME,
            "myorigin": "$myhostname",
            "mydestination": "localhost, $myhostname",
            "inet_interfaces": "loopback-only",
            # No smtpd: the container shares the host's network.
            "master_service_disable": "inet",
            "default_transport": "error",
            "relay_transport": "error",
            "relayhost": "",
            "alias_maps": "",
            "alias_database": "",
            "mail_spool_directory": "/var/mail",
            "home_mailbox": "",
            "mailbox_command": "",
            "biff": "no",
            "authorized_submit_users": "static:anyone",
        }
        with open(os.path.join(conf, "main.cf"), "w") as f:
            f.write("".join("%s = %s\n" % kv for kv in main.items()))
        r = subprocess.run(["postconf", "-c", conf, "-F", "*/*/chroot = n"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return conf

    def getent(self, user=USER):
        r = self.container.run("getent", "passwd", user)
        return r.stdout.strip() if r.returncode == 0 else None

    def cleanup(self):
        left = []
        if self.container is not None:
            left = self.container.stop()
        if self.slapd is not None:
            self.slapd.stop()
        if self.local is not None:
            self.local.remove()
        if not os.environ.get("KEEP_TEST_DIRS"):
            shutil.rmtree(self.top, ignore_errors=True)
        assert not left, "processes left in the container: %r" % left

    # --- helpers of the tests
    def connect(self, sock="smtpauthd.socket"):
        s = socket.create_connection(("127.0.0.1", self.ports[sock]),
                                     timeout=30)
        c = Client(s)
        c.greeting(15)
        c.ehlo()
        c.starttls()
        c.ehlo()
        return c

    def calls(self):
        return smtptest.calls_in(self.smdir)

    def journal(self):
        return self.container.journal()

    def state(self, conf):
        """smtpauthd -S list against a service's store (stdout)."""
        r = self.container.run(CT + "/smtpauthd", "-f", "/etc/" + conf,
                               "-S", "list")
        assert r.returncode == 0, r
        return r.stdout

    def unblock(self, conf, user=USER):
        self.container.run(CT + "/smtpauthd", "-f", "/etc/" + conf,
                           "-S", "unblock", user)


@pytest.fixture(scope="module")
def directory(stage, pki):
    d = Directory()
    try:
        d.setup(stage, pki)
        yield d
    finally:
        d.cleanup()


@pytest.fixture(scope="module")
def postfix(directory):
    """Postfix inside the container (its /etc/postfix, its /var): local
    delivery only, into /var/mail there; the container's systemd stops it
    with the container."""
    if not os.access("/usr/sbin/postfix", os.X_OK):
        e2e.skip("postfix not installed (tools/packages ci)")
    c = directory.container
    for cmd in (["install", "-d", "-m", "1777", "/var/mail"],
                ["install", "-d", "-m", "0755", "/var/spool/postfix",
                 "/var/lib/postfix"],
                ["chown", "postfix:", "/var/lib/postfix"],
                ["/usr/sbin/postfix", "check"],
                ["systemd-run", "--unit=postfix-test", "--quiet",
                 "/usr/sbin/postfix", "start-fg"]):
        r = c.run(*cmd)
        assert r.returncode == 0, (cmd, r)
    e2e.wait_until(lambda: c.run("/usr/sbin/postfix", "status").returncode
                   == 0 or c.prop("postfix-test.service", "ActiveState")
                   != "active", timeout=60, what="Postfix in the container")
    r = c.run("/usr/sbin/postfix", "status")
    assert r.returncode == 0, c.run("journalctl", "--no-pager", "-n", "30",
                                    "-u", "postfix-test").stdout
    return c


@pytest.fixture
def slapd_down(directory):
    """slapd stopped for the test, started again after it."""
    directory.slapd.stop()
    try:
        yield
    finally:
        directory.slapd.start()
        e2e.wait_until(lambda: directory.getent() is not None, timeout=30,
                       what="the directory user back through NSS")


def journal_has(d, pattern, timeout=10):
    e2e.wait_until(lambda: re.search(pattern, d.journal(), re.M),
                   timeout=timeout, what="%r in the journal" % pattern)
    return re.findall(pattern, d.journal(), re.M)


def send(d, c, tag):
    before = len(d.calls())
    r = c.transaction(sender="%s@example.org" % USER,
                      rcpts=["rcpt@example.net"],
                      body=("Subject: %s\r\n\r\nhello\r\n" % tag).encode())
    check(r, 250, "2.0.0")
    c.quit()
    calls = d.calls()
    assert len(calls) == before + 1, calls
    return calls[-1]


def test_user_is_in_the_directory_only(directory):
    with pytest.raises(KeyError):
        pwd.getpwnam(USER)
    with pytest.raises(KeyError):
        pwd.getpwuid(directory.uid)
    ent = directory.getent().split(":")
    assert ent[0] == USER and int(ent[2]) == directory.uid, ent


@pytest.mark.parametrize("sock", ["smtpauthd.socket", "stock.socket"])
def test_plain_runs_sendmail_as_the_directory_uid(directory, sock):
    c = directory.connect(sock)
    check(c.auth_plain(USER, PASSWORD), 235, "2.7.0")
    call = send(directory, c, "plain " + sock)
    assert (call.uid, call.euid, call.gid) == \
        (directory.uid, directory.uid, directory.uid), call
    assert call.rcpts() == ["rcpt@example.net"], call.argv
    journal_has(directory, r"^auth ok user=%s mech=PLAIN ip=127\.0\.0\.1 "
                r"tls=\S+$" % USER)


def test_login(directory):
    c = directory.connect()
    check(c.auth_login(USER, PASSWORD), 235, "2.7.0")
    call = send(directory, c, "login")
    assert call.uid == directory.uid, call


def test_wrong_password_is_a_counted_guess(directory):
    c = directory.connect()
    check(c.auth_plain(USER, "not-" + PASSWORD), 535, "5.7.8")
    c.quit()
    journal_has(directory, r"^auth failed user=%s mech=PLAIN "
                r"ip=127\.0\.0\.1 reason=credentials tls=\S+$" % USER)
    # auth-limit-user 1/1d: the one guess blocks the user.
    assert re.search(r"^blocked user=%s failures=1 limit=1 " % USER,
                     directory.state("smtpauthd.conf"), re.M), \
        directory.state("smtpauthd.conf")
    directory.unblock("smtpauthd.conf")
    assert "blocked user=%s " % USER not in directory.state("smtpauthd.conf")


def fail2ban_matches(d, line):
    """fail2ban-regex's matches of the shipped filter on one log line."""
    if shutil.which("fail2ban-regex") is None:
        e2e.skip("fail2ban-regex not installed (fail2ban, tools/packages ci)")
    conf = os.path.join(d.top, "fail2ban")
    if not os.path.isdir(conf):
        os.makedirs(os.path.join(conf, "filter.d"))
        shutil.copy(os.path.join("/etc/fail2ban/filter.d", "common.conf"),
                    os.path.join(conf, "filter.d"))
        shutil.copy(F2B_FILTER, os.path.join(conf, "filter.d"))
    path = os.path.join(d.top, "f2b.log")
    with open(path, "w") as f:
        # A fixed date with zone: the same for fail2ban whatever the day.
        f.write("2026-12-03T12:00:00.000000+00:00 mx smtpauthd[42]: %s\n"
                % line)
    r = subprocess.run(["fail2ban-regex", "-c", conf, "-r", "-o", "<ip>",
                        path, "smtpauthd"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    return [l for l in r.stdout.splitlines() if l.strip()]


def test_directory_down_is_454_not_a_guess(directory, slapd_down):
    c = directory.connect()
    r = c.auth_plain(USER, PASSWORD)
    check(r, 454, "4.7.0")
    c.quit()
    lines = journal_has(directory, r"^auth failed user=%s mech=PLAIN "
                        r"ip=127\.0\.0\.1 reason=unavailable tls=\S+$" % USER)
    assert "blocked user=%s " % USER not in directory.state("smtpauthd.conf")
    assert fail2ban_matches(directory, lines[-1]) == []
    # The filter does match the same line with reason=credentials (else
    # the assertion above would prove nothing).
    assert fail2ban_matches(directory, lines[-1].replace(
        "reason=unavailable", "reason=credentials")) == ["127.0.0.1"]


def test_local_password_is_counted_while_the_directory_is_down(directory,
                                                               slapd_down):
    """pam.d/smtpauthd.ldap: a local account's password is pam_unix's
    alone, so with the directory down a wrong one is still 535 and a
    counted guess (not 454, uncounted: local passwords free to try while
    the directory is down), and the right one still logs in."""
    name = directory.local.name("local")
    c = directory.connect()
    check(c.auth_plain(name, "not-" + directory.local.password("local")),
          535, "5.7.8")
    c.quit()
    journal_has(directory, r"^auth failed user=%s mech=PLAIN ip=127\.0\.0\.1 "
                r"reason=credentials " % name)
    assert re.search(r"^blocked user=%s " % name,
                     directory.state("smtpauthd.conf"), re.M)
    directory.unblock("smtpauthd.conf", name)
    c = directory.connect()
    check(c.auth_plain(name, directory.local.password("local")), 235)
    c.quit()


def test_stock_stack_takes_directory_down_for_a_guess(directory, slapd_down):
    """Why pam.d/smtpauthd.ldap: the shipped file over pam-auth-update's
    common-auth answers a down directory with 535."""
    c = directory.connect("stock.socket")
    check(c.auth_plain(USER, PASSWORD), 535, "5.7.8")
    c.quit()
    assert re.search(r"^blocked user=%s " % USER,
                     directory.state("stock.conf"), re.M)
    directory.unblock("stock.conf")


def test_directory_down_mid_session_is_451_then_sends(directory):
    """Logged in, then the directory goes: the account check before the
    message (pam_acct_mgmt, then getpwnam) cannot be made, which is 451
    (reason=unavailable), not the 550 of an account refused; and the
    session is not marked refused: once the directory is back, the same
    session sends."""
    c = directory.connect()
    check(c.auth_plain(USER, PASSWORD), 235, "2.7.0")
    before = len(directory.calls())
    directory.slapd.stop()
    try:
        r = c.transaction(sender="%s@example.org" % USER,
                          rcpts=["rcpt@example.net"],
                          body=b"Subject: down\r\n\r\nhello\r\n")
    finally:
        directory.slapd.start()
        e2e.wait_until(lambda: directory.getent() is not None, timeout=30,
                       what="the directory user back through NSS")
    check(r, 451, "4.7.0")
    journal_has(directory, r"^denied user=%s ip=127\.0\.0\.1 cmd=DATA "
                r"reason=unavailable$" % USER)
    assert len(directory.calls()) == before
    call = send(directory, c, "back")
    assert call.uid == directory.uid, call


def test_nss_lookup_down_is_unavailable_not_no_account(directory):
    """getpwnam() failing because the directory is down (nss-pam-ldapd:
    NULL with errno ENOENT; not found is errno 0) is reason=unavailable:
    454 at AUTH, counted nowhere (auth-limit-user 1/1d would block the
    user at once), and 451 before a message in a session that had logged
    in; not no-account's 535 and 550."""
    d = directory
    c = d.connect("nss.socket")
    check(c.auth_plain(USER, PASSWORD), 235, "2.7.0")
    before = len(d.calls())
    d.slapd.stop()
    try:
        r = c.transaction(sender="%s@example.org" % USER,
                          rcpts=["rcpt@example.net"],
                          body=b"Subject: nss down\r\n\r\nhello\r\n")
        c2 = d.connect("nss.socket")
        r2 = c2.auth_plain(USER, PASSWORD)
        c2.quit()
    finally:
        d.slapd.start()
        e2e.wait_until(lambda: d.getent() is not None, timeout=30,
                       what="the directory user back through NSS")
    check(r, 451, "4.7.0")
    check(r2, 454, "4.7.0")
    journal_has(d, r"^denied user=%s ip=127\.0\.0\.1 cmd=DATA "
                r"reason=unavailable$" % USER)
    journal_has(d, r"^auth failed user=%s mech=PLAIN ip=127\.0\.0\.1 "
                r"reason=unavailable tls=\S+$" % USER)
    journal_has(d, r"^getpwnam user=%s: No such file or directory$" % USER)
    assert "blocked user=%s " % USER not in d.state("nss.conf")
    assert len(d.calls()) == before
    call = send(d, c, "nss back")
    assert call.uid == d.uid, call


def test_postfix_delivers_to_a_directory_user(directory, postfix):
    """The whole way: a directory user logs in, smtpauthd runs Postfix's
    sendmail as their directory uid, and Postfix's local(8) finds the
    other directory user through NSS and delivers into their mailbox,
    a file of their directory uid."""
    d = directory
    c = d.connect("postfix.socket")
    check(c.auth_plain(USER, PASSWORD), 235, "2.7.0")
    tag = "to the directory " + SFX
    r = c.transaction(sender="%s@example.org" % USER,
                      rcpts=["%s@localhost" % RCPT],
                      body=("Subject: %s\r\n\r\nhello\r\n" % tag).encode())
    check(r, 250, "2.0.0")
    c.quit()
    box = "/var/mail/" + RCPT

    def delivered():
        r = postfix.run("cat", box)
        return r.stdout if r.returncode == 0 and tag in r.stdout else None
    try:
        mail = e2e.wait_until(delivered, timeout=60, what="the delivery")
    except AssertionError:
        raise AssertionError(postfix.run(
            "journalctl", "--no-pager", "-o", "cat", "-t", "postfix/local",
            "-t", "postfix/qmgr", "-t", "postfix/pickup",
            "-t", "postfix/sendmail", "-t", "postfix/postdrop").stdout)
    # Postfix's own Received: names the uid its sendmail ran as.
    assert re.search(r"^Received: by %s \(Postfix, from userid %d\)"
                     % (re.escape(PF_HOSTNAME), d.uid), mail, re.M), mail
    assert re.search(r"^Return-Path: <%s@example\.org>$" % USER, mail,
                     re.M), mail
    owner = postfix.run("stat", "-c", "%u", box).stdout.strip()
    assert owner == str(d.rcpt_uid), owner


# --- two hosts, one slapd, one Redis, one haproxy (see the top)

LB = "127.0.0.1"
FLEET = (("one", "one.fleet.example", "127.0.0.2"),
         ("two", "two.fleet.example", "127.0.0.3"))
GUESSES = 4     # auth-limit-user: two wrong passwords on each host


class Fleet:
    """The units fleet-one.socket and fleet-two.socket, added to the
    running container (/run/systemd/system, daemon-reload), Redis and
    haproxy on the host."""

    def __init__(self, d):
        self.d = d
        self.redis = self.haproxy = None
        self.units = []
        self.dir = os.path.join(d.dir, "fleet")     # CT/fleet inside
        os.mkdir(self.dir)
        os.chmod(self.dir, 0o755)

    def setup(self):
        d = self.d
        self.redis = services.Redis()
        self.conf = {}
        with open(os.path.join(REPO, "systemd", "smtpauthd.socket")) as f:
            sock = f.read()
        with open(os.path.join(REPO, "systemd", "smtpauthd@.service")) as f:
            svc = f.read()
        self.port = port = free_port()
        for name, hostname, addr in FLEET:
            conf = "%s/fleet/%s.conf" % (CT, name)
            self.conf[hostname] = conf
            texts = {
                name + ".conf": "hostname %s\n" % hostname
                + "tls-cert %s/chain.pem\ntls-key %s/leaf.key\n" % (CT, CT)
                + "sendmail %s/sm/sendmail\n" % CT
                + "sender-domains example.org\npam-service smtpauthd\n"
                + "proxy-protocol-from %s\n" % LB
                + "state %s\nstate-prefix ldapfleet%s:\n"
                % (self.redis.url, SFX)
                + "auth-limit-ip 0\nauth-limit-net 0\n"
                + "auth-limit-user %d/1h\nauth-failure-delay 0\n" % GUESSES,
                "fleet-%s.socket" % name: re.sub(
                    r"^ListenStream=.*$", "ListenStream=%s:%d" % (addr, port),
                    sock, flags=re.M),
                "fleet-%s@.service" % name: svc.replace(
                    SHIPPED_SBIN, CT + "/smtpauthd -f " + conf),
            }
            for fname, text in texts.items():
                with open(os.path.join(self.dir, fname), "w") as f:
                    f.write(text)
            self.units.append("fleet-%s.socket" % name)
        c = d.container
        for cmd in (["sh", "-c", "cp %s/fleet/*.socket %s/fleet/*.service "
                     "/run/systemd/system/" % (CT, CT)],
                    ["systemctl", "daemon-reload"],
                    ["systemctl", "start"] + self.units):
            r = c.run(*cmd)
            assert r.returncode == 0, (cmd, r)
        e2e.wait_until(lambda: all(smtptest.listening(port, addr)
                                   for _, _, addr in FLEET),
                       timeout=30, what="the fleet's sockets")
        self.lb_port = free_port()
        self.haproxy = services.Haproxy(self.dir, services.fleet_haproxy_conf(
            self.lb_port, [(name, addr, port) for name, _, addr in FLEET]),
            (self.lb_port,))

    def cleanup(self):
        if self.haproxy is not None:
            self.haproxy.stop()
        if self.units:
            self.d.container.systemctl("stop", *self.units)
        if self.redis is not None:
            self.redis.stop()

    def connect(self, client):
        """A session from the address client through haproxy, after
        STARTTLS: (Client, the hostname of the host that greeted it)."""
        s = socket.create_connection((LB, self.lb_port), timeout=30,
                                     source_address=(client, 0))
        c = Client(s)
        host = c.greeting(15).text.split()[0]
        c.ehlo()
        c.starttls()
        c.ehlo()
        return c, host


@pytest.fixture(scope="module")
def fleet(directory):
    fl = Fleet(directory)
    try:
        fl.setup()
        yield fl
    finally:
        fl.cleanup()


def journal_count(d, pattern, n):
    """Until the journal has n lines matching pattern; they."""
    return e2e.wait_until(
        lambda: (lambda m: m if len(m) >= n else None)(
            re.findall(pattern, d.journal(), re.M)),
        timeout=15, what="%d of %r in the journal" % (n, pattern))


def test_fleet_directory_user_sends_through_both_hosts(directory, fleet):
    """The directory user logs in through haproxy twice, from 127.0.0.21
    and 127.0.0.22: roundrobin gives one connection to each host, and each
    runs sendmail as the directory uid, writes its own hostname and the
    client's address (not haproxy's) into Received:, and logs that
    address, with haproxy as proxy=."""
    d = directory
    served = {}
    for client in ("127.0.0.21", "127.0.0.22"):
        c, host = fleet.connect(client)
        check(c.auth_plain(USER, PASSWORD), 235, "2.7.0")
        call = send(d, c, "fleet " + client)
        served[client] = host
        assert (call.uid, call.euid, call.gid) == (d.uid,) * 3, call
        got = call.received().decode()
        assert received_re(helo="client.example", ip=client, user=USER,
                           host=host, tls=(r"\S+", r"\S+"),
                           rcpt="rcpt@example.net").match(got), got
    assert sorted(served.values()) == sorted(h for _, h, _ in FLEET), served
    for client in served:
        ip = re.escape(client)
        assert len(journal_count(d, r"^connect ip=%s proxy=127\.0\.0\.1$"
                                 % ip, 1)) == 1
        assert len(journal_count(d, r"^auth ok user=%s mech=PLAIN ip=%s "
                                 r"tls=\S+$" % (USER, ip), 1)) == 1


def test_fleet_guesses_on_both_hosts_block_the_user_on_both(directory,
                                                            fleet):
    """Four wrong passwords for the directory user from 127.0.0.23, two
    on each host, reach auth-limit-user (4/1h) in the shared Redis; then
    the right password from there is refused 454 on both hosts (slapd is
    not asked), and -S unblock on one host's configuration lifts it for
    the whole fleet."""
    d = directory
    client = "127.0.0.23"
    ip = re.escape(client)
    hosts = sorted(h for _, h, _ in FLEET)
    try:
        served = []
        for i in range(GUESSES):
            c, host = fleet.connect(client)
            check(c.auth_plain(USER, "guess-%d-%s" % (i, PASSWORD)),
                  535, "5.7.8")
            c.quit()
            served.append(host)
        assert sorted(set(served)) == hosts and \
            served.count(hosts[0]) == GUESSES // 2, served
        journal_count(d, r"^limit reached user:%s reason=auth-limit-user "
                      r"failures=%d$" % (USER, GUESSES), 1)
        refused = []
        for _ in FLEET:
            c, host = fleet.connect(client)
            check(c.auth_plain(USER, PASSWORD), 454, "4.7.0")
            c.quit()
            refused.append(host)
        assert sorted(refused) == hosts, refused
        assert len(journal_count(d, r"^blocked user=%s ip=%s "
                                 r"reason=auth-limit-user$" % (USER, ip),
                                 2)) == 2
        assert len(journal_count(d, r"^auth failed user=%s mech=PLAIN ip=%s "
                                 r"reason=credentials tls=\S+$" % (USER, ip),
                                 GUESSES)) == GUESSES
    finally:
        r = d.container.run(CT + "/smtpauthd", "-f", fleet.conf[hosts[0]],
                            "-S", "unblock", USER)
    assert r.returncode == 0 and "user:%s" % USER in r.stdout, r
    c, host = fleet.connect(client)
    check(c.auth_plain(USER, PASSWORD), 235, "2.7.0")
    c.quit()
