"""smtptest - the shared helpers of the protocol/integration tests.

They drive the real smtpauthd binary (env SMTPAUTHD, default ../smtpauthd):
over a socketpair (stdin = stdout = one end, stderr captured as the log,
REMOTE_ADDR=192.0.2.1 so that the peer fallback is exercised) and over TCP
through systemd-socket-activate.  sendmail is tests/capture-sendmail, copied
into each test's directory; what it records is read back with Env.calls().

When the tests run as root, the "ordinary" tests run smtpauthd as the
unprivileged user nobody (so that no user switch happens and users of the
password file or of pam_matrix need no Unix account); test_root.py runs it
as root against real accounts.
"""

import base64
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import warnings

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
BINARY = os.path.abspath(os.environ.get("SMTPAUTHD")
                         or os.path.join(REPO, "smtpauthd"))
CAPTURE_SRC = os.path.join(TESTS, "capture-sendmail.c")
CAPTURE_BIN = os.path.join(TESTS, "capture-sendmail")
COUNTER_SRC = os.path.join(TESTS, "pam_counter.c")
COUNTER_SO = os.path.join(TESTS, "pam_counter.so")

IS_ROOT = os.geteuid() == 0
HOSTNAME = "test.example"
PEER = "192.0.2.1"

# Who runs smtpauthd in the ordinary tests.
if IS_ROOT:
    try:
        _nobody = pwd.getpwnam("nobody")
        RUN_UID, RUN_GID = _nobody.pw_uid, _nobody.pw_gid
    except KeyError:
        RUN_UID, RUN_GID = 65534, 65534
else:
    RUN_UID, RUN_GID = os.getuid(), os.getgid()

try:
    _pw = pwd.getpwuid(RUN_UID)
    RUN_NAME, RUN_HOME = _pw.pw_name, _pw.pw_dir
except KeyError:
    RUN_NAME, RUN_HOME = None, None

SAN_PATTERNS = (b"AddressSanitizer", b"LeakSanitizer", b"runtime error:",
                b"UndefinedBehaviorSanitizer", b"MemorySanitizer")

USERS = {
    "alice": "Alice-Pw-1",
    "bob": "b0b pass w\u00f6rd:with colon",
}
PAM_USERS = {
    "alice": "Alice-Pw-1",
    "bob": "Bob-Pw-2",
}
SECRET_MARK = "Sekr1t-Never-Logged"


def find_one(patterns):
    for p in patterns:
        hits = sorted(glob.glob(p))
        if hits:
            return hits[0]
    return None


PAM_MATRIX = find_one(["/usr/lib/x86_64-linux-gnu/pam_wrapper/pam_matrix.so",
                       "/usr/lib/*/pam_wrapper/pam_matrix.so",
                       "/usr/lib*/pam_wrapper/pam_matrix.so"])
LIBPAM_WRAPPER = find_one(["/usr/lib/x86_64-linux-gnu/libpam_wrapper.so",
                           "/usr/lib/*/libpam_wrapper.so",
                           "/usr/lib/*/libpam_wrapper.so.0",
                           "/usr/lib*/libpam_wrapper.so*"])
# Debian's libpam-modules: a real module that runs a program.
PAM_EXEC = find_one(["/lib/x86_64-linux-gnu/security/pam_exec.so",
                     "/usr/lib/x86_64-linux-gnu/security/pam_exec.so",
                     "/lib/*/security/pam_exec.so",
                     "/usr/lib*/security/pam_exec.so"])


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def plain_blob(user, password, authzid=""):
    def enc(x):
        return x.encode() if isinstance(x, str) else x
    return b64(enc(authzid) + b"\0" + enc(user) + b"\0" + enc(password))


def to_bytes(x):
    return x.encode("utf-8") if isinstance(x, str) else x


# --------------------------------------------------------------------------
# building the helpers when the Makefile has not (yet)

def ensure_helpers():
    """Build tests/capture-sendmail and tests/pam_counter.so if missing or
    older than their source.  Returns an error string or None."""
    jobs = [
        (CAPTURE_BIN, CAPTURE_SRC,
         ["cc", "-std=c11", "-O2", "-o", CAPTURE_BIN, CAPTURE_SRC]),
        (COUNTER_SO, COUNTER_SRC,
         ["cc", "-std=c11", "-O2", "-shared", "-fPIC", "-o", COUNTER_SO,
          COUNTER_SRC, "-lpam"]),
    ]
    for out, src, cmd in jobs:
        if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(src):
            continue
        try:
            r = subprocess.run(cmd, capture_output=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            return "cannot build %s: %s" % (out, e)
        if r.returncode != 0:
            return "cannot build %s: %s" % (out, r.stderr.decode(errors="replace"))
    return None


# --------------------------------------------------------------------------
# the session-wide staging directory

class Stage:
    """A world-traversable directory holding copies of the binary and the
    helpers, so that smtpauthd running as nobody can use them wherever the
    repository is checked out."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="smtpauthd-tests.")
        os.chmod(self.dir, 0o755)
        self.binary = os.path.join(self.dir, os.path.basename(BINARY))
        shutil.copy2(BINARY, self.binary)
        os.chmod(self.binary, 0o755)
        self.capture = os.path.join(self.dir, "capture-sendmail")
        shutil.copy2(CAPTURE_BIN, self.capture)
        os.chmod(self.capture, 0o755)
        self.counter = os.path.join(self.dir, "pam_counter.so")
        shutil.copy2(COUNTER_SO, self.counter)
        os.chmod(self.counter, 0o755)
        self._hashes = {}

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def base_environ(self):
        e = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS",
                  "ASAN_SYMBOLIZER_PATH"):
            if k in os.environ:
                e[k] = os.environ[k]
        return e

    def run(self, args, input=None, environ=None, timeout=30, as_root=False):
        """Run the binary to completion (for -t, -T, -V, -H)."""
        env = self.base_environ()
        if environ:
            env.update(environ)
        fix_asan(env)
        kw = {} if as_root or not IS_ROOT else drop_kwargs()
        return subprocess.run([self.binary] + list(args), input=input,
                              capture_output=True, env=env, timeout=timeout,
                              **kw)

    def hash(self, password):
        """The crypt(3) hash of password, made by `smtpauthd -H`."""
        if password not in self._hashes:
            r = self.run(["-H"], input=to_bytes(password) + b"\n")
            h = r.stdout.decode(errors="replace").strip()
            if r.returncode != 0 or not h.startswith("$"):
                # Fall back so that the rest of the suite still says
                # something; test_cli checks -H itself.
                import crypt  # noqa: deprecated, still in 3.11/3.12
                h = crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))
            self._hashes[password] = h
        return self._hashes[password]


def drop_kwargs():
    return {"user": RUN_UID, "group": RUN_GID, "extra_groups": []}


def fix_asan(env):
    """An ASan binary refuses to start when LD_PRELOAD puts another library
    first unless verify_asan_link_order=0."""
    if env.get("LD_PRELOAD"):
        opts = env.get("ASAN_OPTIONS", "")
        if "verify_asan_link_order" not in opts:
            env["ASAN_OPTIONS"] = (opts + ":" if opts else "") + \
                "verify_asan_link_order=0"
    return env


# --------------------------------------------------------------------------
# replies

class ConnectionClosed(Exception):
    pass


class Reply:
    def __init__(self, code, lines, raw):
        self.code = code
        self.lines = lines          # texts after "NNN-" / "NNN "
        self.raw = raw

    @property
    def text(self):
        return self.lines[-1] if self.lines else ""

    @property
    def enh(self):
        m = re.match(r"([245]\.\d{1,3}\.\d{1,3})(?:\s|$)", self.text)
        return m.group(1) if m else None

    def __repr__(self):
        return "Reply(%r)" % self.raw


def check(r, code, enh=None):
    """Assert that r is a reply with this code (and enhanced code)."""
    assert isinstance(r, Reply), r
    assert r.code == code, "expected %s %s, got %r" % (code, enh or "", r)
    if enh is not None:
        assert r.enh == enh, "expected %s %s, got %r" % (code, enh, r)
    return r


# --------------------------------------------------------------------------
# a client connection (socketpair to a child, or TCP)

class Client:
    def __init__(self, sock, proc=None, logpath=None):
        self.sock = sock
        self.proc = proc
        self.logpath = logpath
        self.buf = b""
        self.eof = False
        self.server_ino = None      # socketpair: the server end's inode

    # --- low level
    def send(self, data):
        self.sock.sendall(to_bytes(data))

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no reply in time; have %r" % self.buf[:300])
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no reply in time; have %r" % self.buf[:300])
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            chunk = b""
        if not chunk:
            self.eof = True
            raise ConnectionClosed("connection closed; have %r" % self.buf[:300])
        self.buf += chunk

    def rawline(self, timeout=5):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if self.eof:
                raise ConnectionClosed("connection closed; have %r" % self.buf)
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"

    def reply(self, timeout=5):
        lines, raw = [], b""
        code = None
        while True:
            line = self.rawline(timeout)
            raw += line
            assert line.endswith(b"\r\n"), "reply line not ended by CRLF: %r" % raw
            m = re.match(rb"^([2-5][0-9][0-9])([ -])(.*)\r\n$", line, re.S)
            if not m:
                # also accept a bare "NNN\r\n"
                m2 = re.match(rb"^([2-5][0-9][0-9])\r\n$", line)
                assert m2, "malformed reply line %r" % raw
                c, sep, text = int(m2.group(1)), b" ", b""
            else:
                c, sep, text = int(m.group(1)), m.group(2), m.group(3)
            assert code is None or c == code, "code changed inside reply %r" % raw
            code = c
            lines.append(text.decode("utf-8", "replace"))
            if sep == b" ":
                return Reply(code, lines, raw)

    def replies(self, n, timeout=10):
        return [self.reply(timeout) for _ in range(n)]

    def cmd(self, line, timeout=5):
        self.send(to_bytes(line) + b"\r\n")
        return self.reply(timeout)

    def expect(self, line, code, enh=None, timeout=10):
        return check(self.cmd(line, timeout), code, enh)

    def closed(self, timeout=10):
        """True if the server closes the connection (reading and dropping
        whatever comes before), False if it stays open for timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if self.eof:
                return True
            try:
                self._fill(deadline)
            except ConnectionClosed:
                return True
            except TimeoutError:
                return False

    def pending(self, wait=0.3):
        """Whatever more the server sends within wait seconds."""
        deadline = time.monotonic() + wait
        try:
            while True:
                self._fill(deadline)
        except (TimeoutError, ConnectionClosed):
            pass
        data, self.buf = self.buf, b""
        return data

    # --- TLS
    def wrap_tls(self, ctx=None, server_hostname=None, timeout=10):
        """Run the TLS handshake on the connection (at once for implicit
        TLS, or after the 220 to STARTTLS) and carry on inside TLS.  Nothing
        may be buffered: it would be plaintext the server sent unasked."""
        assert self.buf == b"", "plaintext before the handshake: %r" % self.buf
        self.plain_sock = self.sock
        self.sock.settimeout(timeout)
        self.sock = (ctx or tls_client_context()).wrap_socket(
            self.sock, server_hostname=server_hostname)
        return self.sock

    def starttls(self, ctx=None, server_hostname=None):
        """STARTTLS, its 220 and the handshake."""
        check(self.cmd("STARTTLS"), 220, "2.0.0")
        return self.wrap_tls(ctx, server_hostname)

    # --- SMTP steps
    def greeting(self, timeout=10):
        return check(self.reply(timeout), 220)

    def ehlo(self, name="client.example"):
        return check(self.cmd("EHLO " + name), 250)

    def auth_plain(self, user, password, authzid="", ir=True):
        blob = plain_blob(user, password, authzid)
        if ir:
            return self.cmd("AUTH PLAIN " + blob, timeout=30)
        r = self.cmd("AUTH PLAIN")
        if r.code != 334:
            return r
        return self.cmd(blob, timeout=30)

    def auth_login(self, user, password, ir=False):
        if ir:
            r = self.cmd("AUTH LOGIN " + b64(to_bytes(user)))
        else:
            r = check(self.cmd("AUTH LOGIN"), 334)
            assert r.text == "VXNlcm5hbWU6", r
            r = self.cmd(b64(to_bytes(user)))
        if r.code != 334:
            return r
        assert r.text == "UGFzc3dvcmQ6", r
        return self.cmd(b64(to_bytes(password)), timeout=30)

    def login(self, user="alice", password=None, users=None):
        self.ehlo()
        if password is None:
            password = (users or USERS)[user]
        return check(self.auth_plain(user, password), 235, "2.7.0")

    def mail(self, sender, params=""):
        return self.cmd("MAIL FROM:<%s>%s" % (sender, (" " + params) if params else ""))

    def rcpt(self, rcpt, params=""):
        return self.cmd("RCPT TO:<%s>%s" % (rcpt, (" " + params) if params else ""))

    def data(self, body, timeout=30):
        """DATA, then body (bytes, sent as is) and the final ".\\r\\n"
        (body should end with CRLF); returns the end-of-data reply."""
        check(self.cmd("DATA"), 354)
        self.send(to_bytes(body) + b".\r\n")
        return self.reply(timeout)

    def transaction(self, sender="alice@example.org", rcpts=("rcpt@example.net",),
                    body=b"Subject: test\r\n\r\nhello\r\n", timeout=30):
        check(self.mail(sender), 250, "2.1.0")
        for r in rcpts:
            check(self.rcpt(r), 250, "2.1.5")
        return self.data(body, timeout)

    def quit(self):
        check(self.cmd("QUIT"), 221, "2.0.0")
        assert self.closed(10), "connection not closed after QUIT"

    def finish(self, timeout=15):
        """Close our end and wait for the server process; its exit status."""
        try:
            self.sock.close()
        except OSError:
            pass
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("smtpauthd did not exit after the client closed")

    def wait_exit(self, timeout=15):
        """Wait for the server process to exit by itself (socket kept)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("smtpauthd still running")

    @property
    def log(self):
        return read_log(self.logpath)


def read_log(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return ""


LOG_PREFIX = re.compile(r"^smtpauthd(?:-asan)?\[(\d+)\]: (.*)$")


def log_events(text):
    """The event parts of the log lines ("connect ip=..." etc.)."""
    out = []
    for line in text.split("\n"):
        m = LOG_PREFIX.match(line)
        if m:
            out.append(m.group(2))
    return out


def find_events(text, verb):
    return [e for e in log_events(text) if e.split(" ", 1)[0] == verb]


def kv(event):
    """Parse key=value pairs of a log event (values may be "quoted")."""
    out = {}
    for m in re.finditer(r'(\S+?)=("(?:[^"\\]|\\.)*"|\S*)', event):
        v = m.group(2)
        if v.startswith('"') and v.endswith('"') and len(v) >= 2:
            v = v[1:-1]
        out[m.group(1)] = v
    return out


# --------------------------------------------------------------------------
# what reached sendmail

def calls_in(smdir):
    """The capture sendmail's runs recorded in smdir, in order."""
    out = []
    for n in os.listdir(smdir):
        if re.match(r"^call-\d+$", n):
            out.append(Call(os.path.join(smdir, n)))
    return sorted(out, key=lambda c: c.n)


class Call:
    def __init__(self, path):
        self.path = path
        self.n = int(path.rsplit("-", 1)[1])

        def rd(name, default=b""):
            try:
                with open(os.path.join(path, name), "rb") as f:
                    return f.read()
            except FileNotFoundError:
                return default
        self.rd = rd
        self.argv = [a.decode("utf-8", "surrogateescape")
                     for a in rd("argv").split(b"\0")[:-1]]
        self.envlist = [a.decode("utf-8", "surrogateescape")
                        for a in rd("env").split(b"\0")[:-1]]
        self.env = dict(e.split("=", 1) if "=" in e else (e, None)
                        for e in self.envlist)
        ids = rd("ids").decode().split("\n")
        if ids and ids[0]:
            self.uid, self.gid, self.euid, self.egid = map(int, ids[0].split())
            self.groups = sorted(int(g) for g in ids[1].split()) if len(ids) > 1 else []
        else:
            self.uid = self.gid = self.euid = self.egid = None
            self.groups = []
        self.fds = sorted(int(x) for x in rd("fds").split())
        self.fdinfo = {}
        for line in rd("fdinfo").decode("utf-8", "replace").splitlines():
            k, _, v = line.partition(" ")
            self.fdinfo[int(k)] = v
        self.cwd = rd("cwd").decode("utf-8", "replace")
        self.pgid = {k: int(v) for k, v in
                     (x.split("=") for x in rd("pgid").decode().split())}
        self.stat0 = dict(x.split("=", 1) for x in rd("stat0").decode().split())
        self.sigs = {}
        for line in rd("sigs").decode().splitlines():
            k, _, v = line.partition(":")
            self.sigs[k] = int(v.strip(), 16)
        self.message = rd("message")
        self.pid = int(rd("pid", b"0").strip() or 0)
        cp = rd("childpid").strip()
        self.childpid = int(cp) if cp else None
        self.done = rd("status").strip() == b"done"

    def rcpts(self):
        """The recipients after "--" (envelope mode)."""
        assert "--" in self.argv, self.argv
        return self.argv[self.argv.index("--") + 1:]

    def received(self):
        return split_received(self.message)[0]

    def body(self):
        """The message as it was given, without our Received: header."""
        return split_received(self.message)[1]

    def __repr__(self):
        return "Call(%d, argv=%r, message=%r)" % (self.n, self.argv, self.message[:200])


def split_received(message):
    """(the first header field when it is a Received:, the rest)."""
    assert message.startswith(b"Received:"), \
        "spool does not start with Received: %r" % message[:200]
    # Our header ends with the "; DATE" line after "(authenticated user U)"
    # (a message whose first line starts with white space would otherwise
    # look like a continuation of it).
    m = re.match(rb"Received: [^\n]*\n\tby [^\n]*\n(?:\t\(using [^\n]*\)\n)?"
                 rb"\t\(authenticated user [^\n]*\)"
                 rb"(?:\n\tfor <[^\n]*>)?; [^\n]*\n", message)
    if m:
        return message[:m.end()], message[m.end():]
    lines = message.split(b"\n")
    n = 1
    while n < len(lines) and lines[n][:1] in (b"\t", b" "):
        n += 1
    hdr = b"\n".join(lines[:n]) + b"\n"
    return hdr, message[len(hdr):]


# RFC 5322 3.3 date-time, the one matcher of every test that reads a date:
#   [ [FWS] day-name "," ] [FWS] 1*2DIGIT FWS month FWS 4*DIGIT FWS
#   2DIGIT ":" 2DIGIT [ ":" 2DIGIT ] FWS ("+" / "-") 4DIGIT [CFWS]
# FWS is white space that may fold (a line break before it): Postfix
# writes "Thu,  3 Dec 2026" (two spaces before a one-digit day), others
# "Thu, 3 Dec" or "Thu, 03 Dec".  The comment is one level deep (the
# "(UTC)" MTAs append), which is all that mail here carries.
FWS_RE = r"(?:[ \t]*\r?\n)?[ \t]+"
DATE_RE = (r"(?:(?:%(fws)s)?(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),)?"
           r"(?:%(fws)s)?\d{1,2}%(fws)s"
           r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)%(fws)s"
           r"\d{4,}%(fws)s"
           r"\d\d:\d\d(?::\d\d)?%(fws)s[+-]\d{4}"
           r"(?:%(fws)s\([^()\\\r\n]*\))?" % {"fws": FWS_RE})


def received_re(helo=r"[^\s()\\]+", ip=PEER, user="alice", rcpt=None,
                host=HOSTNAME, proto=None, tls=None):
    """The exact shape of our Received: header (spec, relay.c).  tls is
    None (plaintext: ESMTPA) or (version, cipher), regular expressions for
    the "(using VERSION with cipher CIPHER)" comment (ESMTPSA).  An IPv6 ip
    is written [IPv6:ip] (RFC 5321 4.1.3); the group ip is the address."""
    if proto is None:
        proto = "ESMTPA" if tls is None else "ESMTPSA"
    r = (r"Received: from (?P<helo>%s) \(\[%s(?P<ip>%s)\]\)\n"
         r"\tby %s \(smtpauthd\) with %s id (?P<id>[0-9A-Fa-f]{16})\n"
         % (helo, "IPv6:" if ":" in ip else "", re.escape(ip),
            re.escape(host), proto))
    if tls is not None:
        r += (r"\t\(using (?P<tls_version>%s) with cipher (?P<tls_cipher>%s)\)\n"
              % tls)
    r += r"\t\(authenticated user %s\)" % re.escape(user)
    if rcpt is None:
        r += r";"
    else:
        r += r"\n\tfor <%s>;" % re.escape(rcpt)
    r += r" (?P<date>%s)\n" % DATE_RE
    return re.compile(r + r"\Z")


QUEUED_RE = re.compile(r"^Ok: queued as ([0-9A-Fa-f]{16})$")


# --------------------------------------------------------------------------
# the per-test environment

class Env:
    def __init__(self, stage, users=None):
        self.stage = stage
        self.dir = tempfile.mkdtemp(prefix="t.", dir=stage.dir)
        os.chmod(self.dir, 0o755)
        self.smdir = os.path.join(self.dir, "sm")
        os.mkdir(self.smdir)
        os.chmod(self.smdir, 0o1777)
        self.sendmail = os.path.join(self.smdir, "sendmail")
        shutil.copy2(stage.capture, self.sendmail)
        os.chmod(self.sendmail, 0o755)
        self.spool = os.path.join(self.dir, "spool")
        os.mkdir(self.spool)
        os.chmod(self.spool, 0o700)
        self.chown(self.spool)
        self.users = dict(USERS if users is None else users)
        self.pam = None
        # Each test remembers across its connections in a store of its own.
        self.statedir = os.path.join(self.dir, "state")
        os.mkdir(self.statedir)
        os.chmod(self.statedir, 0o700)
        self.chown(self.statedir)
        self.statedb = os.path.join(self.statedir, "state.db")
        self.conf = {
            "hostname": HOSTNAME,
            "auth": "file",
            "passwd-file": os.path.join(self.dir, "passwd"),
            "auth-require-tls": "no",
            "auth-failure-delay": "0",
            "sendmail": self.sendmail,
            "spool-dir": self.spool,
            "privsep-user": "nobody",
            "timeout": "30",
            "data-timeout": "30",
            "sendmail-timeout": "30",
            "state": "sqlite:" + self.statedb,
            # What a login may send is test_sender.py's and
            # test_sending.py's: elsewhere any sender, and no limits.
            "sender-policy": "any",
            "user-recipient-limit": "0",
            "user-message-limit": "0",
        }
        self.extra_environ = {"REMOTE_ADDR": PEER}
        self.clients = []
        self.servers = []
        self.logs = []
        self.nlog = 0

    # --- files
    def chown(self, path):
        if IS_ROOT:
            os.chown(path, RUN_UID, RUN_GID)

    def write(self, name, content, mode=0o644):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(to_bytes(content))
        os.chmod(path, mode)
        self.chown(path)
        return path

    def knob(self, name, value):
        """Set a behaviour knob of the capture sendmail."""
        path = os.path.join(self.smdir, name)
        with open(path, "w") as f:
            f.write("%s\n" % value)
        os.chmod(path, 0o644)

    def write_passwd(self, extra_lines=()):
        lines = ["%s:%s" % (u, self.stage.hash(p)) for u, p in self.users.items()]
        lines += list(extra_lines)
        return self.write("passwd", "\n".join(lines) + "\n", 0o600)

    def use_pam(self, users=None, auth_ret=None, acct_ret=None,
                service="smtpauthd-test", auth_args="", auth_before=()):
        """Authenticate through PAM: pam_wrapper + pam_counter + pam_matrix.
        auth_args: more arguments for pam_counter's auth line; auth_before:
        auth lines ("auth required /path/module.so args") before it."""
        if not (PAM_MATRIX and LIBPAM_WRAPPER):
            import pytest
            pytest.skip("pam_wrapper/pam_matrix not installed (libpam-wrapper)")
        users = dict(PAM_USERS if users is None else users)
        svcdir = os.path.join(self.dir, "pam.d")
        os.mkdir(svcdir)
        os.chmod(svcdir, 0o755)
        count = os.path.join(self.dir, "pam-count")
        passdb = os.path.join(self.dir, "passdb")
        with open(passdb, "w") as f:
            for u, p in users.items():
                f.write("%s:%s:%s\n" % (u, p, service))
        os.chmod(passdb, 0o600)
        self.chown(passdb)
        with open(count, "w"):
            pass
        os.chmod(count, 0o666)
        self.chown(count)
        a = " ret=%s" % auth_ret if auth_ret else ""
        a += " " + auth_args if auth_args else ""
        c = " ret=%s" % acct_ret if acct_ret else ""
        with open(os.path.join(svcdir, service), "w") as f:
            for line in auth_before:
                f.write(line + "\n")
            f.write("auth required %s file=%s%s\n" % (self.stage.counter, count, a))
            f.write("auth required %s passdb=%s\n" % (PAM_MATRIX, passdb))
            f.write("account required %s file=%s%s\n" % (self.stage.counter, count, c))
            f.write("account required %s passdb=%s\n" % (PAM_MATRIX, passdb))
        with open(os.path.join(svcdir, "other"), "w") as f:
            f.write("auth required pam_deny.so\naccount required pam_deny.so\n")
        for n in os.listdir(svcdir):
            os.chmod(os.path.join(svcdir, n), 0o644)
        self.pam = {"count": count, "users": users, "service": service}
        self.users = users
        self.conf["auth"] = "pam"
        self.conf["pam-service"] = service
        self.extra_environ.update({
            "LD_PRELOAD": LIBPAM_WRAPPER,
            "PAM_WRAPPER": "1",
            "PAM_WRAPPER_SERVICE_DIR": svcdir,
            # pam_wrapper dlopen()s libpam with RTLD_DEEPBIND, which the
            # sanitizer runtime refuses; libpam-wrapper 1.1.4 reads the
            # switch under the uid_wrapper name by mistake, so set both.
            "PAM_WRAPPER_DISABLE_DEEPBIND": "1",
            "UID_WRAPPER_DISABLE_DEEPBIND": "1",
        })

    def pam_lines(self, what="authenticate"):
        with open(self.pam["count"]) as f:
            return [l for l in f.read().splitlines() if l.split(" ", 1)[0] == what]

    def backend_calls(self):
        """How many times PAM's authenticate stack really ran."""
        assert self.pam, "backend_calls needs use_pam()"
        return len(self.pam_lines("authenticate"))

    def write_config(self, overrides=None, raw=None, name="smtpauthd.conf"):
        conf = dict(self.conf)
        for k, v in (overrides or {}).items():
            k = k.replace("_", "-")
            if v is None:
                conf.pop(k, None)
            else:
                conf[k] = str(v)
        if conf.get("auth") == "file" and conf.get("passwd-file") == \
                os.path.join(self.dir, "passwd") and \
                not os.path.exists(conf["passwd-file"]):
            self.write_passwd()
        text = "# smtpauthd test configuration\n"
        text += "".join("%s %s\n" % kv_ for kv_ in conf.items())
        if raw:
            text += raw
        return self.write(name, text)

    def newlog(self):
        self.nlog += 1
        path = os.path.join(self.dir, "log-%d" % self.nlog)
        self.logs.append(path)
        return path

    def environ(self, extra=None):
        e = self.stage.base_environ()
        e.update(self.extra_environ)
        if extra:
            e.update(extra)
        for k in [k for k, v in e.items() if v is None]:
            del e[k]
        return fix_asan(e)

    # --- running
    def start(self, conf=None, args=(), environ=None, greet=True, raw=None,
              config_path=None, as_root=False, popen=None, **kw):
        """Start one smtpauthd on a socketpair.  Keyword arguments are
        configuration keys (underscores for hyphens); popen, more arguments
        for subprocess.Popen (e.g. extra_groups)."""
        overrides = dict(conf or {})
        overrides.update(kw)
        path = config_path or self.write_config(overrides, raw)
        a, b = socket.socketpair()
        logpath = self.newlog()
        t_start = time.monotonic()
        with open(logpath, "wb") as logf:
            kwargs = {} if (as_root or not IS_ROOT) else drop_kwargs()
            kwargs.update(popen or {})
            proc = subprocess.Popen([self.stage.binary, "-d", "-f", path] + list(args),
                                    stdin=b, stdout=b, stderr=logf,
                                    env=self.environ(environ), close_fds=True,
                                    **kwargs)
        server_ino = os.fstat(b.fileno()).st_ino
        b.close()
        c = Client(a, proc, logpath)
        c.server_ino = server_ino   # the inode of smtpauthd's end
        c.t_start = t_start         # before the server was started
        self.clients.append(c)
        if greet:
            r = c.reply(15)
            assert r.code == 220, "greeting %r; log: %s" % (r, c.log)
            assert r.text.split()[0:2] == [HOSTNAME, "ESMTP"], r
        return c

    def session(self, user="alice", **kw):
        """start() + EHLO + AUTH PLAIN as user."""
        c = self.start(**kw)
        c.login(user, users=self.users)
        return c

    def run(self, args, input=None, environ=None, timeout=30, as_root=False):
        return self.stage.run(args, input=input,
                              environ=dict(self.environ(), **(environ or {})),
                              timeout=timeout, as_root=as_root)

    def calls(self):
        return calls_in(self.smdir)

    def one_call(self):
        calls = self.calls()
        assert len(calls) == 1, "expected one sendmail run, got %r" % calls
        return calls[0]

    def no_calls(self):
        calls = self.calls()
        assert calls == [], "sendmail ran: %r" % calls

    def tcp(self, conf=None, environ=None, **kw):
        overrides = dict(conf or {})
        overrides.update(kw)
        path = self.write_config(overrides)
        s = TcpServer(self, path, environ)
        self.servers.append(s)
        return s

    # --- teardown
    def cleanup(self):
        for c in self.clients:
            try:
                c.sock.close()
            except OSError:
                pass
            if c.proc and c.proc.poll() is None:
                try:
                    c.proc.wait(5)
                except subprocess.TimeoutExpired:
                    c.proc.kill()
                    c.proc.wait()
        for s in self.servers:
            s.stop()
        # hung fake sendmails
        for call in self.calls():
            for pid in (call.pid, call.childpid):
                if pid and process_alive(pid) and is_capture(pid, self.smdir):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass

    def sanitizer_reports(self):
        bad = []
        for p in self.logs:
            try:
                with open(p, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
            if any(pat in data for pat in SAN_PATTERNS):
                bad.append("%s:\n%s" % (p, data.decode("utf-8", "replace")[-6000:]))
        return bad


def process_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = st.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def process_exists(pid):
    return os.path.exists("/proc/%d" % pid)


def is_capture(pid, smdir):
    try:
        return os.readlink("/proc/%d/exe" % pid).startswith(smdir)
    except OSError:
        return False


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def listening(port, host="127.0.0.1"):
    want = "%08X:%04X" % (int.from_bytes(socket.inet_aton(host), "little"),
                          port)
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if parts[1] == want and parts[3] == "0A":
                    return True
    except OSError:
        pass
    return False


class TcpServer:
    """smtpauthd under systemd-socket-activate --inetd -a on 127.0.0.1: as
    nobody when the tests run as root, or with as_root the monitor as root,
    as the packaged socket unit runs it (the end-to-end tests)."""

    def __init__(self, env, confpath, environ=None, as_root=False,
                 host="127.0.0.1"):
        self.env = env
        self.host = host    # another loopback address: another "host"
        self.logpath = env.newlog()
        e = env.environ(environ)
        if as_root:
            e.pop("REMOTE_ADDR", None)      # the real peer is 127.0.0.1
        cmd = ["systemd-socket-activate"]
        for attempt in range(5):
            self.port = free_port()
            cmd = ["systemd-socket-activate", "-l", "%s:%d" % (host, self.port),
                   "--inetd", "-a"]
            for k, v in sorted(e.items()):
                cmd += ["-E", "%s=%s" % (k, v)]
            cmd += [env.stage.binary, "-d", "-f", confpath]
            with open(self.logpath, "ab") as logf:
                kw = drop_kwargs() if IS_ROOT and not as_root else {}
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL,
                                             stderr=logf, env=e,
                                             start_new_session=True, **kw)
            self.started()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if listening(self.port, host):
                    return
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
            self.stop()
        raise AssertionError("systemd-socket-activate did not listen: %s"
                             % read_log(self.logpath))

    def started(self):
        """Called as soon as the server process exists (for subclasses)."""

    @property
    def log(self):
        return read_log(self.logpath)

    def connect(self, greet=True):
        s = socket.create_connection((self.host, self.port), timeout=10)
        c = Client(s, None, self.logpath)
        self.env.clients.append(c)
        if greet:
            c.greeting(15)
        return c

    def wait_log(self, pattern, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.log, re.M):
                return True
            time.sleep(0.05)
        return False

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def timed(fn, *a, **kw):
    t = time.monotonic()
    r = fn(*a, **kw)
    return r, time.monotonic() - t


# --------------------------------------------------------------------------
# TLS: the client side, and test certificates made with openssl(1)

def tls_client_context(cafile=None, minimum=None, maximum=None, ciphers=None):
    """A client context.  Without cafile it checks nothing (the tests'
    certificates are their own); minimum/maximum are ssl.TLSVersion values.
    Versions below 1.2 need security level 0 on OpenSSL 3, so asking for
    one lowers it: the client must offer what the server is to refuse."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        ctx.load_verify_locations(cafile)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    old = (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)
    if minimum in old or maximum in old:
        ctx.set_ciphers((ciphers or "DEFAULT") + ":@SECLEVEL=0")
    elif ciphers:
        ctx.set_ciphers(ciphers)
    with warnings.catch_warnings():         # TLSv1 and TLSv1_1 are deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        if minimum is not None:
            ctx.minimum_version = minimum
        if maximum is not None:
            ctx.maximum_version = maximum
    return ctx


def openssl(*args, input=None, timeout=30):
    r = subprocess.run(["openssl"] + list(args), input=input,
                       capture_output=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError("openssl %s: %s" % (" ".join(args),
                                                 r.stderr.decode(errors="replace")))
    return r


class Pki:
    """Keys (EC P-256) and certificates for the TLS tests, in a directory of
    the stage: a root CA, an intermediate CA it signed, and leaf
    certificates for HOSTNAME signed by the intermediate.

      ca.pem             the root (what a verifying client trusts)
      chain.pem          leaf + intermediate, for tls-cert
      leaf.key           its key
      other.key          a key that belongs to no certificate
      expired.pem        leaf.key's certificate, valid only in 2000
      soon.pem           leaf.key's certificate, expiring in 5 days
      unreadable.key     a copy of leaf.key no one but root may read
      garbage.key        not PEM at all

    Everything the server reads is readable by the user it runs as."""

    CA_CNF = """\
[ ca ]
default_ca = testca
[ testca ]
dir = %(dir)s
database = %(dir)s/index.txt
new_certs_dir = %(dir)s/newcerts
serial = %(dir)s/serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[ anything ]
commonName = supplied
[ req ]
distinguished_name = dn
[ dn ]
[ v3_ca ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ v3_int ]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ v3_leaf ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:%(host)s
"""

    def __init__(self, parent, host=HOSTNAME):
        self.dir = os.path.join(parent, "pki")
        os.mkdir(self.dir)
        os.chmod(self.dir, 0o755)
        os.mkdir(os.path.join(self.dir, "newcerts"))
        self.cnf = self.path("ca.cnf")
        with open(self.cnf, "w") as f:
            f.write(self.CA_CNF % {"dir": self.dir, "host": host})
        open(self.path("index.txt"), "w").close()
        with open(self.path("serial"), "w") as f:
            f.write("1000\n")
        for k in ("ca", "int", "leaf", "other"):
            self.key(k + ".key")
        # the root, self-signed
        openssl("req", "-config", self.cnf, "-new", "-x509", "-key", self.path("ca.key"),
                "-subj", "/CN=smtpauthd test root CA", "-days", "30",
                "-extensions", "v3_ca", "-out", self.path("ca.pem"))
        # the intermediate, signed by the root
        self.csr("int.key", "/CN=smtpauthd test intermediate CA", "int.csr")
        self.sign("ca", "int.csr", "int.pem", "v3_int", days=30)
        # leaves, signed by the intermediate
        self.csr("leaf.key", "/CN=" + host, "leaf.csr")
        self.sign("int", "leaf.csr", "leaf.pem", "v3_leaf", days=30)
        self.sign("int", "leaf.csr", "expired.pem", "v3_leaf",
                  dates=("20000101000000Z", "20000102000000Z"))
        self.sign("int", "leaf.csr", "soon.pem", "v3_leaf", days=5)
        with open(self.path("chain.pem"), "wb") as f:
            for n in ("leaf.pem", "int.pem"):
                with open(self.path(n), "rb") as g:
                    f.write(g.read())
        for n in ("expired.pem", "soon.pem"):          # served with their chain
            with open(self.path(n), "ab") as f, open(self.path("int.pem"), "rb") as g:
                f.write(g.read())
        shutil.copy(self.path("leaf.key"), self.path("unreadable.key"))
        os.chmod(self.path("unreadable.key"), 0)      # and owned by us, not RUN_UID
        with open(self.path("garbage.key"), "w") as f:
            f.write("this is not a key\n")
        for n in os.listdir(self.dir):
            p = self.path(n)
            if n.endswith(".pem") or n == "garbage.key":
                os.chmod(p, 0o644)
            elif n.endswith(".key") and n != "unreadable.key":
                os.chmod(p, 0o600)
                if IS_ROOT:
                    os.chown(p, RUN_UID, RUN_GID)

    def path(self, name):
        return os.path.join(self.dir, name)

    def key(self, name):
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-out", self.path(name))

    def csr(self, key, subj, out):
        openssl("req", "-config", self.cnf, "-new", "-key", self.path(key),
                "-subj", subj, "-out", self.path(out))

    def sign(self, issuer, csr, out, ext, days=None, dates=None):
        args = ["ca", "-batch", "-notext", "-config", self.cnf,
                "-cert", self.path(issuer + ".pem"), "-keyfile", self.path(issuer + ".key"),
                "-in", self.path(csr), "-out", self.path(out), "-extensions", ext]
        if dates:
            args += ["-startdate", dates[0], "-enddate", dates[1]]
        else:
            args += ["-days", str(days)]
        openssl(*args)

    def pem_certs(self, name):
        with open(self.path(name)) as f:
            return re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----",
                              f.read(), re.S)
