#!/usr/bin/python3
"""store_cost.py - what the shared store (Redis) costs per AUTH and per
message, against SQLite and no store, and how far one redis-server goes.

The shipped binary (../smtpauthd), as root with privilege separation, on
loopback through systemd-socket-activate, auth file, a sendmail that
only reads its input, auth-failure-delay 0, every limit on and high
enough never to block; one configuration per store:
  none    state none (nothing remembered: the baseline)
  sqlite  state sqlite:PATH
  redis   state redis://127.0.0.1:PORT, a redis-server this script starts
          on loopback (no persistence, like the tests' one)
Two kinds of session, each its own connection:
  failed  connect, EHLO, AUTH PLAIN with a wrong password (a new one each
          time, for a user that never logs in here), QUIT
  message connect, EHLO, AUTH PLAIN right, MAIL, one RCPT, DATA (1 KiB),
          QUIT
Part 1, timing: N rounds in blocks of BLOCK; in a block, one kind, each
round one session per store in an order that turns by one each round,
so that drift on a shared machine hits all alike.  Wall time per session
(p50, p99; ratios of p50), and CPU per session: every process of the
connections (from the children's times systemd-socket-activate collects
as it reaps them), plus, for redis, redis-server's own CPU over the
block; the median of the blocks' means.
Part 2, operations: redis-cli MONITOR around one session of each kind
(and one successful AUTH without a message), counting the commands the
connection sent (round trips) and those the script ran inside Redis.
Part 3, one redis-server's capacity: the script calls MONITOR saw, each
replayed by redis-benchmark (EVALSHA of the script smtpauthd loaded,
CLIENTS connections, no pipelining, keys and members made random so that
they spread as many clients' do), calls per second each; then per second
the logins (failed or not) and messages whose calls it would carry,
the other per-connection commands included.
"""
import base64
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from benchlib import TICK, children_cpu, free_port, pct, read_reply, serve

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
BINARY = os.path.join(TOP, "smtpauthd")
N = int(os.environ.get("N", "120"))
BLOCK = int(os.environ.get("BLOCK", "20"))
REQUESTS = int(os.environ.get("REQUESTS", "20000"))
CLIENTS = int(os.environ.get("CLIENTS", "50"))
STORES = ("none", "sqlite", "redis")
KINDS = ("failed", "message")
USER, PASSWORD = "nobody", "bench-password"
GUESSED = "daemon"	# an account that is only guessed at
MARKER = "store-cost-end-of-session"


def blob(user, password):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())


def session(port, kind, n):
    """One connection of the given kind; n makes a wrong password new."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        f = s.makefile("rb")

        def say(line, want):
            s.sendall(line + b"\r\n")
            r = read_reply(f)
            if not r.startswith(want):
                raise SystemExit(f"unexpected reply {r!r} to {line[:20]!r}")

        read_reply(f)
        say(b"EHLO bench", b"250")
        if kind == "failed":
            say(b"AUTH PLAIN " + blob(GUESSED, f"wrong-{n}"), b"535")
        else:
            say(b"AUTH PLAIN " + blob(USER, PASSWORD), b"235")
        if kind == "message":
            say(b"MAIL FROM:<" + USER.encode() + b"@bench.example>", b"250")
            say(b"RCPT TO:<r@dest.example>", b"250")
            say(b"DATA", b"354")
            say(b"Subject: bench\r\n\r\n" + (b"x" * 78 + b"\r\n") * 13 +
                b".", b"250")
        say(b"QUIT", b"221")


def write_conf(tmp, name, state):
    conf = f"{tmp}/{name}.conf"
    with open(conf, "w") as fp:
        fp.write(f"hostname bench.example\nauth file\n"
                 f"passwd-file {tmp}/passwd\nauth-require-tls no\n"
                 f"sendmail {tmp}/sendmail\nauth-failure-delay 0\n"
                 f"state {state}\nauth-limit-ip 10000/1d\n"
                 f"auth-limit-net 10000/1d\nauth-limit-user 10000/1d\n"
                 f"user-recipient-limit 10000/1h, 10000/1d\n"
                 f"user-message-limit 100000/1h\n")
    return conf



def own_cpu(pid):
    """Seconds of CPU of the process itself (utime + stime)."""
    with open(f"/proc/{pid}/stat") as fp:
        fields = fp.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Redis:
    """One redis-server on 127.0.0.1, in a directory of its own."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="smtpauthd-bench-redis.")
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind",
             "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
             self.dir, "--daemonize", "no", "--logfile", "",
             "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            r = subprocess.run(self.cli_args("PING"), capture_output=True,
                               text=True)
            if r.stdout.strip() == "PONG":
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit("redis-server did not start")
            time.sleep(0.02)

    def cli_args(self, *args):
        return ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port)] + \
            list(args)

    def cli(self, *args):
        return subprocess.run(self.cli_args(*args), capture_output=True,
                              text=True, check=True, timeout=30).stdout

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


MONITOR_LINE = re.compile(r'^([0-9.]+) \[\d+ ([^\]]+)\] (.*)$')
QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def unquote(s):
    return re.sub(r'\\x([0-9a-f]{2})|\\(.)',
                  lambda m: chr(int(m.group(1), 16)) if m.group(1)
                  else {"n": "\n", "r": "\r", "t": "\t"}.get(m.group(2),
                                                             m.group(2)),
                  s)


def monitor(redis, port, kind):
    """The commands one session sends to Redis: [(from_script, argv)],
    and how long (ms, Redis's clock) the session held the lock."""
    mon = subprocess.Popen(redis.cli_args("MONITOR"), stdout=subprocess.PIPE,
                           text=True)
    try:
        if mon.stdout.readline().strip() != "OK":
            raise SystemExit("redis-cli MONITOR did not start")
        session(port, kind, 10 ** 6)
        # The session's monitor process is reaped before the reply to
        # QUIT?  Not necessarily: the marker, sent after the session's
        # processes are gone, ends what belongs to it.
        while True:
            try:
                with open(f"/proc/{servers_pid[port]}/task/"
                          f"{servers_pid[port]}/children") as fp:
                    if fp.read().strip() == "":
                        break
            except FileNotFoundError:
                break
            time.sleep(0.002)
        redis.cli("ECHO", MARKER)
        calls, locked, held = [], None, None
        for line in mon.stdout:
            m = MONITOR_LINE.match(line.strip())
            if not m:
                continue
            argv = [unquote(a) for a in QUOTED.findall(m.group(3))]
            if argv and argv[0].lower() == "echo" and argv[1:] == [MARKER]:
                break
            lua = m.group(2) == "lua"
            if not lua and argv[0].upper() == "SET" and \
                    " lock " in argv[1]:
                locked = float(m.group(1))
            elif not lua and "unlock" in argv:
                held = (float(m.group(1)) - locked) * 1000
            calls.append((lua, argv))
        return calls, held
    finally:
        mon.kill()
        mon.wait()


servers_pid = {}


def tally(calls):
    sent, inner = {}, {}
    for lua, argv in calls:
        d = inner if lua else sent
        name = argv[0].upper()
        if name == "SCRIPT":
            name += " " + argv[1].upper()
        d[name] = d.get(name, 0) + 1
    return sent, inner


def fmt(d):
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "-"


PREFIX = "smtpauthd:"


def label(argv):
    """What one command is, for the table: EVALSHA's keys' kinds and
    operations, or the command's name."""
    name = argv[0].upper()
    if name == "SCRIPT":
        return "SCRIPT LOAD"
    if name != "EVALSHA":
        return name
    nkeys = int(argv[2])
    kinds = []
    for k in argv[3:3 + nkeys]:
        parts = k[len(PREFIX):].strip().split(":")
        # The sending limits' keys name their window (seconds).
        kinds.append(":".join(parts[:2]) if parts[0].startswith("sent")
                     else parts[0])
    ops = argv[3 + nkeys::5]
    return "EVALSHA " + " ".join(f"{o}({k})" for k, o in zip(kinds, ops))


# Hot: how many members each kind of key holds for a login at the
# defaults' limits (auth-limit-ip 10, -net 30, -user 20; the addresses a
# user logged in from in a day, a guess; a day's 1000 recipients).
HOT_SIZE = {"ip": 10, "net": 30, "user": 20, "known": 50}
HOT_SENDING = 1000


def hot_size(argv):
    nkeys = int(argv[2])
    return max(HOT_SIZE.get(k[len(PREFIX):].strip().split(":")[0],
                            HOT_SENDING) for k in argv[3:3 + nkeys])


def replayed(argv, hot):
    """An EVALSHA call as many clients would send it (redis-benchmark
    fills in each __rand_int__).  Cold: every key and member random, so
    each key holds a member or two (many logins, each sending little).
    Hot: the keys as they are, the members of mark and add random out of
    hot_size(), so that each key holds that many, as for one login near
    its limits: the script reads a whole hash for most operations."""
    out = list(argv)
    if out[0].upper() != "EVALSHA":
        return out
    nkeys = int(out[2])
    for i in range(3, 3 + nkeys):
        if not hot:
            out[i] += ":__rand_int__"
    # ARGV: five per key, the member fifth; a lock's token stays.
    for j in range(nkeys):
        m = 3 + nkeys + 5 * j
        if m + 4 < len(out) and (out[m] in ("mark", "add") or
                                 not hot and out[m] in ("has", "unmark")):
            out[m + 4] = "__rand_int__"
    return out


def benchmark(redis, argv, hot, n):
    r = str(hot_size(argv)) if hot and argv[0].upper() == "EVALSHA" \
        else "1000000"
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(redis.port),
         "-c", str(CLIENTS), "-n", str(n), "-r", r, "-q", "--csv"] +
        replayed(argv, hot), capture_output=True, text=True, check=True,
        timeout=300).stdout
    # --csv: a header, then "name","rps",...
    for line in out.splitlines():
        f = [x.strip('"') for x in line.split(",")]
        if len(f) > 1 and re.match(r"^[0-9.]+$", f[1]):
            return float(f[1])
    raise SystemExit(f"redis-benchmark said: {out!r}")


def main():
    if os.geteuid() != 0:
        raise SystemExit("run as root: the program as it runs for real "
                         "(user switch, chroot)")
    for tool in ("redis-server", "redis-cli", "redis-benchmark",
                 "systemd-socket-activate"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    tmp = tempfile.mkdtemp(prefix="smtpauthd-bench.")
    os.chmod(tmp, 0o755)
    lines = []
    for user, password in ((USER, PASSWORD), (GUESSED, "never-guessed")):
        h = subprocess.run([BINARY, "-H"], input=password + "\n",
                           capture_output=True, text=True, check=True
                           ).stdout.strip()
        lines.append(f"{user}:{h}\n")
    with open(f"{tmp}/passwd", "w") as fp:
        fp.writelines(lines)
    os.chmod(f"{tmp}/passwd", 0o600)
    with open(f"{tmp}/sendmail", "w") as fp:
        fp.write("#!/bin/sh\nexec cat >/dev/null\n")
    os.chmod(f"{tmp}/sendmail", 0o755)
    redis = Redis()
    servers = {}
    try:
        confs = {
            "none": write_conf(tmp, "none", "none"),
            "sqlite": write_conf(tmp, "sqlite", f"sqlite:{tmp}/state.db"),
            "redis": write_conf(tmp, "redis",
                                f"redis://127.0.0.1:{redis.port}"),
        }
        for c in confs.values():
            subprocess.run([BINARY, "-t", "-f", c, "-o",
                            "privsep-user=nobody"], check=True,
                           capture_output=True)
        servers = {s: serve(BINARY, c, "-o", "privsep-user=nobody")
                   for s, c in confs.items()}
        for proc, port in servers.values():
            servers_pid[port] = proc.pid
        return run(redis, servers)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run(redis, servers):
    times = {(s, k): [] for s in STORES for k in KINDS}
    cpu = {(s, k): [] for s in STORES for k in KINDS}
    load0 = os.getloadavg()
    t_start = time.monotonic()
    # One round first, not counted: each store made, caches warm.
    for k in KINDS:
        for s in STORES:
            session(servers[s][1], k, -1)
    n = 0
    for b in range(N // BLOCK):
        for k in KINDS:
            mark = {s: children_cpu(servers[s][0]) for s in STORES}
            rmark = own_cpu(redis.proc.pid)
            for i in range(BLOCK):
                j = (b * BLOCK + i) % len(STORES)
                for s in STORES[j:] + STORES[:j]:
                    t0 = time.perf_counter()
                    session(servers[s][1], k, n)
                    times[(s, k)].append((time.perf_counter() - t0) * 1000)
                    n += 1
            for s in STORES:
                c = children_cpu(servers[s][0]) - mark[s]
                if s == "redis":
                    c += own_cpu(redis.proc.pid) - rmark
                cpu[(s, k)].append(c * 1000 / BLOCK)
    elapsed = time.monotonic() - t_start
    load1 = os.getloadavg()
    rounds = N // BLOCK * BLOCK
    print(f"store_cost: {rounds} sessions of each kind per store, as root, "
          f"{os.cpu_count()} CPUs, {elapsed:.0f} s; load average "
          f"{load0[0]:.2f} before, {load1[0]:.2f} after")
    print("wall time per session (ms; ratios of p50)")
    w = {key: pct(v, 50) for key, v in times.items()}
    for k in KINDS:
        for s in STORES:
            print(f"  {k:7} {s:6} p50 {w[(s, k)]:6.2f}  p99 "
                  f"{pct(times[(s, k)], 99):6.2f}  /none "
                  f"x{w[(s, k)] / w[('none', k)]:.2f}  /sqlite "
                  f"x{w[(s, k)] / w[('sqlite', k)]:.2f}")
    print(f"server CPU per session (ms, user+system, redis-server's "
          f"included; median of {N // BLOCK} blocks of {BLOCK}; ratios)")
    c = {key: pct(v, 50) for key, v in cpu.items()}
    for k in KINDS:
        for s in STORES:
            print(f"  {k:7} {s:6} {c[(s, k)]:6.2f}  (blocks "
                  f"{min(cpu[(s, k)]):.2f}..{max(cpu[(s, k)]):.2f})  /none "
                  f"x{c[(s, k)] / c[('none', k)]:.2f}  /sqlite "
                  f"x{c[(s, k)] / c[('sqlite', k)]:.2f}")

    port = servers["redis"][1]
    seen = {}
    print("Redis commands per session (redis-cli MONITOR): sent by "
          "smtpauthd (round trips) | run by the script inside Redis")
    for k in ("failed", "login", "message"):
        calls, _ = monitor(redis, port, "ok" if k == "login" else k)
        seen[k] = [argv for lua, argv in calls if not lua]
        sent, inner = tally(calls)
        print(f"  {k:7} {sum(sent.values()):3} ({fmt(sent)}) | "
              f"{sum(inner.values()):3} ({fmt(inner)})")
    held = [monitor(redis, port, "message")[1] for _ in range(9)]
    print(f"  the login's lock held per message: "
          f"{pct(held, 50):.2f} ms (median of {len(held)}, "
          f"{min(held):.2f}..{max(held):.2f}; under MONITOR) => at most "
          f"{1000 / pct(held, 50):.0f} messages a second for one login")
    evals = {k: [a for a in v if a[0].upper() == "EVALSHA"]
             for k, v in seen.items()}
    print(f"  per message (message - login): "
          f"{len(seen['message']) - len(seen['login'])} round trips, "
          f"{len(evals['message']) - len(evals['login'])} EVALSHA")

    print(f"one redis-server, redis-benchmark, {CLIENTS} clients, "
          f"{REQUESTS} requests each, no pipelining: calls per second, "
          f"keys cold | hot")
    calls = {}
    for k in ("failed", "message"):
        for argv in seen[k]:
            calls.setdefault(label(argv), argv)
    # Nothing left of the sessions above (the 127.0.0.1 keys hold every
    # wrong password of part 1); the script stays loaded.
    redis.cli("FLUSHALL")
    # Hot keys filled first (3 * their size of random members: nearly
    # all of them present), then every call measured on them.
    for argv in calls.values():
        if argv[0].upper() == "EVALSHA" and \
                ("mark" in argv or "add" in argv):
            benchmark(redis, argv, True, 3 * hot_size(argv))
    rate = {}
    for name, argv in calls.items():
        # About a second each: a hot call may be a hundred times slower.
        rate[name] = tuple(
            benchmark(redis, argv, hot, max(200, min(REQUESTS, int(
                benchmark(redis, argv, hot, 200)))))
            for hot in (False, True))
        print(f"  {rate[name][0]:7.0f} | {rate[name][1]:7.0f}  {name}")
    load2 = os.getloadavg()
    print(f"  load average {load2[0]:.2f} after")
    print("what that one redis-server carries per second, its whole time "
          "on one kind (cold | hot)")
    for k, what in (("failed", "failed logins"),
                    ("login", "logins (successful, no message)"),
                    ("message", "sessions (a login and one message)")):
        per_s = [1 / sum(1 / rate[label(a)][h] for a in seen[k])
                 for h in (0, 1)]
        print(f"  {per_s[0]:7.0f} | {per_s[1]:7.0f}  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
