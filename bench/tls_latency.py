#!/usr/bin/python3
"""tls_latency.py - how long the first reply after the TLS handshake takes.

For each server variant and TLS version, N connections over loopback to
`smtpauthd -o tls=starttls` (through systemd-socket-activate): a handshake
by STARTTLS, then EHLO, and the time from sending EHLO to having the
whole reply.  It
prints p50 and p99 in milliseconds per row, and each row's p50 as a ratio
to the shipped build's in the same run.  Also: connections per second with
and without TLS (whole sessions: connect, greeting, EHLO, QUIT).

The variants (built by bench/Makefile from the same sources):
  shipped            no session tickets, TCP_NODELAY, TCP_QUICKACK after
                     the handshake
  no-quickack        no tickets, TCP_NODELAY
  tickets            sends TLS 1.3 session tickets, TCP_NODELAY
  openssl-defaults   tickets, Nagle on: what a server doing nothing gets
"""
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import pct, read_reply, serve

HERE = os.path.dirname(os.path.abspath(__file__))
N = int(os.environ.get("N", "200"))


def ehlo_after_handshake(port, version):
    """STARTTLS, as a submission client on 587 does it; the time from the
    end of the handshake to the whole reply of the first EHLO in TLS."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    with socket.create_connection(("127.0.0.1", port)) as raw:
        f = raw.makefile("rb")
        read_reply(f)                           # 220
        raw.sendall(b"EHLO bench\r\n")
        read_reply(f)
        raw.sendall(b"STARTTLS\r\n")
        read_reply(f)
        with ctx.wrap_socket(raw) as s:
            f = s.makefile("rb")
            t0 = time.perf_counter()
            s.sendall(b"EHLO bench\r\n")
            read_reply(f)
            elapsed = time.perf_counter() - t0
            s.sendall(b"QUIT\r\n")
            read_reply(f)
    return elapsed * 1000


def session(port, tls):
    with socket.create_connection(("127.0.0.1", port)) as raw:
        s = raw
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(raw)
        f = s.makefile("rb")
        read_reply(f)
        s.sendall(b"EHLO bench\r\n")
        read_reply(f)
        s.sendall(b"QUIT\r\n")
        read_reply(f)


def main():
    tmp = tempfile.mkdtemp(prefix="smtpauthd-bench.")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                    f"{tmp}/key.pem", "-out", f"{tmp}/cert.pem", "-days",
                    "2", "-subj", "/CN=bench.example"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conf = f"{tmp}/smtpauthd.conf"
    with open(conf, "w") as fp:
        fp.write(f"hostname bench.example\ntls-cert {tmp}/cert.pem\n"
                 f"tls-key {tmp}/key.pem\nauth file\n"
                 f"passwd-file {tmp}/passwd\n")
    variants = ["shipped", "no-quickack", "tickets", "openssl-defaults"]
    rows = []
    for variant in variants:
        binary = os.path.join(HERE, "build", f"smtpauthd-{variant}")
        proc, port = serve(binary, conf, "-o", "tls=starttls")
        try:
            for name, version in (("TLSv1.3", ssl.TLSVersion.TLSv1_3),
                                  ("TLSv1.2", ssl.TLSVersion.TLSv1_2)):
                ms = [ehlo_after_handshake(port, version) for _ in range(N)]
                rows.append((variant, name, pct(ms, 50), pct(ms, 99)))
        finally:
            proc.terminate()
            proc.wait()
    base = {v: p50 for (var, v, p50, _) in rows if var == "shipped"}
    print(f"EHLO reply after the handshake, {N} connections each "
          "(ms; ratio = p50 / shipped p50 of the same TLS version)")
    for variant, name, p50, p99 in rows:
        print(f"  {variant:17} {name}  p50 {p50:7.3f}  p99 {p99:7.3f}  "
              f"ratio {p50 / base[name]:6.1f}")

    shipped = os.path.join(HERE, "build", "smtpauthd-shipped")
    rates = {}
    for tls in ("none", "implicit"):
        proc, port = serve(shipped, conf, "-o", f"tls={tls}")
        try:
            t0 = time.perf_counter()
            for _ in range(N):
                session(port, tls != "none")
            rates[tls] = N / (time.perf_counter() - t0)
        finally:
            proc.terminate()
            proc.wait()
    print(f"whole sessions per second (connect, 220, EHLO, QUIT; one "
          f"client): plain {rates['none']:.0f}, implicit TLS "
          f"{rates['implicit']:.0f}, ratio {rates['none'] / rates['implicit']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
