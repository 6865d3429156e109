#!/usr/bin/python3
"""checks_cost.py - what the per-command checks cost per message (issue 12).

The shipped binary (../smtpauthd) as it runs for real - privilege
separation, the monitor asked at MAIL, at each RCPT and at the end of DATA
- on loopback through systemd-socket-activate, auth file, a sendmail
that only reads its input (sh and cat: the same in every point).  Points:
  off        sender-policy any, both user limits 0, state none: only what
             every message always costs, the account checked again before
             it included
  store      the same with state sqlite:PATH: the store opened at MAIL and
             at the end of DATA (suspension), no limit counted
  on         sender-policy own (sender-domains that match), both user
             limits on, high enough never to block, state sqlite:PATH
  on-noacct  "on" without the account check before the message
             (bench/build/smtpauthd-no-account-check: bench/seams.c answers
             it at once), to tell that check's share
  none       "off" without that check either: no per-message check at all
In every point the AUTH limits (auth-limit-*) are off (auth-limit-exempt
takes in loopback): their store work is per AUTH, state_cost.py's.
N rounds; each round times one connection per point, in an order that
turns by one each round, so that drift on a busy machine hits all alike:
connect, EHLO, AUTH PLAIN, MAIL, 10 RCPT, DATA (1 KiB), QUIT, each reply
read before the next command.  Prints per point the p50 and p99 of wall
time (ms) and the ratio of p50 to "off" and to "none"; then the server's
CPU per session: user+system time of every process of the connections
(monitor, session, the password and account checks, sendmail), from the
children's times systemd-socket-activate collects as it reaps them, taken
per block of rounds, the median of the blocks' means.
"""
import base64
import os
import pwd
import socket
import subprocess
import sys
import tempfile
import time

from benchlib import children_cpu, pct, read_reply, serve

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
BINARY = os.path.join(TOP, "smtpauthd")
NOACCT = os.path.join(HERE, "build", "smtpauthd-no-account-check")
N = int(os.environ.get("N", "300"))
BLOCK = int(os.environ.get("BLOCK", "25"))
RCPTS = 10
POINTS = ("none", "off", "store", "on", "on-noacct")


def session(port, user, blob):
    with socket.create_connection(("127.0.0.1", port)) as s:
        f = s.makefile("rb")
        read_reply(f)
        lines = [b"EHLO bench", b"AUTH PLAIN " + blob,
                 b"MAIL FROM:<" + user.encode() + b"@bench.example>"]
        lines += [b"RCPT TO:<r%d@dest.example>" % i for i in range(RCPTS)]
        for line in lines + [b"DATA"]:
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


def write_conf(tmp, name, checks, state):
    conf = f"{tmp}/{name}.conf"
    if checks:
        rules = ("sender-policy own\nsender-domains bench.example\n"
                 "user-recipient-limit 100000/1h\n"
                 "user-message-limit 100000/1h\n")
    else:
        rules = ("sender-policy any\nuser-recipient-limit 0\n"
                 "user-message-limit 0\n")
    with open(conf, "w") as fp:
        fp.write(f"hostname bench.example\nauth file\npasswd-file "
                 f"{tmp}/passwd\nauth-require-tls no\n"
                 f"sendmail {tmp}/sendmail\n"
                 f"state {state}\nauth-limit-exempt 127.0.0.0/8\n{rules}")
    return conf



def main():
    if os.geteuid() != 0:
        raise SystemExit("run as root: the program as it runs for real "
                         "(user switch, chroot)")
    if not os.access(NOACCT, os.X_OK):
        raise SystemExit("make -C bench build/smtpauthd-no-account-check "
                         "first")
    tmp = tempfile.mkdtemp(prefix="smtpauthd-bench.")
    os.chmod(tmp, 0o755)
    # A password-file user must be an account too (sendmail runs as it).
    user = "nobody"
    password = "bench-password"
    h = subprocess.run([BINARY, "-H"], input=password + "\n",
                       capture_output=True, text=True, check=True
                       ).stdout.strip()
    with open(f"{tmp}/passwd", "w") as fp:
        fp.write(f"{user}:{h}\n")
    os.chmod(f"{tmp}/passwd", 0o600)
    with open(f"{tmp}/sendmail", "w") as fp:
        fp.write("#!/bin/sh\nexec cat >/dev/null\n")
    os.chmod(f"{tmp}/sendmail", 0o755)
    blob = base64.b64encode(b"\0" + user.encode() + b"\0" +
                            password.encode())
    off = write_conf(tmp, "off", False, "none")
    on = write_conf(tmp, "on", True, f"sqlite:{tmp}/on/state.db")
    confs = {
        "none": (NOACCT, off),
        "off": (BINARY, off),
        "store": (BINARY, write_conf(tmp, "store", False,
                                     f"sqlite:{tmp}/store/state.db")),
        "on": (BINARY, on),
        "on-noacct": (NOACCT, write_conf(tmp, "on-noacct", True,
                                         f"sqlite:{tmp}/on-noacct/state.db")),
    }
    for b, c in confs.values():
        subprocess.run([b, "-t", "-f", c, "-o", "privsep-user=nobody"],
                       check=True, capture_output=True)
    servers = {p: serve(b, c, "-o", "privsep-user=nobody")
               for p, (b, c) in confs.items()}
    times = {p: [] for p in POINTS}
    cpu = {p: [] for p in POINTS}
    load0 = os.getloadavg()
    t_start = time.monotonic()
    try:
        # One round first, not counted: each store made, caches warm.
        for p, (_, port) in servers.items():
            session(port, user, blob)
        mark = {p: children_cpu(servers[p][0]) for p in POINTS}
        for n in range(N):
            k = n % len(POINTS)
            for p in POINTS[k:] + POINTS[:k]:
                t0 = time.perf_counter()
                session(servers[p][1], user, blob)
                times[p].append((time.perf_counter() - t0) * 1000)
            if (n + 1) % BLOCK == 0 or n + 1 == N:
                rounds = (n + 1) % BLOCK or BLOCK
                for p in POINTS:
                    c = children_cpu(servers[p][0])
                    cpu[p].append((c - mark[p]) * 1000 / rounds)
                    mark[p] = c
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()
    elapsed = time.monotonic() - t_start
    load1 = os.getloadavg()
    print(f"one connection per message: AUTH PLAIN, MAIL, {RCPTS} RCPT, "
          f"1 KiB; {N} each, as root, {os.cpu_count()} CPUs; "
          f"{elapsed:.0f} s; load average {load0[0]:.2f} before, "
          f"{load1[0]:.2f} after")
    print("wall time per session (ms; ratios of p50)")
    w = {p: pct(times[p], 50) for p in POINTS}
    for p in POINTS:
        print(f"  {p:9} p50 {w[p]:7.2f}  p99 {pct(times[p], 99):7.2f}  "
              f"/off x{w[p] / w['off']:.2f}  /none x{w[p] / w['none']:.2f}")
    print(f"server CPU per session (ms, user+system, median of "
          f"{len(cpu['off'])} blocks of {BLOCK}; ratios)")
    c = {p: pct(cpu[p], 50) for p in POINTS}
    for p in POINTS:
        print(f"  {p:9} {c[p]:7.2f}  (blocks {min(cpu[p]):.2f}.."
              f"{max(cpu[p]):.2f})  /off x{c[p] / c['off']:.2f}  "
              f"/none x{c[p] / c['none']:.2f}")
    print("differences of p50 (ms): wall, CPU")
    for label, a, b in (("account check", "on", "on-noacct"),
                        ("store, no limit", "store", "off"),
                        ("sender-policy and limits", "on", "store"),
                        ("all checks", "on", "none")):
        print(f"  {label:25} {w[a] - w[b]:6.2f}  {c[a] - c[b]:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
