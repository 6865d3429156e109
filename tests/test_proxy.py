"""The PROXY protocol (proxy.c): smtpauthd over TCP behind a load balancer
listed in proxy-protocol-from (here the test itself on 127.0.0.1, or Debian's
haproxy).  The header's client address must be the one everywhere - the
connect and auth log lines, Received:, the limits on guessing - and the
first SMTP or TLS byte after the header, sent in the same write, must reach
the session.  A listed peer that sends no good header is closed without a
greeting; an unlisted one sending a PROXY line gets an ordinary 500.

Each smtpauthd start is one TCP connection (systemd-socket-activate -a):
the tests keep them few.  The haproxy test skips without haproxy, and fails
under SMTPAUTHD_REQUIRE_E2E=1 (CI), as the end-to-end tests do.
"""

import ipaddress
import shutil
import socket
import struct
import subprocess
import time

import e2e
import services
from smtptest import check, find_events, free_port, kv

LB = "127.0.0.1"
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(client, sport=40000, server="127.0.0.1", dport=587):
    fam = "TCP6" if ":" in client else "TCP4"
    if fam == "TCP6" and ":" not in server:
        server = "::1"
    return ("PROXY %s %s %s %d %d\r\n" % (fam, client, server, sport,
                                          dport)).encode()


def v2(client=None, sport=40000, dport=587, local=False, tlvs=b""):
    """A v2 header: PROXY for client (IPv4 or IPv6), or LOCAL."""
    if client is None:
        body = tlvs
        fam = 0x00
    elif ":" in client:
        body = (ipaddress.IPv6Address(client).packed +
                ipaddress.IPv6Address("::1").packed +
                struct.pack("!HH", sport, dport) + tlvs)
        fam = 0x21
    else:
        body = (ipaddress.IPv4Address(client).packed +
                ipaddress.IPv4Address("127.0.0.1").packed +
                struct.pack("!HH", sport, dport) + tlvs)
        fam = 0x11
    return V2_SIG + bytes([0x20 if local else 0x21, fam]) + \
        struct.pack("!H", len(body)) + body


def tlv(kind, value):
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def events(srv, verb, **want):
    """The log events of verb whose fields include want."""
    out = []
    for e in find_events(srv.log, verb):
        f = kv(e)
        if all(f.get(k) == v for k, v in want.items()):
            out.append(e)
    return out


def send_mail(c, env):
    c.login("alice", users=env.users)
    check(c.transaction(), 250, "2.0.0")
    c.quit()


def test_v1_header_and_ehlo_in_one_write(env):
    """The header and EHLO in one segment: the monitor takes the header and
    not one byte more, so the session answers the EHLO; the client's
    address is in the log, the auth line and Received:."""
    srv = env.tcp(proxy_protocol_from="192.0.2.0/24, " + LB)
    c = srv.connect(greet=False)
    c.send(v1("198.51.100.7") + b"EHLO client.example\r\n")
    c.greeting(15)
    check(c.reply(10), 250)
    check(c.auth_plain("alice", env.users["alice"]), 235, "2.7.0")
    check(c.transaction(), 250, "2.0.0")
    c.quit()
    assert srv.wait_log(r"disconnect ip=198\.51\.100\.7 ")
    assert events(srv, "connect", ip="198.51.100.7", proxy=LB), srv.log
    # ip= stays the first field, as fail2ban's filter and readers expect
    assert any(e.startswith("connect ip=198.51.100.7 proxy=127.0.0.1")
               for e in find_events(srv.log, "connect")), srv.log
    assert any(kv(e).get("ip") == "198.51.100.7"
               for e in find_events(srv.log, "auth")), srv.log
    assert "ip=127.0.0.1" not in srv.log, srv.log
    assert b"([198.51.100.7])" in env.one_call().received(), \
        env.one_call().received()


def test_v2_ipv6_with_tlvs_split_across_writes(env):
    """A v2 header with TLVs, arriving in three pieces, the last with the
    EHLO: the client is the IPv6 address it names."""
    srv = env.tcp(proxy_protocol_from=LB)
    h = v2("2001:db8::25", tlvs=tlv(0x04, b"\0" * 7) +
           tlv(0x01, b"smtp") + tlv(0xEA, b"vpce-0123"))
    c = srv.connect(greet=False)
    c.send(h[:5])
    time.sleep(0.05)
    c.send(h[5:20])
    time.sleep(0.05)
    c.send(h[20:] + b"EHLO client.example\r\n")
    c.greeting(15)
    check(c.reply(10), 250)
    check(c.auth_plain("alice", env.users["alice"]), 235, "2.7.0")
    check(c.transaction(), 250, "2.0.0")
    c.quit()
    assert srv.wait_log(r"disconnect ip=2001:db8::25 ")
    assert events(srv, "connect", ip="2001:db8::25", proxy=LB), srv.log
    assert b"([IPv6:2001:db8::25])" in env.one_call().received()


def test_guesses_count_against_the_proxied_address(env):
    """auth-limit-ip blocks the client the header names, not the balancer:
    another client through the same balancer is still greeted."""
    srv = env.tcp(proxy_protocol_from=LB, auth_limit_ip="1/1h",
                  auth_limit_net="0", auth_limit_user="0")
    c = srv.connect(greet=False)
    c.send(v2("203.0.113.9"))
    c.greeting(15)
    c.ehlo()
    check(c.auth_plain("alice", "wrong"), 535)
    c.quit()
    c = srv.connect(greet=False)
    c.send(v1("203.0.113.9"))
    check(c.reply(15), 421, "4.7.0")
    assert c.closed()
    c = srv.connect(greet=False)
    c.send(v1("203.0.113.10"))
    c.greeting(15)
    c.quit()
    assert srv.wait_log(r"disconnect ip=203\.0\.113\.10 ")
    assert events(srv, "blocked", ip="203.0.113.9") or \
        "203.0.113.9" in srv.log
    assert "ip=127.0.0.1" not in srv.log, srv.log


def test_bad_headers_close_without_a_greeting(env):
    """From a listed peer: garbage, a truncated header, a header too slow
    (timeout 1) and an UNKNOWN one each close the connection before any
    byte is sent, with a disconnect line naming the balancer; a v2 LOCAL
    health check closes too, at debug level only."""
    # REMOTE_ADDR as systemd's Accept=yes sets it: a connection reset
    # before smtpauthd runs has no peer for getpeername() to give.
    srv = env.tcp(proxy_protocol_from=LB, timeout=1,
                  environ={"REMOTE_ADDR": LB})
    cases = [
        (b"EHLO client.example\r\n", "proxy-malformed", "signature"),
        (b"PROXY TCP4 198.51.100.7 127.0.0.1 1 99999\r\n", "proxy-malformed",
         "v1-port"),
        (v2("198.51.100.7")[:20], "proxy-truncated", None),
        (b"PROXY TCP4 198.51.", "proxy-timeout", None),
        (b"PROXY UNKNOWN\r\nEHLO x\r\n", "proxy-no-address", "unknown"),
        (v2(None, local=True), "proxy-local", None),
    ]
    for data, reason, detail in cases:
        c = srv.connect(greet=False)
        c.send(data)
        if reason == "proxy-truncated":
            c.sock.shutdown(socket.SHUT_WR)
        assert c.closed(15), reason
        assert c.buf == b"", (reason, c.buf)
        assert srv.wait_log(r"disconnect ip=127\.0\.0\.1 user=- reason=%s "
                            % reason), (reason, srv.log)
        e = events(srv, "disconnect", reason=reason)[-1]
        assert kv(e)["ip"] == LB and kv(e)["commands"] == "0", e
        if detail:
            assert kv(e)["detail"] == detail, e
    # A TCP health check (haproxy's plain `check`) connects and resets:
    # as quiet as a LOCAL one, not a notice-level proxy-error.
    s = socket.create_connection((srv.host, srv.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    assert srv.wait_log(r"disconnect ip=127\.0\.0\.1 user=- reason=proxy-eof "
                        ), srv.log
    assert events(srv, "disconnect", reason="proxy-error") == [], srv.log
    # nothing of these got as far as a connect line
    assert find_events(srv.log, "connect") == [], srv.log


def test_unlisted_peer_gets_500_for_a_proxy_line(env):
    """Not in proxy-protocol-from: no header is read, a PROXY line is an
    unknown command, and the address is the connection's own."""
    srv = env.tcp(proxy_protocol_from="192.0.2.0/24")
    c = srv.connect()
    r = c.cmd(v1("198.51.100.7").decode().rstrip("\r\n"))
    assert r.code == 500, r
    c.quit()
    assert srv.wait_log(r"disconnect ip=127\.0\.0\.1 ")
    assert "198.51.100.7" not in "".join(find_events(srv.log, "connect"))


def test_implicit_tls_after_a_v2_header(env, pki):
    """On 465 the ClientHello follows the header: the session gets it
    whole.  (smtpauthd starts after the connection is accepted, so the
    header and the ClientHello are both queued by the time it peeks.)"""
    srv = env.tcp(proxy_protocol_from=LB, tls="implicit",
                  tls_cert=pki.path("chain.pem"), tls_key=pki.path("leaf.key"))
    c = srv.connect(greet=False)
    c.send(v2("192.0.2.77"))
    c.wrap_tls()
    c.greeting(15)
    c.quit()
    assert srv.wait_log(r"disconnect ip=192\.0\.2\.77 ")
    assert events(srv, "connect", ip="192.0.2.77", proxy=LB), srv.log


def test_t_refuses_a_bad_prefix(env):
    r = env.run(["-t", "-f", env.write_config(),
                 "-o", "proxy-protocol-from=192.0.2.1/24"])
    assert r.returncode == 78, r
    assert b"proxy-protocol-from" in r.stderr, r
    r = env.run(["-T", "-f", env.write_config(),
                 "-o", "proxy-protocol-from=10.0.0.0/8 2001:db8::/32"])
    assert r.returncode == 0, r
    assert b"proxy-protocol-from 10.0.0.0/8 2001:db8::/32\n" in r.stdout, r


# ---------------------------------------------------------------- haproxy

HAPROXY_CONF = """\
global
    maxconn 50
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend v1
    bind 127.0.0.1:%(p1)d
    default_backend b1
backend b1
    server s1 127.0.0.1:%(srv)d send-proxy
frontend v2
    bind 127.0.0.1:%(p2)d
    default_backend b2
backend b2
    server s2 127.0.0.1:%(srv)d send-proxy-v2
"""


def test_through_haproxy_v1_and_v2(env):
    """Debian's haproxy in TCP mode in front of smtpauthd, send-proxy and
    send-proxy-v2: a client on 127.0.0.2 (swaks for v1, smtplib for v2)
    is logged as 127.0.0.2, with haproxy's 127.0.0.1 as proxy=."""
    srv = env.tcp(proxy_protocol_from=LB)
    p1, p2 = free_port(), free_port()
    proxy = services.Haproxy(env.dir, HAPROXY_CONF % {
        "p1": p1, "p2": p2, "srv": srv.port}, (p1, p2))
    try:
        if shutil.which("swaks"):
            r = subprocess.run(
                ["swaks", "--server", "127.0.0.1", "--port", str(p1),
                 "--local-interface", "127.0.0.2", "--helo", "client.example",
                 "--from", "alice@example.org", "--to", "rcpt@example.net",
                 "--auth", "PLAIN", "--auth-user", "alice",
                 "--auth-password", env.users["alice"]],
                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=60)
            assert r.returncode == 0, r.stdout + r.stderr
        else:
            e2e.skip("swaks not installed")
        import smtplib
        with smtplib.SMTP("127.0.0.1", p2, source_address=("127.0.0.2", 0),
                          timeout=30) as s:
            s.ehlo("client.example")
            s.login("alice", env.users["alice"])
            s.sendmail("alice@example.org", ["rcpt@example.net"],
                       b"Subject: v2\r\n\r\nthrough haproxy\r\n")
    finally:
        proxy.stop()
    assert srv.wait_log(r"(?s)disconnect ip=127\.0\.0\.2 .*"
                        r"disconnect ip=127\.0\.0\.2 ")
    assert len(events(srv, "connect", ip="127.0.0.2", proxy=LB)) == 2, srv.log
    calls = env.calls()
    assert len(calls) == 2, calls
    for call in calls:
        assert b"([127.0.0.2])" in call.received(), call.received()
