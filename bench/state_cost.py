#!/usr/bin/python3
"""state_cost.py - what the state store costs per AUTH.

The shipped binary (../smtpauthd) on loopback through
systemd-socket-activate, auth file, one configuration each:
  none      state none (nothing remembered: the baseline)
  sqlite    state sqlite:PATH, every limit on (high enough never to block)
  contended the same store while 8 processes (tests/state-probe) write to
            it without pause
N rounds; each round times one connection per variant, alternating, so
that drift hits all alike: connect, EHLO, AUTH PLAIN with a wrong password
(a new one each time: each is a new member of three sets) or the right
one, QUIT, with auth-failure-delay 0.  Prints p50 and p99 (ms) and the ratios of p50 to
none, and the store's size per member counted.
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
TOP = os.path.dirname(HERE)
BINARY = os.path.join(TOP, "smtpauthd")
PROBE = os.path.join(TOP, "tests", "state-probe")
N = int(os.environ.get("N", "200"))
WRITERS = 8


def auth(port, n, right, user):
    password = b"x" if right else b"wrong-%d" % n
    blob = base64.b64encode(b"\0" + user.encode() + b"\0" + password)
    with socket.create_connection(("127.0.0.1", port)) as s:
        f = s.makefile("rb")
        read_reply(f)
        s.sendall(b"EHLO bench\r\n")
        read_reply(f)
        s.sendall(b"AUTH PLAIN " + blob + b"\r\n")
        r = read_reply(f)
        if not r.startswith(b"235" if right else b"535"):
            raise SystemExit(f"unexpected reply {r!r}")
        s.sendall(b"QUIT\r\n")
        read_reply(f)


def write_conf(tmp, name, state):
    conf = f"{tmp}/{name}.conf"
    with open(conf, "w") as fp:
        fp.write(f"hostname bench.example\nauth file\npasswd-file "
                 f"{tmp}/passwd\nauth-require-tls no\nsendmail /bin/true\n"
                 f"auth-failure-delay 0\nmax-auth-failures 3\n"
                 f"state {state}\nauth-limit-ip 10000/1d\n"
                 f"auth-limit-net 10000/1d\nauth-limit-user 10000/1d\n")
    return conf


def main():
    if not os.access(PROBE, os.X_OK):
        raise SystemExit("make tests/state-probe first")
    tmp = tempfile.mkdtemp(prefix="smtpauthd-bench.")
    os.chmod(tmp, 0o755)
    h = subprocess.run([BINARY, "-H"], input="x\n", capture_output=True,
                       text=True, check=True).stdout.strip()
    # A password-file user must be an account too (sendmail runs as it).
    user = "nobody" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    with open(f"{tmp}/passwd", "w") as fp:
        fp.write(f"{user}:{h}\n")
    os.chmod(f"{tmp}/passwd", 0o600)
    quiet = f"{tmp}/quiet.db"
    busy = f"{tmp}/busy.db"
    variants = {
        "none": write_conf(tmp, "none", "none"),
        "sqlite": write_conf(tmp, "sqlite", "sqlite:" + quiet),
        "contended": write_conf(tmp, "contended", "sqlite:" + busy),
    }
    servers = {v: serve(BINARY, c, "-o", "privsep-user=nobody")
               for v, c in variants.items()}
    subprocess.run([PROBE, "sqlite:" + busy, "count", "x"], check=True,
                   capture_output=True)
    writers = [subprocess.Popen(
        ["sh", "-c", f"i=0; while :; do {PROBE} sqlite:{busy} mark bg-$i "
         f"w{w} 50 >/dev/null || exit 1; i=$((i+1)); done"])
        for w in range(WRITERS)]
    kinds = ("failed", "ok")
    times = {(v, k): [] for v in servers for k in kinds}
    try:
        for n in range(N):
            for k in kinds:
                for v, (_, port) in servers.items():
                    t0 = time.perf_counter()
                    auth(port, n, k == "ok", user)
                    times[(v, k)].append((time.perf_counter() - t0) * 1000)
    finally:
        for w in writers:
            w.kill()
            w.wait()
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()
    print(f"one AUTH per connection, {N} each (ms; ratios of p50 to none); "
          f"contended: {WRITERS} writers at once")
    for k in kinds:
        base = pct(times[("none", k)], 50)
        for v in servers:
            t = times[(v, k)]
            print(f"  {k:6} {v:10} p50 {pct(t, 50):7.2f}  "
                  f"p99 {pct(t, 99):7.2f}  x{pct(t, 50) / base:.2f}")
    size = os.path.getsize(quiet)
    print(f"  store: {size} octets for {3 * N} members "
          f"({size / (3 * N):.0f} octets each, indexes included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
