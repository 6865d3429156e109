#!/usr/bin/python3
"""load_cost.py - smtpauthd under load beside its floor (issue 15).

Two servers on loopback, each under systemd-socket-activate --inetd, as
root, with the same password file (one sha512crypt hash, made by
build/floor -H) and the same sendmail (sh and cat: it reads the message
and discards it):
  smtpauthd  the shipped binary (../smtpauthd): privilege separation,
             auth file, state none, no limits, sender-policy any - the
             work of the floor, with the program's safety around it
  floor      build/floor (floor.c): the same dialogue, one crypt_rn, the
             message into an O_TMPFILE spool, the same sendmail as a
             child, in one process and nothing more
Load (loadgen.py): CLIENTS concurrent clients (1, 4, 16), each session
connect, EHLO, AUTH PLAIN, one MAIL, one RCPT, DATA of SIZE bytes, QUIT.
ROUNDS rounds; in a round, for each client count, SLICE seconds of each
server, in an order that turns each round, so that drift on a shared
machine hits both alike.  Server CPU per session is the user+system time
of every process of the connections, from the children's times the
activator collects as it reaps them (no systemd here to give a scope's
cgroup), over all slices of a point.
Then, each alone, against the same floor session: the password check
(crypt_rn of the same hash, COUNT times in one process, less the same
process doing none) and the discarding sendmail (spawned COUNT times
with the message on its input).
Prints every figure as smtpauthd / floor, and the load average.  Not
run yet: Postfix submission + saslauthd, Postfix's sendmail -i (it would
leave files in a live Postfix's maildrop) and pamtester (it needs an
account with a PAM password).
"""
import os
import resource
import shutil
import subprocess
import sys
import time

import loadgen
from benchlib import bench_dir, children_cpu, pct, serve_argv

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
BINARY = os.path.join(TOP, "smtpauthd")
FLOOR = os.path.join(HERE, "build", "floor")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
SLICE = float(os.environ.get("SLICE", "4"))
SIZE = int(os.environ.get("SIZE", "2048"))
COUNT = int(os.environ.get("COUNT", "200"))
LEVELS = (1, 4, 16)
SERVERS = ("smtpauthd", "floor")
USER, PASSWORD = "nobody", "bench-password"


def activate(argv):
    """argv under systemd-socket-activate --inetd; returns (proc, port)."""
    proc, port = serve_argv(argv)
    # One whole session: it is up, and the page cache is warm.
    st = loadgen.run("127.0.0.1", port, count=1, size=SIZE)
    if st.failures or st.sessions != 1:
        proc.terminate()
        proc.wait()
        raise SystemExit(f"{argv[0]}: a first session failed: "
                         f"{dict(st.failures)}")
    return proc, port


def children_seconds():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def crypt_alone(hash_):
    """CPU ms of one crypt_rn of hash_ (COUNT in one process, less one
    process doing none)."""
    def cost(n):
        c0 = children_seconds()
        subprocess.run([FLOOR, "-C", hash_, PASSWORD, str(n)], check=True)
        return children_seconds() - c0
    return (cost(COUNT) - cost(0)) * 1000 / COUNT


def sendmail_alone(sendmail, msg):
    """CPU ms of one sendmail spawned with the message on its input."""
    c0 = children_seconds()
    for _ in range(COUNT):
        subprocess.run([sendmail, "-i", "-f", f"{USER}@bench.example", "--",
                        "r0@dest.example"], input=msg, check=True)
    return (children_seconds() - c0) * 1000 / COUNT


def main():
    if os.geteuid() != 0:
        raise SystemExit("run as root: the program as it runs for real "
                         "(user switch, chroot)")
    if not os.access(FLOOR, os.X_OK):
        raise SystemExit("make -C bench build/floor first")
    tmp = bench_dir([FLOOR, "-H"], USER, PASSWORD)
    conf = f"{tmp}/smtpauthd.conf"
    with open(conf, "w") as fp:
        fp.write(f"hostname bench.example\nauth file\n"
                 f"passwd-file {tmp}/passwd\nauth-require-tls no\n"
                 f"sendmail {tmp}/sendmail\nstate none\n"
                 f"sender-policy any\nuser-recipient-limit 0\n"
                 f"user-message-limit 0\nprivsep-user {USER}\n")
    subprocess.run([BINARY, "-t", "-f", conf], check=True,
                   capture_output=True)
    with open(f"{tmp}/passwd") as fp:
        hash_ = fp.read().strip().split(":", 1)[1]
    argv = {"smtpauthd": [BINARY, "-f", conf],
            "floor": [FLOOR, f"{tmp}/passwd", f"{tmp}/sendmail"]}
    procs, ports = {}, {}
    # Per (server, clients): sessions, messages, seconds, CPU seconds,
    # connect latencies, failures.
    acc = {(s, c): [0, 0, 0.0, 0.0, [], {}] for s in SERVERS
           for c in LEVELS}
    load0 = os.getloadavg()
    t_start = time.monotonic()
    try:
        for s in SERVERS:
            procs[s], ports[s] = activate(argv[s])
        for r in range(ROUNDS):
            for c in LEVELS:
                order = SERVERS if (r + c) % 2 == 0 else SERVERS[::-1]
                for s in order:
                    c0 = children_cpu(procs[s])
                    st = loadgen.run("127.0.0.1", ports[s], clients=c,
                                     duration=SLICE, size=SIZE, user=USER,
                                     password=PASSWORD)
                    a = acc[(s, c)]
                    a[0] += st.sessions
                    a[1] += st.messages
                    a[2] += st.elapsed
                    a[3] += children_cpu(procs[s]) - c0
                    a[4] += st.lat["connect"]
                    for k, n in st.failures.items():
                        a[5][k] = a[5].get(k, 0) + n
        crypt_ms = crypt_alone(hash_)
        msg = loadgen.message_bytes(SIZE)[:-3]
        sendmail_ms = sendmail_alone(f"{tmp}/sendmail", msg)
    finally:
        for p in procs.values():
            p.terminate()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - t_start
    load1 = os.getloadavg()
    print(f"under load: smtpauthd / floor; a session is connect, EHLO, "
          f"AUTH PLAIN (sha512crypt, password file), MAIL, RCPT, "
          f"{SIZE} B DATA, QUIT; {ROUNDS} x {SLICE:g} s per point, "
          f"alternated; as root, {os.cpu_count()} CPUs; {elapsed:.0f} s; "
          f"load average {load0[0]:.2f} before, {load1[0]:.2f} after")
    print(f"  {'clients':>7}  {'CPU/session ms':>22}  {'x':>5}  "
          f"{'messages/s':>17}  {'x':>5}  {'connect p50 ms':>17}  {'x':>5}")
    floor_cpu = {}
    for c in LEVELS:
        row = {}
        for s in SERVERS:
            n, m, secs, cpu, conn, fails = acc[(s, c)]
            row[s] = (cpu * 1000 / max(n, 1), m / max(secs, 1e-9),
                      pct(conn, 50) if conn else float("nan"), fails)
        floor_cpu[c] = row["floor"][0]
        a, f = row["smtpauthd"], row["floor"]
        print(f"  {c:7}  {a[0]:9.2f} / {f[0]:9.2f}  {a[0] / f[0]:5.2f}  "
              f"{a[1]:7.1f} / {f[1]:7.1f}  {a[1] / f[1]:5.2f}  "
              f"{a[2]:7.2f} / {f[2]:7.2f}  {a[2] / f[2]:5.2f}")
        for s in SERVERS:
            if row[s][3]:
                print(f"           {s} failures: " + ", ".join(
                    f"{k} x{v}" for k, v in sorted(row[s][3].items())))
    f4 = floor_cpu[4]
    print(f"each alone (CPU ms per call; share of the floor's session at "
          f"4 clients, {f4:.2f} ms)")
    print(f"  crypt_rn of the hash     {crypt_ms:7.2f}  "
          f"{crypt_ms / f4:5.2f}")
    print(f"  sendmail (sh, cat)       {sendmail_ms:7.2f}  "
          f"{sendmail_ms / f4:5.2f}")
    if shutil.which("pamtester"):
        print("  pamtester: installed, not measured yet (it needs an "
              "account with a PAM password)")
    failed = any(acc[k][5] for k in acc)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
