"""TLS (issue 3): STARTTLS (tls starttls, 587) and implicit TLS (tls
implicit, 465) on OpenSSL 3.

Real clients (Python's ssl and smtplib, swaks, curl, openssl s_client,
msmtp) each send an authenticated message end to end; the capture sendmail
shows what arrived (argv, the bytes, the Received: header with ESMTPSA and
"(using TLSvX with cipher Y)") and the log its auth ok and queued lines
with tls=.  Then the attacks and failures: STARTTLS command injection
(CVE-2011-0411), the session reset of RFC 3207 4.2, STARTTLS misuse, old
protocol versions, ciphers, handshakes that never finish, peers that vanish
mid-DATA, certificates and keys that do not load, AUTH outside TLS, the
certificate chain, and `smtpauthd -t` on certificates.

Keys and certificates come from the session's Pki (conftest.pki): a root CA,
an intermediate, and a leaf for test.example served as leaf + intermediate.
"""

import os
import re
import select
import shutil
import smtplib
import socket
import ssl
import struct
import subprocess
import time

import pytest

from smtptest import (HOSTNAME, IS_ROOT, PEER, check, drop_kwargs,
                      find_events, kv, plain_blob, received_re,
                      tls_client_context)

MSG = (b"From: alice@example.org\r\nTo: one@example.net\r\nSubject: over TLS\r\n"
       b"\r\nfirst line\r\n.leading dot\r\n..two dots\r\nlast line\r\n")
MSG_SPOOLED = MSG.replace(b"\r\n", b"\n")
# MSG as it goes on the wire from a client that does not dot-stuff for us
MSG_STUFFED = re.sub(rb"(^|\r\n)\.", rb"\1..", MSG)

CIPHER_RE = r"[A-Za-z0-9_-]+"
TLS13_SUITES = ("TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
                "TLS_AES_128_GCM_SHA256")
LOCAL = "127.0.0.1"
V12, V13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


def need(*progs):
    for p in progs + ("systemd-socket-activate",):
        if shutil.which(p) is None:
            pytest.skip("%s not installed" % p)


@pytest.fixture
def tenv(env, pki):
    """An Env serving STARTTLS with the chain, AUTH only inside TLS."""
    env.pki = pki
    env.conf.update({
        "tls": "starttls",
        "tls-cert": pki.path("chain.pem"),
        "tls-key": pki.path("leaf.key"),
        "auth-require-tls": "yes",
        "timeout": "10",
    })
    return env


@pytest.fixture
def tpam(tenv):
    """tenv authenticating through pam_wrapper + pam_counter."""
    tenv.use_pam()
    return tenv


def ext_lines(r):
    return r.lines[1:]


def has_auth(r):
    return any(l.split()[0] == "AUTH" for l in ext_lines(r))


def auth_events(log, ok=True):
    verb = "auth ok " if ok else "auth failed "
    return [kv(e) for e in find_events(log, "auth") if e.startswith(verb)]


def disconnect(log):
    d = find_events(log, "disconnect")
    assert len(d) == 1, log
    return kv(d[0])


def tls_failed(log):
    ev = [kv(e) for e in find_events(log, "tls") if e.startswith("tls failed ")]
    assert len(ev) == 1, log
    return ev[0]


def no_plaintext_reply(data):
    """What a server said where only TLS may be spoken: nothing, or TLS
    records (an alert), never an SMTP reply."""
    assert data == b"" or data[:1] in (b"\x15", b"\x16"), data[:200]
    assert not re.search(rb"(^|\n)[2-5]\d\d[ -]", data), data[:200]


def check_tls_delivery(env, log, rcpts=("one@example.net",), version=None,
                       cipher=None, ip=PEER, sender="alice@example.org",
                       user="alice", bodies=(MSG_SPOOLED,),
                       helo=r"client\.example"):
    """One message reached sendmail, sent inside TLS: argv, bytes,
    Received: (ESMTPSA, the protocol and cipher) and the log's auth ok and
    queued lines with tls=.  version/cipher None: any TLSv1.2/1.3 and any
    cipher, but the same in the header and the log.  Returns the match of
    the Received: header."""
    call = env.one_call()
    assert call.argv == [env.sendmail, "-i", "-f", sender, "--"] + list(rcpts), \
        call.argv
    hdr, rest = call.received().decode(), call.body()
    m = received_re(helo=helo, ip=ip, user=user,
                    rcpt=rcpts[0] if len(rcpts) == 1 else None,
                    tls=(re.escape(version) if version else r"TLSv1\.[23]",
                         re.escape(cipher) if cipher else CIPHER_RE)).match(hdr)
    assert m, hdr
    assert rest in bodies, rest
    version = m.group("tls_version")
    auth = auth_events(log)
    assert len(auth) == 1, log
    assert auth[0]["user"] == user and auth[0]["ip"] == ip, auth
    assert auth[0]["tls"] == version, (auth, hdr)
    q = [kv(e) for e in find_events(log, "queued")]
    assert len(q) == 1, log
    assert q[0]["tls"] == version and q[0]["user"] == user and \
        q[0]["ip"] == ip and q[0]["nrcpt"] == str(len(rcpts)) and \
        q[0]["id"] == m.group("id") and q[0]["from"] == "<%s>" % sender, (q, hdr)
    return m


def send_message(c, rcpts=("one@example.net",), body=MSG_STUFFED):
    check(c.mail("alice@example.org"), 250, "2.1.0")
    for r in rcpts:
        check(c.rcpt(r), 250, "2.1.5")
    return check(c.data(body), 250, "2.0.0")


def tls_session(env, ctx=None, **kw):
    """start() + EHLO + STARTTLS + handshake + EHLO + AUTH, on a
    socketpair.  Returns the client."""
    c = env.start(**kw)
    c.ehlo()
    c.starttls(ctx)
    r = c.ehlo()
    assert has_auth(r), r
    check(c.auth_plain("alice", env.users["alice"]), 235, "2.7.0")
    return c


def implicit_session(env, ctx=None, **kw):
    """An implicit-TLS server on a socketpair: handshake, then greeting."""
    kw.setdefault("tls", "implicit")
    c = env.start(greet=False, **kw)
    c.wrap_tls(ctx)
    r = c.greeting()
    assert r.text.split()[:2] == [HOSTNAME, "ESMTP"], r
    return c


def client_hello():
    """The bytes of a real TLS ClientHello (for a client that stalls)."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = tls_client_context().wrap_bio(inc, out)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    data = out.read()
    assert data[:1] == b"\x16", data[:10]
    return data


def read_all(c, timeout=10):
    """Everything the server sends until it closes (raw, no TLS)."""
    deadline = time.monotonic() + timeout
    data = b""
    c.sock.settimeout(timeout)
    while time.monotonic() < deadline:
        try:
            chunk = c.sock.recv(65536)
        except ConnectionResetError:
            break
        except socket.timeout:
            raise AssertionError("connection still open; got %r" % data[:200])
        if not chunk:
            break
        data += chunk
    return data


# ==================================================================== clients

def test_python_ssl_after_220(tenv):
    """STARTTLS by hand: the handshake with Python's ssl after the 220, a
    message, QUIT; a Received: naming exactly the negotiated protocol and
    cipher."""
    c = tenv.start()
    r = c.ehlo()
    assert "STARTTLS" in ext_lines(r) and not has_auth(r), r
    r = check(c.cmd("STARTTLS"), 220, "2.0.0")
    assert r.raw == b"220 2.0.0 Ready to start TLS\r\n", r      # as the man page says
    assert c.pending(0.2) == b"", "bytes after the 220 before the handshake"
    s = c.wrap_tls()
    version, cipher = s.version(), s.cipher()[0]
    r = c.ehlo()
    assert has_auth(r) and "STARTTLS" not in ext_lines(r), r
    check(c.auth_plain("alice", tenv.users["alice"]), 235, "2.7.0")
    send_message(c)
    c.quit()
    assert c.finish() == 0
    check_tls_delivery(tenv, c.log, version=version, cipher=cipher)
    assert disconnect(c.log)["reason"] == "quit"


def test_smtplib_starttls(tenv):
    need()
    srv = tenv.tcp()
    ctx = tls_client_context(cafile=tenv.pki.path("ca.pem"))
    ctx.check_hostname = False          # 127.0.0.1; the chain is verified
    with smtplib.SMTP(LOCAL, srv.port, local_hostname="client.example",
                      timeout=15) as s:
        s.ehlo()
        assert s.has_extn("starttls") and not s.has_extn("auth")
        code, _ = s.starttls(context=ctx)
        assert code == 220
        version, cipher = s.sock.version(), s.sock.cipher()[0]
        s.ehlo()
        assert s.has_extn("auth") and not s.has_extn("starttls")
        s.login("alice", tenv.users["alice"])
        assert s.sendmail("alice@example.org", ["one@example.net", "two@example.net"],
                          MSG) == {}
    assert srv.wait_log(r"disconnect ip=127\.0\.0\.1 "), srv.log
    check_tls_delivery(tenv, srv.log, ["one@example.net", "two@example.net"],
                       version, cipher, ip=LOCAL)


def test_smtplib_ssl_implicit(tenv):
    need()
    srv = tenv.tcp(tls="implicit")
    ctx = tls_client_context(cafile=tenv.pki.path("ca.pem"))
    ctx.check_hostname = False
    with smtplib.SMTP_SSL(LOCAL, srv.port, local_hostname="client.example",
                          context=ctx, timeout=15) as s:
        version, cipher = s.sock.version(), s.sock.cipher()[0]
        s.ehlo()
        assert s.has_extn("auth") and not s.has_extn("starttls")
        s.login("alice", tenv.users["alice"])
        assert s.sendmail("alice@example.org", ["one@example.net"], MSG) == {}
    assert srv.wait_log(r"disconnect ip=127\.0\.0\.1 "), srv.log
    check_tls_delivery(tenv, srv.log, version=version, cipher=cipher, ip=LOCAL)


@pytest.mark.parametrize("mode", ["--tls", "--tlsc"])
def test_swaks(tenv, mode):
    need("swaks")
    srv = tenv.tcp(tls="implicit" if mode == "--tlsc" else "starttls")
    msgfile = tenv.write("msg.eml", MSG)
    r = subprocess.run(["swaks", "--server", LOCAL, "--port", str(srv.port), mode,
                        "--helo", "client.example",
                        "--auth", "PLAIN", "--auth-user", "alice",
                        "--auth-password", tenv.users["alice"],
                        "--from", "alice@example.org", "--to", "one@example.net",
                        "--data", "@" + msgfile, "--timeout", "15"],
                       capture_output=True, timeout=60)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out + r.stderr.decode(errors="replace")
    m = re.search(r"TLS started with cipher (TLSv1\.[23]):([A-Za-z0-9_-]+):", out)
    assert m, out
    if mode == "--tlsc":
        assert "STARTTLS" not in out, out
    assert srv.wait_log(r"disconnect ip=127\.0\.0\.1 "), srv.log
    # swaks ends the data with one more CRLF of its own
    check_tls_delivery(tenv, srv.log, version=m.group(1), cipher=m.group(2), ip=LOCAL,
                       bodies=(MSG_SPOOLED, MSG_SPOOLED + b"\n"))


@pytest.mark.parametrize("scheme", ["smtp", "smtps"])
def test_curl(tenv, scheme):
    need("curl")
    srv = tenv.tcp(tls="implicit" if scheme == "smtps" else "starttls")
    msgfile = tenv.write("msg.eml", MSG_SPOOLED)       # --crlf makes it CRLF
    args = ["curl", "-v", "-sS", "--max-time", "30", "-k", "--crlf",
            "--url", "%s://%s:%d/client.example" % (scheme, LOCAL, srv.port),
            "--user", "alice:" + tenv.users["alice"],
            "--mail-from", "alice@example.org",
            "--mail-rcpt", "one@example.net", "--mail-rcpt", "two@example.net",
            "--upload-file", msgfile]
    if scheme == "smtp":
        args.insert(1, "--ssl-reqd")
    r = subprocess.run(args, capture_output=True, timeout=60)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 0, err
    m = re.search(r"SSL connection using (TLSv1\.[23]) / ([A-Za-z0-9_-]+)", err)
    assert m, err
    assert ("STARTTLS" in err) == (scheme == "smtp"), err
    assert srv.wait_log(r"disconnect ip=127\.0\.0\.1 "), srv.log
    check_tls_delivery(tenv, srv.log, ["one@example.net", "two@example.net"],
                       m.group(1), m.group(2), ip=LOCAL)


def test_openssl_s_client_starttls(tenv):
    """The whole session scripted through s_client's stdin, pipelined."""
    need("openssl")
    srv = tenv.tcp()
    script = ("EHLO client.example\r\n"
              "AUTH PLAIN %s\r\n"
              "MAIL FROM:<alice@example.org>\r\n"
              "RCPT TO:<one@example.net>\r\n"
              "DATA\r\n" % plain_blob("alice", tenv.users["alice"])).encode()
    script += MSG_STUFFED + b".\r\nQUIT\r\n"
    r = subprocess.run(["openssl", "s_client", "-connect", "%s:%d" % (LOCAL, srv.port),
                        "-starttls", "smtp", "-name", "client.example",
                        "-brief", "-ign_eof"],
                       input=script, capture_output=True, timeout=30)
    out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    assert r.returncode == 0, out + err
    assert re.search(r"^235 2\.7\.0 ", out, re.M), out
    assert re.search(r"^250 2\.0\.0 Ok: queued as ", out, re.M), out
    assert re.search(r"^221 2\.0\.0 ", out, re.M), out
    v = re.search(r"Protocol version: (TLSv1\.[23])", err)
    cs = re.search(r"Ciphersuite: ([A-Za-z0-9_-]+)", err)
    assert v and cs, err
    assert srv.wait_log(r"disconnect ip=127\.0\.0\.1 "), srv.log
    check_tls_delivery(tenv, srv.log, version=v.group(1), cipher=cs.group(1), ip=LOCAL)


@pytest.mark.parametrize("starttls", ["on", "off"])
def test_msmtp(tenv, starttls):
    need("msmtp")
    srv = tenv.tcp(tls="starttls" if starttls == "on" else "implicit")
    conf = os.path.join(tenv.dir, "msmtprc")
    with open(conf, "w") as f:
        f.write("defaults\n"
                "account test\n"
                "host %s\n"
                "port %d\n"
                "domain client.example\n"
                "tls on\n"
                "tls_starttls %s\n"
                "tls_certcheck off\n"
                "auth plain\n"
                "user alice\n"
                "password %s\n"
                "from alice@example.org\n"
                "timeout 15\n"
                "account default : test\n" % (LOCAL, srv.port, starttls,
                                              tenv.users["alice"]))
    os.chmod(conf, 0o600)
    r = subprocess.run(["msmtp", "-C", conf, "one@example.net"], input=MSG,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert srv.wait_log(r"disconnect ip=127\.0\.0\.1 "), srv.log
    # msmtp adds Date: and Message-ID: in front
    added = tenv.one_call().body()[:-len(MSG_SPOOLED)]
    assert all(l.split(b":")[0] in (b"Date", b"Message-ID")
               for l in added.splitlines()), added
    m = check_tls_delivery(tenv, srv.log, ip=LOCAL, bodies=(added + MSG_SPOOLED,))
    # GnuTLS and OpenSSL agree on TLS 1.3 here; a fall back would show.
    assert m.group("tls_version") == "TLSv1.3" and \
        m.group("tls_cipher") in TLS13_SUITES, m.group(0)


def test_pipelining_and_large_message_inside_tls(tenv):
    """Pipelined commands in one TLS record and a 1 MB message spread over
    many records arrive intact (io.c's pending input includes what OpenSSL
    has decrypted but not handed over)."""
    c = tls_session(tenv)
    c.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<one@example.net>\r\n"
           b"RCPT TO:<two@example.net>\r\nDATA\r\n")
    for code in (250, 250, 250, 354):
        check(c.reply(), code)
    lines = [b"line %06d %s" % (i, b"x" * (i % 977)) for i in range(2000)]
    body = b"Subject: big\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"
    c.send(body + b".\r\n")
    check(c.reply(30), 250, "2.0.0")
    version, cipher = c.sock.version(), c.sock.cipher()[0]
    c.quit()
    c.finish()
    check_tls_delivery(tenv, c.log, ["one@example.net", "two@example.net"],
                       version, cipher, bodies=(body.replace(b"\r\n", b"\n"),))


def test_ehlo_and_starttls_pipelined(tenv):
    """EHLO and STARTTLS in one write: both are answered, in order, and
    the handshake follows."""
    c = tenv.start()
    c.send("EHLO client.example\r\nSTARTTLS\r\n")
    r = check(c.reply(), 250)
    assert "STARTTLS" in ext_lines(r), r
    check(c.reply(), 220, "2.0.0")
    c.wrap_tls()
    assert has_auth(c.ehlo())


def test_auth_failure_inside_tls_logged(tenv):
    c = tenv.start(auth_failure_delay=0)
    c.ehlo()
    s = c.starttls()
    c.ehlo()
    check(c.auth_plain("alice", "wrong"), 535, "5.7.8")
    ev = auth_events(c.log, ok=False)
    assert len(ev) == 1 and ev[0]["tls"] == s.version() and ev[0]["user"] == "alice", c.log


def test_command_timeout_inside_tls(tenv):
    """`timeout` inside TLS: the 421 goes out encrypted, then the close."""
    c = implicit_session(tenv, timeout=1)
    t = time.monotonic()
    check(c.reply(timeout=6), 421, "4.4.2")
    assert 0.8 <= time.monotonic() - t < 5
    assert c.closed()
    assert c.wait_exit(5) == 0
    assert disconnect(c.log)["reason"] == "timeout"


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_no_session_tickets(tenv, version):
    """One process per connection: no tickets are sent (TLS 1.3 would send
    them after the handshake, before the first reply) and a second
    connection offering the first one's session gets a full handshake."""
    v = V13 if version == "TLSv1.3" else V12
    ctx = tls_client_context(minimum=v, maximum=v)
    c = implicit_session(tenv, ctx)
    c.ehlo()
    assert c.sock.version() == version
    sess = c.sock.session
    assert sess is None or not sess.has_ticket, sess
    c.quit()
    c2 = tenv.start(tls="implicit", greet=False)
    c2.plain_sock = c2.sock
    c2.sock = ctx.wrap_socket(c2.sock, session=sess)
    c2.greeting()
    assert not c2.sock.session_reused
    c2.quit()


def test_no_renegotiation(tenv):
    """A TLS 1.2 client asking to renegotiate (s_client's R) is refused."""
    need("openssl")
    srv = tenv.tcp(tls="implicit")
    p = subprocess.Popen(["openssl", "s_client", "-connect", "%s:%d" % (LOCAL, srv.port),
                          "-tls1_2"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    # The greeting first, so that no application data crosses the request.
    out, deadline = b"", time.monotonic() + 10
    while not re.search(rb"^220 .*\n", out, re.M):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([p.stdout], [], [], left)[0]:
            p.kill()
            p.wait()
            raise AssertionError("no greeting through s_client: %r" % out)
        chunk = os.read(p.stdout.fileno(), 65536)
        if not chunk:
            break
        out += chunk
    p.stdin.write(b"R\n")          # stdin stays open: EOF would end s_client
    p.stdin.flush()
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        raise AssertionError("renegotiation accepted: %r" % p.communicate()[1][-500:])
    finally:
        p.stdin.close()
    out += p.stdout.read()
    err = p.stderr.read().decode(errors="replace")
    p.stdout.close()
    p.stderr.close()
    assert "RENEGOTIATING" in err and "no renegotiation" in err, err
    assert b"220 %s ESMTP" % HOSTNAME.encode() in out, out
    assert srv.wait_log(r"disconnect ip=127\.0\.0\.1 "), srv.log
    tenv.no_calls()


# ==================================================== STARTTLS injection

INJECTIONS = {
    "auth": lambda pw: "AUTH PLAIN %s\r\n" % plain_blob("alice", pw),
    "mail": lambda pw: "MAIL FROM:<a@b.example>\r\n",
    "whole-message": lambda pw: (
        "EHLO evil.example\r\nAUTH PLAIN %s\r\nMAIL FROM:<a@b.example>\r\n"
        "RCPT TO:<victim@example.net>\r\nDATA\r\nSubject: injected\r\n\r\n"
        "evil\r\n.\r\nQUIT\r\n" % plain_blob("alice", pw)),
}


@pytest.mark.parametrize("transport", ["socketpair", "tcp"])
@pytest.mark.parametrize("what", sorted(INJECTIONS))
def test_starttls_injection(tpam, what, transport):
    """CVE-2011-0411: lines sent with STARTTLS, in the same write, before
    the handshake, get no reply and have no effect."""
    env = tpam
    if transport == "tcp":
        need()
        srv = env.tcp()
        c = srv.connect()
        log = lambda: srv.log
    else:
        c = env.start()
        log = lambda: c.log
    c.ehlo()
    c.send("STARTTLS\r\n" + INJECTIONS[what](env.users["alice"]))
    check(c.reply(), 220, "2.0.0")
    assert c.pending(0.2) == b"", "plaintext after the 220"
    c.wrap_tls()
    # The first reply inside TLS is the one to our first command.
    check(c.cmd("NOOP"), 250, "2.0.0")
    # The injected AUTH did not count, nor did an injected MAIL.
    check(c.mail("alice@example.org"), 503, "5.5.1")        # no EHLO yet
    r = c.ehlo()
    assert has_auth(r), r
    check(c.mail("alice@example.org"), 530, "5.7.0")
    assert c.pending(0.2) == b"", "extra replies"
    assert env.backend_calls() == 0
    assert auth_events(log()) == [] and auth_events(log(), ok=False) == [], log()
    env.no_calls()
    # The protected session itself works, and the counter counts.
    check(c.auth_plain("alice", env.users["alice"]), 235, "2.7.0")
    assert env.backend_calls() == 1
    check(c.rcpt("one@example.net"), 503, "5.5.1")          # no MAIL yet
    send_message(c)
    c.quit()
    if transport == "tcp":
        assert srv.wait_log(r"disconnect ip=127\.0\.0\.1 "), srv.log
    else:
        c.finish()
    check_tls_delivery(env, log(), ip=LOCAL if transport == "tcp" else PEER)
    assert b"evil" not in env.one_call().message
    # only our own refused commands were logged: nothing injected ran
    rejected = [kv(e) for e in find_events(log(), "rejected")]
    assert [x["cmd"] for x in rejected] == ["MAIL", "MAIL", "RCPT"], log()


# ==================================================== session and STARTTLS use

def test_no_starttls_after_plaintext_auth(tenv):
    """With auth-require-tls no a client may log in before TLS; STARTTLS is
    then neither offered nor accepted (RFC 3207 would have the login
    forgotten, and the monitor allows no second one)."""
    c = tenv.start(auth_require_tls="no")
    r = c.ehlo("plain.example")
    assert has_auth(r) and "STARTTLS" in ext_lines(r), r
    check(c.auth_plain("alice", tenv.users["alice"]), 235, "2.7.0")
    r = c.ehlo("plain.example")
    assert "STARTTLS" not in ext_lines(r), r
    check(c.cmd("STARTTLS"), 503, "5.5.1")
    check(c.cmd("NOOP"), 250)


def test_session_reset_after_starttls(tenv):
    """RFC 3207 4.2: the EHLO and an open transaction are forgotten."""
    c = tenv.start(auth_require_tls="no")
    r = c.ehlo("plain.example")
    assert has_auth(r) and "STARTTLS" in ext_lines(r), r
    c.starttls()
    check(c.mail("alice@example.org"), 503, "5.5.1")          # EHLO first
    check(c.cmd("DATA"), 503)
    r = c.ehlo("client.example")
    assert has_auth(r) and "STARTTLS" not in ext_lines(r), r
    check(c.mail("alice@example.org"), 530, "5.7.0")         # no AUTH yet
    check(c.auth_plain("alice", tenv.users["alice"]), 235, "2.7.0")
    check(c.rcpt("one@example.net"), 503, "5.5.1")           # no MAIL yet
    send_message(c)
    version = c.sock.version()
    c.quit()
    c.finish()
    ok = auth_events(c.log)
    assert [a["tls"] for a in ok] == [version], c.log
    call = tenv.one_call()
    assert call.rcpts() == ["one@example.net"]
    assert received_re(helo=r"client\.example", rcpt="one@example.net",
                       tls=(re.escape(version), CIPHER_RE)).match(
        call.received().decode()), call.received()


def test_helo_forgotten_after_starttls(tenv):
    c = tenv.start()
    check(c.cmd("HELO client.example"), 250)
    c.starttls()
    check(c.cmd("AUTH PLAIN " + plain_blob("alice", tenv.users["alice"])), 503, "5.5.1")
    check(c.mail("alice@example.org"), 503, "5.5.1")
    c.ehlo()
    check(c.auth_plain("alice", tenv.users["alice"]), 235)


def test_starttls_before_ehlo(tenv):
    c = tenv.start()
    c.starttls()
    r = c.ehlo()
    assert has_auth(r) and "STARTTLS" not in ext_lines(r), r


def test_starttls_twice(tenv):
    c = tenv.start()
    c.ehlo()
    c.starttls()
    c.ehlo()
    check(c.cmd("STARTTLS"), 503, "5.5.1")
    check(c.cmd("NOOP"), 250)                  # still inside TLS, still there
    check(c.auth_plain("alice", tenv.users["alice"]), 235)


def test_starttls_with_argument(tenv):
    c = tenv.start()
    c.ehlo()
    check(c.cmd("STARTTLS now"), 501, "5.5.4")
    check(c.cmd("NOOP"), 250)                  # still plaintext, still there
    c.starttls()
    c.ehlo()
    check(c.auth_plain("alice", tenv.users["alice"]), 235)


def test_starttls_tls_none(tenv):
    c = tenv.start(tls="none", tls_cert=None, tls_key=None)
    r = c.ehlo()
    assert "STARTTLS" not in ext_lines(r) and not has_auth(r), r
    check(c.cmd("STARTTLS"), 502, "5.5.1")
    check(c.cmd("NOOP"), 250)
    assert find_events(c.log, "tls") == [], c.log


def test_starttls_on_implicit(tenv):
    c = implicit_session(tenv)
    r = c.ehlo()
    assert has_auth(r) and "STARTTLS" not in ext_lines(r), r
    check(c.cmd("STARTTLS"), 503, "5.5.1")
    check(c.auth_plain("alice", tenv.users["alice"]), 235)
    send_message(c)
    version, cipher = c.sock.version(), c.sock.cipher()[0]
    c.quit()
    c.finish()
    check_tls_delivery(tenv, c.log, version=version, cipher=cipher)


def test_ehlo_and_help_before_and_after_tls(tenv):
    c = tenv.start()
    r = c.ehlo()
    assert sorted(ext_lines(r)) == sorted(["PIPELINING", "SIZE 36700160", "8BITMIME",
                                           "STARTTLS", "ENHANCEDSTATUSCODES"]), r
    assert "STARTTLS" in check(c.cmd("HELP"), 214).text
    c.starttls()
    r = c.ehlo()
    assert sorted(ext_lines(r)) == sorted(["PIPELINING", "SIZE 36700160", "8BITMIME",
                                           "AUTH PLAIN LOGIN", "ENHANCEDSTATUSCODES"]), r
    assert "STARTTLS" not in check(c.cmd("HELP"), 214).text


def test_auth_before_tls_refused(tpam):
    """auth-require-tls yes: every AUTH outside TLS is 538 5.7.11 and PAM
    is never called; inside TLS the same account works."""
    env = tpam
    c = env.start()
    r = c.ehlo()
    assert not has_auth(r), r
    check(c.cmd("AUTH PLAIN " + plain_blob("alice", env.users["alice"])), 538, "5.7.11")
    check(c.cmd("AUTH PLAIN"), 538, "5.7.11")              # no 334 either
    check(c.cmd("AUTH LOGIN"), 538, "5.7.11")
    check(c.mail("alice@example.org"), 530, "5.7.0")
    assert env.backend_calls() == 0
    assert auth_events(c.log) == [], c.log
    c.starttls()
    c.ehlo()
    check(c.auth_plain("alice", env.users["alice"]), 235, "2.7.0")
    assert env.backend_calls() == 1
    send_message(c)
    version, cipher = c.sock.version(), c.sock.cipher()[0]
    c.quit()
    c.finish()
    check_tls_delivery(env, c.log, version=version, cipher=cipher)


# ==================================================== implicit TLS failures

@pytest.mark.parametrize("transport", ["socketpair", "tcp"])
def test_plaintext_client_on_implicit_port(tenv, transport):
    """A client speaking SMTP to 465 is dropped: no plaintext reply, nothing
    injected, `tls failed` logged with OpenSSL's reason."""
    session = ("EHLO client.example\r\nAUTH PLAIN %s\r\nMAIL FROM:<alice@example.org>\r\n"
               "RCPT TO:<one@example.net>\r\nDATA\r\nSubject: plain\r\n\r\nhi\r\n.\r\n"
               "QUIT\r\n" % plain_blob("alice", tenv.users["alice"]))
    if transport == "tcp":
        need()
        srv = tenv.tcp(tls="implicit")
        c = srv.connect(greet=False)
    else:
        c = tenv.start(tls="implicit", greet=False)
    c.send(session)
    no_plaintext_reply(read_all(c))
    if transport == "tcp":
        assert srv.wait_log(r"disconnect ip=127\.0\.0\.1 "), srv.log
        log, ip = srv.log, LOCAL
    else:
        assert c.wait_exit(10) == 0
        log, ip = c.log, PEER
    ev = tls_failed(log)
    assert ev["ip"] == ip and ev["reason"].startswith("error:"), log
    assert disconnect(log)["reason"] == "tls-failed"
    assert auth_events(log) == [], log
    tenv.no_calls()


def test_plaintext_after_starttls_220(tenv):
    """A client that goes on in plaintext after the 220 to STARTTLS (or a
    man in the middle adding lines there) only breaks the handshake."""
    c = tenv.start(auth_require_tls="no")
    c.ehlo()
    check(c.cmd("STARTTLS"), 220, "2.0.0")
    c.send("AUTH PLAIN %s\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<one@example.net>\r\n"
           "DATA\r\nSubject: plain\r\n\r\nhi\r\n.\r\nQUIT\r\n"
           % plain_blob("alice", tenv.users["alice"]))
    no_plaintext_reply(read_all(c))
    assert c.wait_exit(10) == 0
    assert tls_failed(c.log)["reason"].startswith("error:"), c.log
    assert disconnect(c.log)["reason"] == "tls-failed"
    assert auth_events(c.log) == [], c.log
    tenv.no_calls()


# ==================================================== handshakes that never finish

@pytest.mark.parametrize("tls,how", [
    ("starttls", "silent"), ("starttls", "drip"), ("starttls", "injected-then-silent"),
    ("implicit", "silent"), ("implicit", "drip"),
])
def test_handshake_never_completed(tenv, tls, how):
    """The handshake is bounded by `timeout` as a whole: a client that sends
    nothing (after STARTTLS and its 220; on the implicit port, not a byte),
    or drips a ClientHello a byte at a time, is dropped, and the process
    exits by itself; nothing is injected."""
    c = tenv.start(tls=tls, timeout=1, auth_require_tls="no",
                   greet=(tls == "starttls"))
    got = b""
    if tls == "starttls":
        c.ehlo()
        extra = ""
        if how == "injected-then-silent":
            extra = ("EHLO x.example\r\nAUTH PLAIN %s\r\nMAIL FROM:<a@b.example>\r\n"
                     "RCPT TO:<v@example.net>\r\nDATA\r\nSubject: evil\r\n\r\n"
                     "evil\r\n.\r\n" % plain_blob("alice", tenv.users["alice"]))
        c.send("STARTTLS\r\n" + extra)
        check(c.reply(), 220, "2.0.0")
        got = c.buf
    t = time.monotonic()
    if how == "drip":
        hello = client_hello()
        for i in range(len(hello)):
            if c.proc.poll() is not None:
                break
            try:
                c.send(hello[i:i + 1])
            except OSError:
                break
            time.sleep(0.2)
            if time.monotonic() - t > 6:
                break
    rc = c.wait_exit(8)
    took = time.monotonic() - t
    assert 0.8 <= took < 5, took
    assert rc == 0
    got += read_all(c, 2)
    no_plaintext_reply(got)
    ev = tls_failed(c.log)
    assert ev["reason"] == "handshake timeout" and ev["ip"] == PEER, c.log
    assert disconnect(c.log)["reason"] == "tls-failed"
    assert auth_events(c.log) == [] and find_events(c.log, "rejected") == [], c.log
    tenv.no_calls()


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_client_leaves_during_handshake(tenv, tls):
    """A ClientHello, then the client is gone: logged, exit at once."""
    c = tenv.start(tls=tls, greet=(tls == "starttls"))
    if tls == "starttls":
        check(c.cmd("STARTTLS"), 220)
    c.send(client_hello())
    time.sleep(0.1)
    c.sock.close()
    assert c.wait_exit(5) == 0
    ev = tls_failed(c.log)
    assert ev["reason"] == "connection closed during handshake" and ev["ip"] == PEER, c.log
    assert disconnect(c.log)["reason"] == "tls-failed"
    tenv.no_calls()


# ==================================================== protocol versions, ciphers

@pytest.mark.parametrize("tls", ["starttls", "implicit"])
@pytest.mark.parametrize("maximum", ["TLSv1", "TLSv1_1"])
def test_old_tls_refused_python(tenv, tls, maximum):
    """TLS 1.0 and 1.1 are refused.  The client really offers them (at
    security level 0): the server's log names the protocol as the reason."""
    ctx = tls_client_context(minimum=ssl.TLSVersion.TLSv1,
                             maximum=getattr(ssl.TLSVersion, maximum))
    c = tenv.start(tls=tls, greet=(tls == "starttls"))
    if tls == "starttls":
        c.ehlo()
        check(c.cmd("STARTTLS"), 220)
    with pytest.raises(ssl.SSLError) as e:
        c.wrap_tls(ctx)
    assert "PROTOCOL_VERSION" in str(e.value) or "protocol version" in str(e.value), e.value
    assert c.wait_exit(10) == 0
    ev = tls_failed(c.log)
    assert "unsupported protocol" in ev["reason"], c.log
    assert disconnect(c.log)["reason"] == "tls-failed"
    tenv.no_calls()


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
@pytest.mark.parametrize("opt", ["-tls1_1", "-tls1"])
def test_old_tls_refused_s_client(tenv, tls, opt):
    need("openssl")
    srv = tenv.tcp(tls=tls)
    args = ["openssl", "s_client", "-connect", "%s:%d" % (LOCAL, srv.port), opt,
            "-cipher", "DEFAULT@SECLEVEL=0", "-brief", "-ign_eof"]
    if tls == "starttls":
        args += ["-starttls", "smtp"]
    r = subprocess.run(args, input=b"EHLO client.example\r\nQUIT\r\n",
                       capture_output=True, timeout=30)
    out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    assert r.returncode != 0, out + err
    assert "CONNECTION ESTABLISHED" not in err and "250" not in out, out + err
    assert srv.wait_log(r"disconnect ip=127\.0\.0\.1 "), srv.log
    assert "unsupported protocol" in tls_failed(srv.log)["reason"], srv.log


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_tls_version_accepted(tenv, version):
    """TLS 1.3 and 1.2 each work end to end and are named as such."""
    v = V13 if version == "TLSv1.3" else V12
    c = tls_session(tenv, tls_client_context(minimum=v, maximum=v))
    assert c.sock.version() == version
    cipher = c.sock.cipher()[0]
    if version == "TLSv1.2":          # the default: ECDHE and AEAD only
        assert cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher), cipher
    send_message(c)
    c.quit()
    c.finish()
    check_tls_delivery(tenv, c.log, version=version, cipher=cipher)


def test_tls_min_version_13(tenv):
    c = tenv.start(tls_min_version="1.3")
    c.ehlo()
    check(c.cmd("STARTTLS"), 220)
    with pytest.raises(ssl.SSLError):
        c.wrap_tls(tls_client_context(maximum=V12))
    assert c.wait_exit(10) == 0
    assert "unsupported protocol" in tls_failed(c.log)["reason"], c.log
    # and a TLS 1.3 client is served
    c = tls_session(tenv, tls_client_context(minimum=V13), tls_min_version="1.3")
    assert c.sock.version() == "TLSv1.3"


def test_tls_min_version_13_implicit(tenv):
    c = tenv.start(tls="implicit", tls_min_version="1.3", greet=False)
    with pytest.raises(ssl.SSLError):
        c.wrap_tls(tls_client_context(maximum=V12))
    assert c.wait_exit(10) == 0
    assert "unsupported protocol" in tls_failed(c.log)["reason"], c.log


CHACHA = "ECDHE-ECDSA-CHACHA20-POLY1305"
AESGCM = "ECDHE-ECDSA-AES256-GCM-SHA384"


def test_tls_ciphers_honoured(tenv):
    """tls-ciphers decides TLS 1.2's cipher: a client preferring AES-GCM
    gets the only one configured, and the header says which."""
    ctx = tls_client_context(maximum=V12, ciphers=AESGCM + ":" + CHACHA)
    c = tls_session(tenv, ctx, tls_ciphers=CHACHA)
    assert c.sock.cipher()[0] == CHACHA
    send_message(c)
    c.quit()
    c.finish()
    check_tls_delivery(tenv, c.log, version="TLSv1.2", cipher=CHACHA)


def test_tls_ciphers_no_shared_cipher(tenv):
    c = tenv.start(tls_ciphers=CHACHA)
    c.ehlo()
    check(c.cmd("STARTTLS"), 220)
    with pytest.raises(ssl.SSLError):
        c.wrap_tls(tls_client_context(maximum=V12, ciphers=AESGCM))
    assert c.wait_exit(10) == 0
    assert "no shared cipher" in tls_failed(c.log)["reason"], c.log


@pytest.mark.parametrize("cipher,ok", [
    ("ECDHE-ECDSA-AES128-SHA", False),          # CBC: not AEAD
    ("ECDHE-ECDSA-AES256-SHA384", False),
    ("ECDHE-ECDSA-AES128-GCM-SHA256", True),
    (CHACHA, True),
])
def test_default_tls12_ciphers_ecdhe_aead_only(tenv, cipher, ok):
    ctx = tls_client_context(minimum=V12, maximum=V12, ciphers=cipher + ":@SECLEVEL=0")
    c = tenv.start()
    c.ehlo()
    check(c.cmd("STARTTLS"), 220)
    if ok:
        c.wrap_tls(ctx)
        assert c.sock.cipher()[0] == cipher
        check(c.cmd("NOOP"), 250)
    else:
        with pytest.raises(ssl.SSLError):
            c.wrap_tls(ctx)
        assert c.wait_exit(10) == 0
        assert "no shared cipher" in tls_failed(c.log)["reason"], c.log


# ==================================================== vanishing mid-DATA

@pytest.mark.parametrize("how", ["close", "reset", "close_notify"])
@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_disconnect_mid_data(tenv, how, tls):
    """A client that goes away inside DATA (no close_notify: a plain close
    or a TCP reset; or a clean TLS close) gets nothing delivered."""
    need()
    srv = tenv.tcp(tls=tls)
    c = srv.connect(greet=False)
    if tls == "implicit":
        c.wrap_tls()
        c.greeting()
    else:
        c.greeting()
        c.ehlo()
        c.starttls()
    c.ehlo()
    check(c.auth_plain("alice", tenv.users["alice"]), 235)
    check(c.mail("alice@example.org"), 250)
    check(c.rcpt("one@example.net"), 250)
    check(c.cmd("DATA"), 354)
    c.send(b"Subject: cut off\r\n\r\nsome of the message\r\n" + b"x" * 5000 + b"\r\n")
    time.sleep(0.2)
    if how == "reset":
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.sock.close()
    elif how == "close":
        c.sock.close()                 # SSLSocket.close() sends no close_notify
    else:
        c.sock = c.sock.unwrap()
        c.sock.close()
    assert srv.wait_log(r"disconnect ip=127\.0\.0\.1 "), srv.log
    assert srv.wait_log(r"Child \d+ died with code 0"), srv.log
    d = disconnect(srv.log)
    assert d["messages"] == "0" and d["user"] == "alice", srv.log
    assert d["reason"] == "eof-in-data", srv.log
    assert find_events(srv.log, "queued") == [], srv.log
    tenv.no_calls()


# ==================================================== certificate and key problems

BROKEN = {
    # name: (config overrides, words the log must contain)
    "unreadable-key": ({"tls-key": "unreadable.key"}, ["tls-key", "unreadable.key"]),
    "key-mismatch": ({"tls-key": "other.key"}, ["other.key", "mismatch"]),
    "garbage-key": ({"tls-key": "garbage.key"}, ["tls-key", "garbage.key"]),
    "missing-cert": ({"tls-cert": "nonexistent.pem"}, ["tls-cert", "nonexistent.pem"]),
    "no-cipher": ({"tls-ciphers": "NOSUCHCIPHER"}, ["tls-ciphers"]),
}


def broken_conf(env, name):
    over, words = BROKEN[name]
    conf = {}
    for k, v in over.items():
        conf[k] = env.pki.path(v) if k in ("tls-key", "tls-cert") else v
    return conf, words


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_unusable_key_starttls(tpam, name):
    """The key or certificate cannot be used: no STARTTLS in EHLO, no AUTH,
    STARTTLS 454 4.7.0, the log says why, and the session goes on."""
    env = tpam
    conf, words = broken_conf(env, name)
    c = env.start(conf)
    r = c.ehlo()
    assert "STARTTLS" not in ext_lines(r) and not has_auth(r), r
    assert "STARTTLS" not in check(c.cmd("HELP"), 214).text
    r = check(c.cmd("STARTTLS"), 454, "4.7.0")
    assert r.raw == b"454 4.7.0 TLS not available due to local problem\r\n", r
    check(c.cmd("AUTH PLAIN " + plain_blob("alice", env.users["alice"])), 538, "5.7.11")
    check(c.mail("alice@example.org"), 530, "5.7.0")
    check(c.cmd("NOOP"), 250)
    c.quit()
    assert c.finish() == 0
    ev = [e for e in find_events(c.log, "tls") if e.startswith("tls unavailable: ")]
    assert len(ev) == 1, c.log
    for w in words:
        assert w in ev[0], (w, ev[0])
    assert env.backend_calls() == 0
    env.no_calls()


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_unusable_key_implicit(tenv, name):
    """Implicit TLS that cannot start: not a byte written, exit 78."""
    conf, words = broken_conf(tenv, name)
    conf["tls"] = "implicit"
    c = tenv.start(conf, greet=False)
    assert read_all(c) == b""
    assert c.wait_exit(10) == 78
    ev = [e for e in find_events(c.log, "tls") if e.startswith("tls unavailable: ")]
    assert len(ev) == 1 and all(w in ev[0] for w in words), c.log
    assert disconnect(c.log)["reason"] == "tls-unavailable"
    tenv.no_calls()


def test_implicit_config_error_writes_nothing(tenv):
    c = tenv.start(tls="implicit", raw="nosuchkey yes\n", greet=False)
    assert read_all(c) == b""
    assert c.wait_exit(10) == 78
    assert disconnect(c.log)["reason"] == "config-error"


# ==================================================== the certificate chain

@pytest.mark.parametrize("cert,complete", [("chain.pem", True), ("leaf.pem", False)])
def test_chain_served_whole(tenv, cert, complete):
    """A client trusting only the root verifies leaf + intermediate (and
    cannot when tls-cert holds the leaf alone: the test can fail)."""
    ctx = tls_client_context(cafile=tenv.pki.path("ca.pem"))
    c = tenv.start(tls_cert=tenv.pki.path(cert))
    c.ehlo()
    check(c.cmd("STARTTLS"), 220)
    if complete:
        s = c.wrap_tls(ctx, server_hostname=HOSTNAME)
        assert dict(x[0] for x in s.getpeercert()["subject"])["commonName"] == HOSTNAME
        c.ehlo()
    else:
        with pytest.raises(ssl.SSLCertVerificationError):
            c.wrap_tls(ctx, server_hostname=HOSTNAME)


def test_chain_showcerts(tenv):
    need("openssl")
    srv = tenv.tcp(tls="implicit")
    r = subprocess.run(["openssl", "s_client", "-connect", "%s:%d" % (LOCAL, srv.port),
                        "-showcerts", "-CAfile", tenv.pki.path("ca.pem"),
                        "-verify_return_error", "-verify_hostname", HOSTNAME],
                       input=b"QUIT\r\n", capture_output=True, timeout=30)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out + r.stderr.decode(errors="replace")
    served = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    assert served == tenv.pki.pem_certs("chain.pem"), out
    assert len(served) == 2
    assert "Verify return code: 0 (ok)" in out, out


# ==================================================== smtpauthd -t

def t_check(env, **over):
    conf = {k.replace("_", "-"): (env.pki.path(v) if k in ("tls_cert", "tls_key") else v)
            for k, v in over.items()}
    path = env.write_config(conf)
    r = env.run(["-t", "-f", path])
    return r.returncode, r.stderr.decode(errors="replace")


def test_t_good_cert(tenv):
    # The harness's sender-policy any warns: the default does not.
    rc, err = t_check(tenv, sender_policy="own",
                      sender_domains="example.org")
    assert rc == 0, err
    # Not counted: the host's missing /dev/log (test_firstday's).
    warnings = [ln for ln in err.splitlines()
                if "warning" in ln and "warning: /dev/log:" not in ln]
    assert "configuration ok" in err and warnings == [], err


def test_t_key_mismatch(tenv):
    rc, err = t_check(tenv, tls_key="other.key")
    assert rc == 78, err
    assert re.search(r"^smtpauthd: .*other\.key.*(does not match|mismatch)", err, re.M), err


def test_t_expired_cert(tenv):
    rc, err = t_check(tenv, tls_cert="expired.pem")
    assert rc == 78, err
    assert re.search(r"^smtpauthd: .*expired\.pem has expired", err, re.M), err


def test_t_cert_expires_soon(tenv):
    rc, err = t_check(tenv, tls_cert="soon.pem")
    assert rc == 0, err
    assert re.search(r"^smtpauthd: warning: tls-cert \S*soon\.pem expires in [45] days$",
                     err, re.M), err


def test_t_missing_cert(tenv):
    rc, err = t_check(tenv, tls_cert="nonexistent.pem")
    assert rc == 78, err
    assert re.search(r"^smtpauthd: .*nonexistent\.pem", err, re.M), err


def test_t_unreadable_key(tenv):
    rc, err = t_check(tenv, tls_key="unreadable.key")
    assert rc == 78, err
    assert re.search(r"^smtpauthd: .*unreadable\.key", err, re.M), err


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_t_key_readable_by_others(tenv, mode):
    """A private key that group or others may read is an error, as for
    the password file (Let's Encrypt's privkey.pem is 0600)."""
    name = "mode%o.key" % mode
    shutil.copy(tenv.pki.path("leaf.key"), tenv.pki.path(name))
    os.chmod(tenv.pki.path(name), mode)
    rc, err = t_check(tenv, tls_key=name)
    assert rc == 78, err
    assert re.search(r"^smtpauthd: tls-key \S*%s: group or others have "
                     r"access \(mode 0%o\)" % (re.escape(name), mode),
                     err, re.M), err
    assert "chmod 600" in err, err


def test_t_no_cipher(tenv):
    rc, err = t_check(tenv, tls_ciphers="NOSUCHCIPHER")
    assert rc == 78, err
    assert "tls-ciphers" in err, err


def test_expired_cert_still_served(tenv):
    """At a connection an expired certificate is presented all the same
    (with a warning in the log); a client that does not check it works."""
    c = tls_session(tenv, tls_cert=tenv.pki.path("expired.pem"))
    check(c.cmd("NOOP"), 250)
    assert re.search(r"tls-cert \S*expired\.pem has expired", c.log), c.log


def test_exit_skips_openssl_cleanup(tenv):
    """The process does not run OpenSSL's exit-time cleanup
    (OPENSSL_INIT_NO_ATEXIT): one that a signal stopped half-way through it
    was left with freed lists holding live blocks, which check-valgrind
    reported as a definite leak (one CI run, one process in 1690).  gdb
    breaks on OPENSSL_cleanup in the monitor through a whole session; the
    breakpoint on OPENSSL_init_ssl shows that breakpoints in libcrypto and
    libssl are hit at all."""
    if shutil.which("gdb") is None:
        pytest.skip("gdb not installed")
    with open(tenv.stage.binary, "rb") as f:
        if f.read(4) != b"\x7fELF":
            pytest.skip("the binary under test is a wrapper (check-valgrind)")
    path = tenv.write_config()
    inp = tenv.write("input", "EHLO client.example\r\nQUIT\r\n")
    script = tenv.write("gdb-script", "\n".join([
        "set debuginfod enabled off",
        "set breakpoint pending on",
        "break OPENSSL_init_ssl",
        "commands 1", "continue", "end",
        "break OPENSSL_cleanup",
        "run -d -f %s < %s" % (path, inp),
        "bt 8", ""]))
    environ = tenv.environ()
    # LeakSanitizer cannot work under ptrace (the -asan build).
    environ["ASAN_OPTIONS"] = ":".join(
        o for o in (environ.get("ASAN_OPTIONS"), "detect_leaks=0") if o)
    kw = drop_kwargs() if IS_ROOT else {}
    r = subprocess.run(["gdb", "-nx", "-batch", "-x", script,
                        "--args", tenv.stage.binary],
                       capture_output=True, env=environ, timeout=120, **kw)
    out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
    assert re.search(r"^Breakpoint 1, .*OPENSSL_init_ssl", out, re.M), out
    assert "221 2.0.0" in out, out
    assert not re.search(r"^Breakpoint 2, ", out, re.M), out
    assert re.search(r"\[Inferior 1 \(process \d+\) exited normally\]", out), out
