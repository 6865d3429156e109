"""Two smtpauthd hosts behind one HAProxy, sharing one Redis (issue 13,
part 4): what a fleet must do to behave like one server.

Each "host" is its own activator (systemd-socket-activate -a, as the other
TCP tests run smtpauthd) on its own loopback address, 127.0.0.2 and
127.0.0.3, with its own configuration (its own hostname, which the
greeting shows, so a client sees which host served it), the same
`state redis://...` and state-prefix, and `proxy-protocol-from 127.0.0.1`:
haproxy (TCP mode, roundrobin, send-proxy-v2, `source 127.0.0.1`) connects
from there.  Real clients (smtplib, swaks) connect to haproxy only, each
test from a loopback address of its own (127.0.0.9, .11, ...), so that a
block never catches haproxy's own address or another test's client.

The health check is a plain TCP `check` (inter 200ms): haproxy connects
and sends a v2 LOCAL header, which smtpauthd closes before any session,
at debug level only.  `option smtpchk` cannot be used: it waits for a 220
that a LOCAL header never gets, and would take both hosts down.

Accounts come from the test harness's password file.  The same fleet
with directory accounts (two socket units in test_ldap.py's systemd
container sharing its slapd, a Redis and a haproxy) is in test_ldap.py.

One haproxy, one redis-server and two activators for the whole module
(module-scoped, started and stopped here).  Not for valgrind: it repeats
test_store's and test_proxy's paths, and its health checks start a
process every 100 ms; skipped under the valgrind wrapper, as
test_systemd.py is.  Without haproxy, redis-server or swaks it skips, and
fails under SMTPAUTHD_REQUIRE_E2E=1 (CI).
"""

import os
import shutil
import smtplib
import subprocess

import pytest

import e2e
import services
import smtptest
from smtptest import find_events, free_port, kv

LB = "127.0.0.1"
HOSTS = (("one.fleet.example", "127.0.0.2"),
         ("two.fleet.example", "127.0.0.3"))
GUESSES = 4     # auth-limit-ip
RCPTS = 3       # user-recipient-limit
USER = "alice"


class Fleet:
    pass


@pytest.fixture(scope="module")
def fleet(stage):
    with open(smtptest.BINARY, "rb") as f:
        if f.read(4) != b"\x7fELF":
            # make check-valgrind's wrapper script: see the docstring.
            pytest.skip("%s is not a program but a wrapper"
                        % smtptest.BINARY)
    if shutil.which("swaks") is None:
        e2e.skip("swaks not installed (tools/packages: test swaks)")
    fl = Fleet()
    # carol sends only in the address test: alice is over her limit then
    fl.env = env = smtptest.Env(stage, users=dict(smtptest.USERS,
                                                  carol="Carol-Pw-3"))
    fl.redis = fl.haproxy = None
    try:
        fl.redis = services.Redis()
        fl.prefix = "fleet%d:" % os.getpid()
        common = {
            "state": fl.redis.url, "state_prefix": fl.prefix,
            "proxy_protocol_from": LB,
            "auth_limit_ip": "%d/1h" % GUESSES, "auth_limit_net": "0",
            "auth_limit_user": "0",
            "user_recipient_limit": "%d/1h" % RCPTS,
        }
        fl.hosts = {}
        for name, addr in HOSTS:
            path = env.write_config(dict(common, hostname=name),
                                    name=name + ".conf")
            # REMOTE_ADDR as systemd's Accept=yes sets it (the peer of
            # accept(), here always haproxy): what smtpauthd falls back on
            # when a health check has closed before it could ask.
            srv = smtptest.TcpServer(env, path, host=addr,
                                     environ={"REMOTE_ADDR": LB})
            env.servers.append(srv)
            fl.hosts[name] = srv
        fl.port = free_port()
        one, two = fl.hosts.values()
        fl.haproxy = services.Haproxy(env.dir, services.fleet_haproxy_conf(
            fl.port, (("one", "127.0.0.2", one.port),
                      ("two", "127.0.0.3", two.port)),
            check="inter 200ms fall 3 rise 1"), (fl.port,))
        yield fl
    finally:
        if fl.haproxy:
            fl.haproxy.stop()
        if fl.redis:
            fl.redis.stop()
        env.cleanup()
    bad = env.sanitizer_reports()
    assert not bad, "\n".join(bad)


def smtp(fl, client):
    """An smtplib client from the address client, through haproxy; the
    host that greeted it, by name."""
    s = smtplib.SMTP(timeout=30, source_address=(client, 0))
    code, msg = s.connect(LB, fl.port)
    assert code == 220, (code, msg)
    return s, msg.decode().split()[0]


def refused(fl, client):
    """A connection from client turned away at the greeting: its 421."""
    try:
        s = smtplib.SMTP(LB, fl.port, timeout=30, source_address=(client, 0))
    except smtplib.SMTPConnectError as e:
        return e.smtp_code, e.smtp_error.decode()
    s.quit()
    raise AssertionError("%s was greeted" % client)


def events(fl, verb, **want):
    """{host: the log events of verb whose fields include want}."""
    out = {}
    for name, srv in fl.hosts.items():
        out[name] = [e for e in find_events(srv.log, verb)
                     if all(kv(e).get(k) == v for k, v in want.items())]
    return out


def wait_events(fl, n, verb, **want):
    """Until each host has logged at least n such events (the activators
    write the log after the client is answered)."""
    e2e.wait_until(lambda: all(len(v) >= n for v in
                               events(fl, verb, **want).values()),
                   timeout=15, what="%d %s %r on each host" % (n, verb, want))
    return events(fl, verb, **want)


def guess_until_blocked(fl, client):
    """GUESSES wrong passwords from client, spread by roundrobin: both
    hosts take some, and then both refuse the address."""
    served = []
    for i in range(GUESSES):
        s, host = smtp(fl, client)
        served.append(host)
        s.ehlo("client.example")
        # one AUTH PLAIN each (smtplib's login() would try every
        # mechanism)
        s.user, s.password = USER, "guess-%d" % i
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.auth("PLAIN", s.auth_plain)
        assert e.value.smtp_code == 535, e.value
        s.close()
    assert sorted(set(served)) == sorted(fl.hosts), served
    for _ in fl.hosts:
        code, text = refused(fl, client)
        assert code == 421, (code, text)
    blocked = wait_events(fl, 1, "blocked", ip=client)
    return served, blocked


def send(fl, client, rcpt="rcpt@example.net", swaks=False, user=USER):
    """One message from client as user, through haproxy: (code of RCPT,
    host)."""
    if swaks:
        r = subprocess.run(
            ["swaks", "--server", LB, "--port", str(fl.port),
             "--local-interface", client, "--helo", "client.example",
             "--from", "alice@example.org", "--to", rcpt,
             "--auth", "PLAIN", "--auth-user", user,
             "--auth-password", fl.env.users[user]],
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=60)
        host = [l.split()[2] for l in r.stdout.splitlines()
                if l.startswith("<-  220 ")][0]
        rc = [l for l in r.stdout.splitlines() if l.startswith("<") and
              " 4.7.1" in l]
        if r.returncode == 0:
            return 250, host
        assert rc, r.stdout + r.stderr
        return int(rc[0].split()[1]), host
    s, host = smtp(fl, client)
    s.ehlo("client.example")
    s.login(user, fl.env.users[user])
    code, _ = s.mail("alice@example.org")
    assert code == 250, code
    code, msg = s.rcpt(rcpt)
    if code == 250:
        code2, msg2 = s.data(b"Subject: fleet\r\n\r\nthrough haproxy\r\n")
        assert code2 == 250, (code2, msg2)
    s.quit()
    return code, host


def test_guesses_on_both_hosts_block_the_address_on_both(fleet):
    """auth-limit-ip counts the guesses of 127.0.0.9 wherever they land:
    the fourth, on the second host, reaches the limit, and then both
    hosts turn the address away at the greeting; another client through
    the same haproxy is still greeted."""
    served, blocked = guess_until_blocked(fleet, "127.0.0.9")
    # each host failed some of the guesses, and refused the address
    failed = events(fleet, "auth", ip="127.0.0.9")
    for name in fleet.hosts:
        assert failed[name] and all(" failed " in " %s " % e or
                                    e.startswith("failed ")
                                    for e in failed[name]), failed
        assert served.count(name) == GUESSES // 2, served
    assert all(blocked.values()), blocked
    s, _ = smtp(fleet, "127.0.0.10")
    s.quit()
    keys = fleet.redis.cli("KEYS", fleet.prefix + "ip:*").split()
    assert fleet.prefix + "ip:127.0.0.9" in keys, keys


def test_recipient_limit_counts_both_hosts(fleet):
    """user-recipient-limit (3/1h) counts what alice sends through either
    host: three messages, spread over both (smtplib and swaks), are
    accepted, and the fourth is refused 451 4.7.1 by whichever host takes
    it."""
    client = "127.0.0.11"
    before = len(fleet.env.calls())
    served = []
    for i in range(RCPTS):
        code, host = send(fleet, client, swaks=(i == 1))
        assert code == 250, (i, code, host)
        served.append(host)
    assert sorted(set(served)) == sorted(fleet.hosts), served
    code, host = send(fleet, client)
    assert code == 451, (code, host)
    assert len(fleet.env.calls()) == before + RCPTS
    queued = wait_events(fleet, 1, "queued")
    for name in fleet.hosts:
        assert len(queued[name]) == served.count(name), (queued, served)
    limited = events(fleet, "limited", user=USER)
    assert len(limited[host]) == 1, limited


def test_both_hosts_log_the_clients_address(fleet):
    """Every connect line of a client names it, with haproxy as proxy=;
    the auth lines, Received: too; haproxy's own address is never a
    client (its health checks stop before a session: see below)."""
    client = "127.0.0.12"
    before = len(fleet.env.calls())
    sent = [send(fleet, client, user="carol") for _ in fleet.hosts]
    assert sorted(h for _, h in sent) == sorted(fleet.hosts), sent
    assert all(code == 250 for code, _ in sent), sent
    connects = wait_events(fleet, 1, "connect", ip=client, proxy=LB)
    assert all(len(v) == 1 for v in connects.values()), connects
    oks = events(fleet, "auth", ip=client)
    assert all(len(v) == 1 and v[0].startswith("auth ok ")
               for v in oks.values()), oks
    for name, srv in fleet.hosts.items():
        for e in find_events(srv.log, "connect"):
            assert kv(e).get("proxy") == LB and kv(e)["ip"] != LB, e
    calls = fleet.env.calls()[before:]
    assert len(calls) == len(fleet.hosts), calls
    for call in calls:
        assert b"([%s])" % client.encode() in call.received(), \
            call.received()


def checks(fl):
    """{host: the lines haproxy's health checks left}: from its address,
    before any session."""
    return {name: [e for e in find_events(srv.log, "disconnect")
                   if kv(e)["ip"] == LB]
            for name, srv in fl.hosts.items()}


def test_health_checks_count_nothing_and_log_at_debug(fleet):
    """haproxy checks each host every 200 ms (a TCP connect with a v2
    LOCAL header).  Over at least five checks on each host: each left one
    line, a disconnect with reason=proxy-local (or proxy-eof; smtpauthd.c
    logs both at debug level), no connect, no auth line, nothing counted
    in Redis for haproxy's address, and haproxy kept both hosts up."""
    n = {k: len(v) for k, v in checks(fleet).items()}
    e2e.wait_until(lambda: all(len(v) >= n[k] + 5
                               for k, v in checks(fleet).items()),
                   timeout=15, what="five more health checks on each host")
    for name, lines in checks(fleet).items():
        for e in lines:
            assert kv(e)["reason"] in ("proxy-local", "proxy-eof") and \
                kv(e)["commands"] == "0", (name, e)
    for name, srv in fleet.hosts.items():
        log = srv.log
        assert "ip=%s " % LB not in log.replace(
            "disconnect ip=%s user=- reason=proxy-" % LB, ""), log
        assert "limit reached ip:%s " % LB not in log, log
    assert fleet.redis.cli("KEYS", fleet.prefix + "*%s*" % LB).strip() == "", \
        fleet.redis.cli("KEYS", fleet.prefix + "*")
    assert " is DOWN" not in fleet.haproxy.log, fleet.haproxy.log


def failing_open(srv):
    return [l for l in srv.log.splitlines() if "failing open" in l]


def test_redis_down_fails_open_and_back_restores_limits(fleet):
    """Redis stopped: mail goes on through both hosts, each connection
    saying once that it goes without limits (not once per operation,
    and nothing from the health checks meanwhile).  Redis started again
    (empty): guesses spread over both hosts block an address on both."""
    fleet.redis.down()
    try:
        client = "127.0.0.13"
        before = {k: len(failing_open(s)) for k, s in fleet.hosts.items()}
        n = {k: len(v) for k, v in checks(fleet).items()}
        hosts = [send(fleet, client) for _ in fleet.hosts]
        assert sorted(h for _, h in hosts) == sorted(fleet.hosts), hosts
        assert all(code == 250 for code, _ in hosts), hosts
        wait_events(fleet, 1, "disconnect", ip=client)
        # a health check or two ran meanwhile, and said nothing of Redis
        e2e.wait_until(lambda: all(len(v) > n[k] for k, v in
                                   checks(fleet).items()),
                       timeout=15, what="a health check on each host")
        for name, srv in fleet.hosts.items():
            lines = failing_open(srv)[before[name]:]
            assert [l.split("; ")[-1] for l in lines] == [
                "no limits for this connection (failing open)"], lines
    finally:
        fleet.redis.up()
    guess_until_blocked(fleet, "127.0.0.14")
