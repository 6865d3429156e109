#!/usr/bin/python3
"""privsep_cost.py - what privilege separation costs per connection.

Three builds of the shipped objects (bench/Makefile, bench/seams.c):
"privsep" (the program: a monitor and a confined session per connection,
the password check in a child of the monitor), "auth-inline"
(BENCH_AUTH_INLINE: auth_bounded wrapped, the check in the monitor itself,
with no bound on its time) and "single" (BENCH_SINGLE_PROCESS: privsep_run
wrapped, the whole connection in one process, as before the split).  Each serves on
loopback through systemd-socket-activate, auth file, a sendmail that only
reads its input.  N rounds; each round times one connection to each build,
alternating, so that drift on a busy machine hits both alike:
  greeting   connect, 220, EHLO, QUIT
  message    connect, EHLO, AUTH PLAIN, MAIL, RCPT, DATA (1 KiB), QUIT
Prints p50 and p99 in milliseconds and the ratios of p50: privsep/single
and privsep/auth-inline.
Run as root it includes the user switch and chroot; otherwise not.
"""
import base64
import os
import pwd
import socket
import subprocess
import sys
import tempfile
import time

from benchlib import pct, read_reply, serve

HERE = os.path.dirname(os.path.abspath(__file__))
N = int(os.environ.get("N", "300"))
VARIANTS = ("single", "auth-inline", "privsep")


def greeting(port, user, password):
    with socket.create_connection(("127.0.0.1", port)) as s:
        f = s.makefile("rb")
        read_reply(f)
        s.sendall(b"EHLO bench\r\n")
        read_reply(f)
        s.sendall(b"QUIT\r\n")
        read_reply(f)


def message(port, user, password):
    blob = base64.b64encode(b"\0" + user.encode() + b"\0" +
                            password.encode())
    with socket.create_connection(("127.0.0.1", port)) as s:
        f = s.makefile("rb")
        read_reply(f)
        for line in (b"EHLO bench", b"AUTH PLAIN " + blob,
                     b"MAIL FROM:<" + user.encode() + b"@bench.example>",
                     b"RCPT TO:<rcpt@bench.example>", b"DATA"):
            s.sendall(line + b"\r\n")
            r = read_reply(f)
            if r[:1] not in (b"2", b"3"):
                raise SystemExit(f"unexpected reply {r!r} to {line!r}")
        s.sendall(b"Subject: bench\r\n\r\n" + (b"x" * 78 + b"\r\n") * 13 +
                  b".\r\n")
        r = read_reply(f)
        if not r.startswith(b"250"):
            raise SystemExit(f"message refused: {r!r}")
        s.sendall(b"QUIT\r\n")
        read_reply(f)


def main():
    tmp = tempfile.mkdtemp(prefix="smtpauthd-bench.")
    os.chmod(tmp, 0o755)
    root = os.geteuid() == 0
    user = "nobody" if root else pwd.getpwuid(os.geteuid()).pw_name
    password = "bench-password"
    h = subprocess.run([os.path.join(HERE, "build", "smtpauthd-privsep"),
                        "-H"], input=password + "\n", capture_output=True,
                       text=True, check=True).stdout.strip()
    with open(f"{tmp}/passwd", "w") as fp:
        fp.write(f"{user}:{h}\n")
    os.chmod(f"{tmp}/passwd", 0o600)
    with open(f"{tmp}/sendmail", "w") as fp:
        fp.write("#!/bin/sh\nexec cat >/dev/null\n")
    os.chmod(f"{tmp}/sendmail", 0o755)
    conf = f"{tmp}/smtpauthd.conf"
    with open(conf, "w") as fp:
        fp.write(f"hostname bench.example\nauth file\npasswd-file "
                 f"{tmp}/passwd\nauth-require-tls no\nsendmail "
                 f"{tmp}/sendmail\n")
    servers = {v: serve(os.path.join(HERE, "build", f"smtpauthd-{v}"), conf)
               for v in VARIANTS}
    try:
        times = {(v, k): [] for v in servers for k in ("greeting", "message")}
        for _ in range(N):
            for kind, fn in (("greeting", greeting), ("message", message)):
                for v, (_, port) in servers.items():
                    t0 = time.perf_counter()
                    fn(port, user, password)
                    times[(v, kind)].append(
                        (time.perf_counter() - t0) * 1000)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()
    print(f"per connection, {N} each, {'as root' if root else 'not root'} "
          "(ms; ratios of p50)")
    for kind in ("greeting", "message"):
        for v in VARIANTS:
            t = times[(v, kind)]
            print(f"  {kind:8} {v:11} p50 {pct(t, 50):7.2f}  "
                  f"p99 {pct(t, 99):7.2f}")
        p50 = {v: pct(times[(v, kind)], 50) for v in VARIANTS}
        print(f"  {kind:8} privsep/single {p50['privsep'] / p50['single']:.2f}"
              f"  privsep/auth-inline "
              f"{p50['privsep'] / p50['auth-inline']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
