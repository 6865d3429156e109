"""The policy client (policy_client.c) against policy servers: a scripted
fake one in this file, on loopback (IPv4 and IPv6) and on a Unix socket,
for each action, a silent one (timeout: the default action, fail open or
closed), one that drips its reply past the deadline, garbage, one that
closes early, and none at all; and Debian's real policyd-rate-limit,
whose limit per SASL user gives its defer reply.

The queries go through tests/policy-query (policy-query-asan with the ASan
build), which runs policy_query as the monitor will, and prints PASS or
DENY CODE TEXT; the log is its standard error.  smtpauthd -t's check of
policy-service runs through the real binary.

Timeouts here are 1 s; no assertion depends on how fast anything runs
but for generous upper bounds (a drip that a per-read timer would let
run 20 s must end near the 1 s deadline)."""

import grp
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time

import pytest

from smtptest import REPO, SAN_PATTERNS, TESTS

QUERY_BIN = os.path.abspath(
    os.environ.get("POLICY_QUERY")
    or os.path.join(TESTS, "policy-query-asan"
                    if os.environ.get("SMTPAUTHD", "").endswith("-asan")
                    else "policy-query"))

# What Postfix 3.2 sends, in its order (SMTPD_POLICY_README).
POSTFIX_ATTRS = [
    "request", "protocol_state", "protocol_name", "helo_name", "queue_id",
    "sender", "recipient", "recipient_count", "client_address",
    "client_name", "reverse_client_name", "instance", "sasl_method",
    "sasl_username", "sasl_sender", "size", "ccert_subject", "ccert_issuer",
    "ccert_fingerprint", "ccert_pubkey_fingerprint", "encryption_protocol",
    "encryption_cipher", "encryption_keysize", "etrn_domain", "stress",
    "client_port", "policy_context", "server_address", "server_port"]

RCPT = ["protocol_state=RCPT", "client_address=192.0.2.7",
        "helo_name=laptop.example", "sender=alice@example.org",
        "recipient=bob@example.net", "sasl_method=PLAIN",
        "sasl_username=alice", "size=1200", "queue_id=0123456789ABCDEF",
        "instance=77.1"]

FAIL_CLOSED = "451 4.3.5 Server configuration problem"


@pytest.fixture(scope="module", autouse=True)
def query_bin():
    if not os.access(QUERY_BIN, os.X_OK):
        r = subprocess.run(["make", "-C", REPO, os.path.relpath(QUERY_BIN,
                                                                REPO)],
                           capture_output=True, check=False)
        if r.returncode != 0:
            pytest.fail("cannot build %s: %s" % (QUERY_BIN, r.stderr[-2000:]))


class FakePolicy:
    """A policy server that answers every request by `behaviour`: bytes
    to send, or "silent", "close", "drip".  Records each request as a
    list of (name, value) pairs."""

    def __init__(self, behaviour, family="inet", where=None):
        self.behaviour = behaviour
        self.requests = []
        self.connections = 0
        self.stop = threading.Event()
        self.held = []
        if family == "unix":
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(where)
            self.spec = "unix:" + where
        elif family == "inet6":
            self.sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            self.sock.bind(("::1", 0))
            self.spec = "inet:[::1]:%d" % self.sock.getsockname()[1]
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.bind(("127.0.0.1", 0))
            self.spec = "inet:127.0.0.1:%d" % self.sock.getsockname()[1]
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            self.handle(conn)

    def handle(self, conn):
        conn.settimeout(5)
        data = b""
        try:
            while b"\n\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        if b"\n\n" in data:
            text = data.split(b"\n\n", 1)[0].decode("utf-8", "replace")
            self.requests.append([tuple(l.split("=", 1))
                                  for l in text.split("\n")])
        b = self.behaviour
        if callable(b):
            b = b(dict(self.requests[-1]) if b"\n\n" in data else {})
        try:
            if b == "silent":
                self.held.append(conn)      # open, unanswered
                return
            if b == "drip":
                # A reply that never ends, a byte at a time: only a
                # deadline for the whole read stops it.
                conn.sendall(b"action=")
                for _ in range(100):
                    if self.stop.wait(0.2):
                        break
                    conn.sendall(b"x")
            elif b != "close":
                conn.sendall(b)
        except OSError:
            pass
        conn.close()

    def request(self, i=-1):
        return dict(self.requests[i])

    def close(self):
        self.stop.set()
        self.sock.close()
        for c in self.held:
            c.close()
        self.thread.join(5)


@pytest.fixture
def servers():
    made = []
    yield made
    for s in made:
        s.close()


def config(tmp_path, spec, timeout=1, default=None, name="policy.conf"):
    text = "policy-service %s\npolicy-service-timeout %d\n" % (spec, timeout)
    if default is not None:
        text += "policy-service-default-action %s\n" % default
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def query(conf, *attrs):
    """(stdout line, log text) of one policy_query."""
    r = subprocess.run([QUERY_BIN, conf] + list(attrs), capture_output=True,
                       timeout=60, check=False)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 0, err
    assert not any(p in r.stderr for p in SAN_PATTERNS), err
    return r.stdout.decode().strip(), err


def fake(servers, behaviour, family="inet", tmp_path=None):
    where = str(tmp_path / "policy.sock") if family == "unix" else None
    s = FakePolicy(behaviour, family, where)
    servers.append(s)
    return s


# ----------------------------------------------------------- the actions

ACTIONS = [
    (b"action=OK\n\n", "PASS"),
    (b"action=DUNNO\n\n", "PASS"),
    (b"action=dunno\n\n", "PASS"),
    (b"action=REJECT\n\n", "DENY 554 5.7.1 Access denied"),
    (b"action=REJECT Not from here\n\n", "DENY 554 5.7.1 Not from here"),
    (b"action=DEFER\n\n", "DENY 450 4.7.1 Access denied"),
    (b"action=DEFER Busy, later\n\n", "DENY 450 4.7.1 Busy, later"),
    (b"action=DEFER_IF_PERMIT\n\n", "DENY 450 4.7.1 Service unavailable"),
    (b"action=defer_if_permit Rate limit reach, retry later\n\n",
     "DENY 450 4.7.1 Rate limit reach, retry later"),
    (b"action=550 5.7.0 Spam sent from your account\n\n",
     "DENY 550 5.7.0 Spam sent from your account"),
    (b"action=452 Too many today\n\n", "DENY 452 4.7.1 Too many today"),
    (b"action=REJECT 4.7.1 class fixed\n\n", "DENY 554 5.7.1 class fixed"),
    (b"action=REJECT bad\xfe\xffbytes\n\n", "DENY 554 5.7.1 bad??bytes"),
    (b"other=1\naction=REJECT x\nmore=2\n\n", "DENY 554 5.7.1 x"),
    (b"action=OK\r\n\r\n", "PASS"),
]


@pytest.mark.parametrize("reply,want", ACTIONS,
                         ids=[a[0].decode("latin-1").split("\n")[0]
                              for a in ACTIONS])
def test_action_over_tcp(tmp_path, servers, reply, want):
    s = fake(servers, reply)
    out, log = query(config(tmp_path, s.spec), *RCPT)
    assert out == want, log
    assert len(s.requests) == 1
    assert "taking policy-service-default-action" not in log, log


@pytest.mark.parametrize("reply,want", [
    (b"action=DUNNO\n\n", "PASS"),
    (b"action=REJECT go away\n\n", "DENY 554 5.7.1 go away"),
    (b"action=DEFER_IF_PERMIT slow down\n\n", "DENY 450 4.7.1 slow down"),
])
def test_action_over_unix_socket(tmp_path, servers, reply, want):
    s = fake(servers, reply, "unix", tmp_path)
    out, log = query(config(tmp_path, s.spec), *RCPT)
    assert out == want, log
    assert len(s.requests) == 1


def test_action_over_ipv6(tmp_path, servers):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        s = fake(servers, b"action=REJECT six\n\n", "inet6")
    except OSError as e:
        pytest.skip("no ::1: %s" % e)
    out, log = query(config(tmp_path, s.spec), *RCPT)
    assert out == "DENY 554 5.7.1 six", log


def test_request_is_what_postfix_sends(tmp_path, servers):
    s = fake(servers, b"action=DUNNO\n\n")
    out, _ = query(config(tmp_path, s.spec), *RCPT)
    assert out == "PASS"
    got = s.requests[0]
    assert [k for k, _ in got] == POSTFIX_ATTRS
    req = dict(got)
    assert req["request"] == "smtpd_access_policy"
    assert req["protocol_state"] == "RCPT"
    assert req["protocol_name"] == "ESMTP"
    assert req["sasl_username"] == "alice"
    assert req["sasl_method"] == "PLAIN"
    assert req["client_address"] == "192.0.2.7"
    assert req["client_name"] == "unknown"
    assert req["sender"] == "alice@example.org"
    assert req["recipient"] == "bob@example.net"
    assert req["size"] == "1200"
    assert req["queue_id"] == "0123456789ABCDEF"
    assert req["instance"] == "77.1"
    assert req["ccert_subject"] == "" and req["stress"] == ""


def test_end_of_message_request(tmp_path, servers):
    s = fake(servers, b"action=DUNNO\n\n")
    out, _ = query(config(tmp_path, s.spec), "protocol_state=END-OF-MESSAGE",
                   "sender=", "recipient_count=3", "size=99999",
                   "sasl_username=bob")
    assert out == "PASS"
    req = s.request()
    assert req["protocol_state"] == "END-OF-MESSAGE"
    assert req["sender"] == "" and req["recipient"] == ""
    assert req["recipient_count"] == "3" and req["size"] == "99999"


def test_warn_passes_and_is_logged(tmp_path, servers):
    s = fake(servers, b"action=WARN odd pattern\n\n")
    out, log = query(config(tmp_path, s.spec), *RCPT)
    assert out == "PASS"
    assert "action WARN odd pattern: logged, treated as DUNNO" in log, log
    assert "user=alice" in log, log


# ------------------------------------------------- what takes the default

FAILURES = [
    ("silent", "no reply within policy-service-timeout"),
    ("close", "closed the connection without a reply"),
    (b"action=OK\n", "closed the connection before the end of its reply"),
    (b"HTTP/1.0 400 Bad Request\r\n\r\n", "not name=value"),
    (b"garbage\x00\n\n", "NUL"),
    (b"x=1\n\n", "no action="),
    (b"action=OK\naction=REJECT\n\n", "two action="),
    (b"action=HOLD\n\n", "action HOLD: not an action smtpauthd applies"),
    (b"action=DISCARD\n\n", "action DISCARD:"),
    (b"action=250 ok\n\n", "action 250 ok: not an action"),
    (b"action=" + b"x" * 5000 + b"\n\n", "4096"),
    (b"action=REJECT a\rb\n\n", "a control character in the reply"),
    (b"action=REJECT bad\x01bytes\n\n", "a control character in the reply"),
]


@pytest.mark.parametrize("behaviour,why", FAILURES,
                         ids=[f[1] for f in FAILURES])
def test_failure_takes_the_default_dunno(tmp_path, servers, behaviour, why):
    s = fake(servers, behaviour)
    out, log = query(config(tmp_path, s.spec), *RCPT)
    assert out == "PASS", log
    assert why in log, log
    assert "taking policy-service-default-action DUNNO" in log, log
    assert "ip=192.0.2.7 user=alice state=RCPT" in log, log
    assert len([l for l in log.splitlines() if "policy-service" in l]) == 1


@pytest.mark.parametrize("behaviour", ["silent", b"garbage\n\n",
                                       b"action=HOLD\n\n"])
def test_failure_takes_a_fail_closed_default(tmp_path, servers, behaviour):
    s = fake(servers, behaviour)
    out, log = query(config(tmp_path, s.spec, default=FAIL_CLOSED), *RCPT)
    assert out == "DENY " + FAIL_CLOSED, log
    assert "taking policy-service-default-action " + FAIL_CLOSED in log


def test_drip_is_bounded_by_one_deadline(tmp_path, servers):
    """A byte every 0.2 s for 20 s: per-read timers of 1 s would wait it
    all out; the deadline ends the query about 1 s after it began."""
    s = fake(servers, "drip")
    start = time.monotonic()
    out, log = query(config(tmp_path, s.spec), *RCPT)
    took = time.monotonic() - start
    assert out == "PASS"
    assert "no reply within policy-service-timeout" in log, log
    assert took < 10, took


def test_no_server_listening(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    out, log = query(config(tmp_path, "inet:127.0.0.1:%d" % port,
                            default="REJECT policy down"), *RCPT)
    assert out == "DENY 554 5.7.1 policy down"
    assert "connect: Connection refused" in log, log


def test_no_unix_socket(tmp_path):
    out, log = query(config(tmp_path, "unix:%s/none.sock" % tmp_path), *RCPT)
    assert out == "PASS"
    assert "connect: No such file or directory" in log, log


@pytest.mark.parametrize("attr", ["helo_name=evil\\nrequest=x",
                                  "sasl_username=a\\n\\nprotocol_state=x",
                                  "recipient=x\r@example.net"])
def test_value_with_newline_is_never_sent(tmp_path, servers, attr):
    s = fake(servers, b"action=REJECT should not be asked\n\n")
    out, log = query(config(tmp_path, s.spec), *(RCPT + [attr]))
    assert out == "PASS", log
    assert "a value holds a newline" in log, log
    assert s.connections == 0 and s.requests == []


def test_no_policy_service_no_query(tmp_path):
    path = tmp_path / "empty.conf"
    path.write_text("")
    out, log = query(str(path), *RCPT)
    assert out == "PASS" and "policy" not in log


# ---------------------------------------------------------------- -t

def test_t_checks_the_form(env):
    for bad in ["inet:127.0.0.1", "tcp:x:1", "unix:rel/path",
                "inet:::1:10031"]:
        path = env.write_config({"policy-service": bad})
        r = env.run(["-t", "-f", path])
        assert r.returncode == 78, r
        assert "policy-service" in r.stderr.decode(), r
    path = env.write_config({"policy-service-default-action": "HOLD"})
    r = env.run(["-t", "-f", path])
    assert r.returncode == 78 and b"policy-service-default-action" in \
        r.stderr, r


def test_t_warns_when_unreachable(env, servers):
    s = FakePolicy(b"action=DUNNO\n\n")
    servers.append(s)
    path = env.write_config({"policy-service": s.spec,
                             "policy-service-timeout": 1})
    r = env.run(["-t", "-f", path])
    assert r.returncode == 0, r
    assert b"policy-service" not in r.stderr, r
    s.close()
    r = env.run(["-t", "-f", path])
    assert r.returncode == 0, r
    assert b"warning: policy-service " + s.spec.encode() in r.stderr, r


def test_T_prints_the_keys(env):
    r = env.run(["-T", "-f", "/dev/null", "-o",
                 "policy-service=unix:/run/policyd/policy.sock", "-o",
                 "policy-service-default-action=" + FAIL_CLOSED])
    assert r.returncode == 0, r
    lines = r.stdout.decode().splitlines()
    assert "policy-service unix:/run/policyd/policy.sock" in lines
    assert "policy-service-timeout 10" in lines
    assert "policy-service-default-action " + FAIL_CLOSED in lines


# ------------------------------------------------ Debian's policyd-rate-limit

RATE_LIMIT = shutil.which("policyd-rate-limit") or \
    ("/usr/bin/policyd-rate-limit"
     if os.path.exists("/usr/bin/policyd-rate-limit") else None)


@pytest.fixture
def rate_limit(tmp_path):
    if RATE_LIMIT is None:
        pytest.skip("policyd-rate-limit is not installed (Debian package "
                    "policyd-rate-limit)")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    d = tmp_path / "prl"
    d.mkdir()
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    conf = d / "policyd-rate-limit.yaml"
    conf.write_text(
        'debug: False\n'
        'user: "%s"\n'
        'group: "%s"\n'
        'pidfile: "%s/pid/policyd-rate-limit.pid"\n'
        'sqlite_config:\n'
        '    database: "%s/db/db.sqlite3"\n'
        'backend: 0\n'
        'SOCKET: ["127.0.0.1", %d]\n'
        'limits:\n'
        '    - [3, 3600]\n'
        'limits_by_id: {}\n'
        'limit_by_sasl: True\n'
        'limit_by_sender: False\n'
        'limit_by_ip: False\n'
        'limited_networks: []\n'
        'success_action: "dunno"\n'
        'fail_action: "defer_if_permit Rate limit reach, retry later"\n'
        'db_error_action: "dunno"\n'
        'report: False\n' % (user, group, d, d, port))
    (d / "pid").mkdir()
    (d / "db").mkdir()
    log = open(d / "log", "wb")
    p = subprocess.Popen([RATE_LIMIT, "-f", str(conf)], stdout=log,
                         stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if p.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail("policyd-rate-limit did not start: %s" %
                                (d / "log").read_text())
                time.sleep(0.1)
        yield "inet:127.0.0.1:%d" % port
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()


def rcpt_as(user, n):
    return ["protocol_state=RCPT", "client_address=192.0.2.7",
            "sender=%s@example.org" % user,
            "recipient=r%d@example.net" % n, "sasl_method=PLAIN",
            "sasl_username=" + user]


def test_policyd_rate_limit_defers_past_its_limit(tmp_path, rate_limit):
    conf = config(tmp_path, rate_limit, timeout=5)
    for n in range(3):
        out, log = query(conf, *rcpt_as("carol", n))
        assert out == "PASS", (n, log)
    out, log = query(conf, *rcpt_as("carol", 3))
    assert out == "DENY 450 4.7.1 Rate limit reach, retry later", log
    assert "taking policy-service-default-action" not in log, log
    # Another login is not affected; carol stays limited.
    out, _ = query(conf, *rcpt_as("dave", 0))
    assert out == "PASS"
    out, _ = query(conf, *rcpt_as("carol", 4))
    assert out.startswith("DENY 450 4.7.1 ")
    # It counts at RCPT only: the end of the message is no recipient.
    out, _ = query(conf, "protocol_state=END-OF-MESSAGE",
                   "sasl_username=carol", "recipient_count=4")
    assert out == "PASS"


# ------------------------------------------------ through smtpauthd itself

def decide(req):
    """REJECT one recipient, DEFER a message of three recipients."""
    if req.get("protocol_state") == "RCPT":
        if req.get("recipient") == "blocked@example.net":
            return b"action=REJECT not this one\n\n"
        return b"action=DUNNO\n\n"
    if req.get("recipient_count") == "3":
        return b"action=DEFER_IF_PERMIT too many at once\n\n"
    return b"action=OK\n\n"


def test_monitor_asks_at_rcpt_and_end_of_message(env, servers):
    from smtptest import PEER, check
    srv = FakePolicy(decide)
    servers.append(srv)
    conf = {"policy_service": srv.spec, "policy_service_timeout": "5"}
    c = env.session(conf=conf)
    check(c.mail("alice@example.org"), 250)
    r = c.rcpt("blocked@example.net")
    check(r, 554, "5.7.1")
    assert r.text == "5.7.1 not this one", r
    check(c.rcpt("one@example.net"), 250)
    check(c.data(b"Subject: x\r\n\r\nhi\r\n"), 250)
    r = c.transaction(rcpts=["a@example.net", "b@example.net",
                             "c@example.net"])
    check(r, 450, "4.7.1")
    assert r.text == "4.7.1 too many at once", r
    c.quit()
    calls = env.calls()
    assert [call.rcpts() for call in calls] == [["one@example.net"]], calls
    reqs = [dict(r) for r in srv.requests]
    states = [(q["protocol_state"], q["recipient"]) for q in reqs]
    assert states == [("RCPT", "blocked@example.net"),
                      ("RCPT", "one@example.net"),
                      ("END-OF-MESSAGE", "one@example.net"),
                      ("RCPT", "a@example.net"), ("RCPT", "b@example.net"),
                      ("RCPT", "c@example.net"), ("END-OF-MESSAGE", "")], \
        states
    for q in reqs:
        assert (q["request"], q["client_address"], q["sasl_username"],
                q["sasl_method"], q["sender"]) == (
            "smtpd_access_policy", PEER, "alice", "PLAIN",
            "alice@example.org"), q
    # One instance per transaction, the same for all its questions.
    assert len({q["instance"] for q in reqs[:3]}) == 1
    assert reqs[3]["instance"] != reqs[0]["instance"]
    assert reqs[6]["recipient_count"] == "3"
    assert int(reqs[2]["size"]) > 0
    assert "denied user=alice ip=%s cmd=RCPT reason=policy-service" % PEER \
        in c.log, c.log


def test_silent_server_fails_open(env, servers):
    from smtptest import check
    srv = FakePolicy("silent")
    servers.append(srv)
    c = env.session(conf={"policy_service": srv.spec,
                          "policy_service_timeout": "1"})
    check(c.transaction(), 250)
    c.quit()
    assert len(env.calls()) == 1
    assert "taking policy-service-default-action DUNNO" in c.log, c.log


def test_policyd_rate_limit_through_smtpauthd(env, rate_limit):
    from smtptest import check
    c = env.session(conf={"policy_service": rate_limit,
                          "policy_service_timeout": "5"})
    check(c.mail("alice@example.org"), 250)
    for n in range(3):
        check(c.rcpt("r%d@example.net" % n), 250)
    r = c.rcpt("r3@example.net")
    check(r, 450, "4.7.1")
    assert r.text == "4.7.1 Rate limit reach, retry later", r
    check(c.data(b"Subject: x\r\n\r\nhi\r\n"), 250)
    c.quit()
    assert env.one_call().rcpts() == ["r0@example.net", "r1@example.net",
                                      "r2@example.net"]


def test_a_421_closes_the_connection(env, servers):
    from smtptest import check
    srv = FakePolicy(b"action=421 4.7.0 Going away\n\n")
    servers.append(srv)
    c = env.session(conf={"policy_service": srv.spec,
                          "policy_service_timeout": "5"})
    check(c.mail("alice@example.org"), 250)
    r = c.rcpt("r@example.net")
    check(r, 421, "4.7.0")
    assert c.closed(10), "still open after 421"
    env.no_calls()
