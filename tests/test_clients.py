"""Real clients over TCP (systemd-socket-activate --inetd -a): Python's
smtplib, swaks, curl and msmtp each send one authenticated message end to
end; the capture sendmail shows what arrived."""

import os
import shutil
import smtplib
import subprocess

import pytest

from smtptest import HOSTNAME, find_events, kv, received_re

MSG = (b"From: alice@example.org\r\nTo: one@example.net\r\nSubject: real client\r\n"
       b"\r\nfirst line\r\n.leading dot\r\n..two dots\r\nlast line\r\n")
MSG_SPOOLED = MSG.replace(b"\r\n", b"\n")


def need(prog):
    if shutil.which(prog) is None:
        pytest.skip("%s not installed" % prog)
    if shutil.which("systemd-socket-activate") is None:
        pytest.skip("systemd-socket-activate not installed")


def check_delivery(env, srv, rcpts, sender="alice@example.org", user="alice",
                   body=MSG_SPOOLED, bodies=None):
    assert srv.wait_log(r"disconnect ip=127\.0\.0\.1 "), srv.log
    call = env.one_call()
    assert call.argv == [env.sendmail, "-i", "-f", sender, "--"] + rcpts
    hdr, rest = call.received(), call.body()
    m = received_re(ip="127.0.0.1", user=user,
                    rcpt=rcpts[0] if len(rcpts) == 1 else None).match(hdr.decode())
    assert m, hdr
    if bodies is not None:
        assert rest in bodies, rest
    else:
        assert rest == body, rest
    q = [kv(e) for e in find_events(srv.log, "queued")]
    assert len(q) == 1 and q[0]["ip"] == "127.0.0.1" and q[0]["user"] == user, srv.log


# ---------------------------------------------------------------- smtplib

@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_smtplib(env, mech):
    need("systemd-socket-activate")
    srv = env.tcp()
    with smtplib.SMTP("127.0.0.1", srv.port, local_hostname="client.example",
                      timeout=15) as s:
        s.ehlo()
        assert s.has_extn("auth") and "PLAIN" in s.esmtp_features["auth"]
        assert s.has_extn("pipelining") and s.has_extn("8bitmime")
        assert s.has_extn("size")
        if mech == "PLAIN":
            s.login("alice", env.users["alice"])
        else:
            s.user, s.password = "alice", env.users["alice"]
            code, _ = s.auth("LOGIN", s.auth_login)
            assert code == 235
        refused = s.sendmail("alice@example.org", ["one@example.net",
                                                   "two@example.net"], MSG)
        assert refused == {}
    check_delivery(env, srv, ["one@example.net", "two@example.net"])


def test_smtplib_wrong_password(env):
    need("systemd-socket-activate")
    srv = env.tcp()
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=15) as s:
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login("alice", "wrong")
        assert e.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPSenderRefused) as e2:
            s.sendmail("alice@example.org", ["one@example.net"], MSG)
        assert e2.value.smtp_code == 530
    env.no_calls()


def test_smtplib_pam_over_tcp(pam_env):
    """pam_wrapper's variables travel through systemd-socket-activate -E."""
    need("systemd-socket-activate")
    env = pam_env
    srv = env.tcp()
    with smtplib.SMTP("127.0.0.1", srv.port, local_hostname="client.example",
                      timeout=15) as s:
        s.login("bob", "Bob-Pw-2")
        s.sendmail("bob@example.org", ["one@example.net"], MSG)
    check_delivery(env, srv, ["one@example.net"], sender="bob@example.org", user="bob")
    assert env.backend_calls() == 1
    assert "rhost=127.0.0.1" in env.pam_lines()[0]


def test_tcp_peer_wins_over_remote_addr(env):
    need("systemd-socket-activate")
    srv = env.tcp(environ={"REMOTE_ADDR": "192.0.2.99"})
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=15) as s:
        s.noop()
    assert srv.wait_log(r"disconnect "), srv.log
    ev = find_events(srv.log, "connect")
    assert len(ev) == 1 and kv(ev[0])["ip"] == "127.0.0.1", srv.log


def test_tcp_two_connections_at_once(env):
    need("systemd-socket-activate")
    srv = env.tcp()
    a = srv.connect()
    b = srv.connect()
    for c, r in ((a, "a@example.net"), (b, "b@example.net")):
        c.login("alice", users=env.users)
    from smtptest import check
    check(b.transaction(rcpts=["b@example.net"]), 250)
    check(a.transaction(rcpts=["a@example.net"]), 250)
    a.quit()
    b.quit()
    assert sorted(x.rcpts()[0] for x in env.calls()) == ["a@example.net", "b@example.net"]


# ---------------------------------------------------------------- swaks

@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_swaks(env, mech):
    need("swaks")
    srv = env.tcp()
    msgfile = env.write("msg.eml", MSG)
    r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(srv.port),
                        "--helo", "client.example",
                        "--auth", mech, "--auth-user", "alice",
                        "--auth-password", env.users["alice"],
                        "--from", "alice@example.org", "--to", "one@example.net",
                        "--data", "@" + msgfile, "--timeout", "15"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout.decode(errors="replace")
    # swaks ends the data with one more CRLF of its own
    check_delivery(env, srv, ["one@example.net"],
                   bodies=(MSG_SPOOLED, MSG_SPOOLED + b"\n"))


def test_swaks_wrong_password(env):
    need("swaks")
    srv = env.tcp()
    r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(srv.port),
                        "--auth", "PLAIN", "--auth-user", "alice",
                        "--auth-password", "wrong", "--from", "alice@example.org",
                        "--to", "one@example.net", "--timeout", "15"],
                       capture_output=True, timeout=60)
    assert r.returncode != 0
    assert b"535 5.7.8" in r.stdout, r.stdout
    env.no_calls()


# ---------------------------------------------------------------- curl

@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_curl(env, mech):
    need("curl")
    srv = env.tcp()
    msgfile = env.write("msg.eml", MSG)
    r = subprocess.run(["curl", "-sS", "--max-time", "30",
                        "--url", "smtp://127.0.0.1:%d/client.example" % srv.port,
                        "--user", "alice:" + env.users["alice"],
                        "--login-options", "AUTH=" + mech,
                        "--mail-from", "alice@example.org",
                        "--mail-rcpt", "one@example.net",
                        "--mail-rcpt", "two@example.net",
                        "--upload-file", msgfile],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    check_delivery(env, srv, ["one@example.net", "two@example.net"])


def test_curl_wrong_password(env):
    need("curl")
    srv = env.tcp()
    msgfile = env.write("msg.eml", MSG)
    r = subprocess.run(["curl", "-sS", "--max-time", "30",
                        "--url", "smtp://127.0.0.1:%d/client.example" % srv.port,
                        "--user", "alice:wrong",
                        "--mail-from", "alice@example.org",
                        "--mail-rcpt", "one@example.net",
                        "--upload-file", msgfile],
                       capture_output=True, timeout=60)
    assert r.returncode == 67, r     # CURLE_LOGIN_DENIED
    env.no_calls()


# ---------------------------------------------------------------- msmtp

@pytest.mark.parametrize("mech", ["plain", "login"])
def test_msmtp(env, mech):
    need("msmtp")
    srv = env.tcp()
    conf = os.path.join(env.dir, "msmtprc")
    with open(conf, "w") as f:
        f.write("defaults\n"
                "account test\n"
                "host 127.0.0.1\n"
                "port %d\n"
                "domain client.example\n"
                "tls off\n"
                "auth %s\n"
                "user alice\n"
                "password %s\n"
                "from alice@example.org\n"
                "timeout 15\n"
                "account default : test\n" % (srv.port, mech, env.users["alice"]))
    os.chmod(conf, 0o600)
    r = subprocess.run(["msmtp", "-C", conf, "one@example.net"], input=MSG,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    # msmtp adds Date: and Message-ID: in front
    call = env.one_call()
    added = call.body()[:-len(MSG_SPOOLED)]
    assert all(l.split(b":")[0] in (b"Date", b"Message-ID")
               for l in added.splitlines()), added
    check_delivery(env, srv, ["one@example.net"], bodies=(added + MSG_SPOOLED,))
