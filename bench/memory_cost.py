#!/usr/bin/python3
"""memory_cost.py - memory per connection, and a 30 MB message.

The shipped binary (../smtpauthd), as root with privilege separation, on
loopback through systemd-socket-activate --inetd, auth file (a yescrypt
hash from -H), a sendmail that discards its input.

Part 1, memory per connection: N connections (default 20) held open at
once, each after EHLO and AUTH PLAIN, waiting for a command (and, for
the comparison below, N more after EHLO only).  For every process of
each connection (the activator's child, which is the monitor, and
its descendants: the session) it reads Rss, Pss and Private_* from
/proc/PID/smaps_rollup and the peak VmHWM from /proc/PID/status, and
prints per connection (median over the N): processes, RSS, PSS, USS
(private pages: what the connection alone holds) - all steady, read
while it waits - and peak (the sum of the processes' VmHWM).  PSS is the
figure of the target (<= 2 MiB, both processes together): N connections
share the libraries' pages N ways.  The password check's child is gone
by then: its peak (yescrypt's memory) is sampled during 5 AUTHs alone.
When Postfix is installed the script also starts a Postfix instance of
its own (postfix -c DIR, its own queue in a temporary directory, smtpd
on another loopback port, stopped at the end) and reads its smtpd the
same way (one process per connection; master, anvil, qmgr and the other
shared daemons are not counted); with AUTH through saslauthd when
sasl2-bin is installed, else after EHLO only (it says which).  Ratios
smtpauthd / Postfix.

Part 2, a 30 MB message: one whole session (connect, EHLO, AUTH, MAIL,
RCPT, DATA of SIZE MiB, the 250) against a plain loopback copy of the
same bytes (a TCP connection into a Python process that reads and
discards them, then answers one line): MB/s of each and the ratio
(target >= 0.70), ROUNDS rounds alternated, medians.  While the message
goes through, a thread samples VmRSS of the connection's smtpauthd
processes (monitor and session, the ones there before DATA); and the
growth of their VmHWM from before DATA to after the 250 catches any
peak the samples miss.  The same for a message a tenth the size: a
growth that goes with the size of the message is flagged.  Also the CPU
of the connection's processes (from the activator's reaped children):
near the wall time means the server, not the wire, sets the pace.
"""
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import (USER, children, descendants, free_port, plain_blob, read_reply,
                      say, serve, wait_no_children, write_setup)

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
BINARY = os.path.join(TOP, "smtpauthd")
N = int(os.environ.get("N", "20"))
SIZE = int(os.environ.get("SIZE", "30"))		# MiB
ROUNDS = int(os.environ.get("ROUNDS", "3"))
MIB = 1024 * 1024
TICK = os.sysconf("SC_CLK_TCK")


def mem(pid):
    """{rss, pss, uss, hwm} of one process in KiB, or None if it is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fp:
            for line in fp:
                k, _, v = line.partition(":")
                if k in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                    out[k] = int(v.split()[0])
        with open(f"/proc/{pid}/status") as fp:
            for line in fp:
                if line.startswith("VmHWM:"):
                    out["hwm"] = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return {"rss": out["Rss"], "pss": out["Pss"], "hwm": out["hwm"],
            "uss": out["Private_Clean"] + out["Private_Dirty"]}


def settle(roots, per_root):
    """Waits until each root has per_root descendants (the auth child
    gone); at most 10 s."""
    for _ in range(2000):
        if all(len(descendants(r)) == per_root for r in roots):
            return
        time.sleep(0.005)
    raise SystemExit("the connections' processes did not settle")


def per_connection(groups):
    """groups: one list of pids per connection; medians of the sums."""
    rows = []
    for pids in groups:
        ms = [m for m in map(mem, pids) if m is not None]
        rows.append({"procs": len(ms), **{k: sum(m[k] for m in ms)
                                         for k in ("rss", "pss", "uss",
                                                   "hwm")}})
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def hold(port, n, auth):
    """n open connections after EHLO (and AUTH when auth)."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        f = s.makefile("rb")
        read_reply(f)
        say(s, f, b"EHLO bench", b"250")
        if auth:
            say(s, f, b"AUTH PLAIN " + plain_blob(), b"235")
        socks.append((s, f))
    return socks


def release(socks):
    for s, f in socks:
        f.close()
        s.close()


def smtpauthd_memory(activator, port, auth):
    socks = hold(port, N, auth)
    try:
        monitors = children(activator.pid)
        if len(monitors) != N:
            raise SystemExit(f"{len(monitors)} monitors for {N} "
                             "connections")
        settle(monitors, 1)
        return per_connection([[m] + descendants(m) for m in monitors])
    finally:
        release(socks)
        wait_no_children(activator.pid)


class Postfix:
    """A Postfix instance of its own: configuration, queue and data in a
    temporary directory, smtpd on 127.0.0.1:port with no chroot."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="smtpauthd-bench-postfix.")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        cfg, q, d = (f"{self.dir}/{x}" for x in ("cfg", "q", "d"))
        for x in (cfg, q, d):
            os.mkdir(x)
        shutil.chown(d, "postfix")
        self.cfg = cfg
        with open(f"{cfg}/main.cf", "w") as fp:
            fp.write(f"compatibility_level = 3.6\nqueue_directory = {q}\n"
                     f"data_directory = {d}\nmyhostname = bench.example\n"
                     "mydestination =\ninet_interfaces = 127.0.0.1\n"
                     "inet_protocols = ipv4\n"
                     f"maillog_file = {self.dir}/maillog\n"
                     f"maillog_file_prefixes = {self.dir}\n")
        # The shipped master.cf, smtpd on our port, no service chrooted
        # (a chroot would need copies of /etc files in the queue).
        listen = f"127.0.0.1:{self.port}"
        with open("/etc/postfix/master.cf") as fp, \
                open(f"{cfg}/master.cf", "w") as out:
            for line in fp:
                f = line.split()
                if line[:1].isalpha() and len(f) >= 8:
                    if f[:2] == ["smtp", "inet"]:
                        f[0] = listen
                    f[4] = "n"
                    line = " ".join(f) + "\n"
                out.write(line)
        with open(f"{cfg}/master.cf", "r+") as fp:
            if listen not in fp.read():
                fp.write(f"{listen} inet n - n - - smtpd\n")
        self.postfix("start")
        with open(f"{q}/pid/master.pid") as fp:
            self.master = int(fp.read())
        for _ in range(500):
            try:
                socket.create_connection(("127.0.0.1", self.port),
                                         0.1).close()
                break
            except OSError:
                time.sleep(0.02)

    def postfix(self, what):
        # postfix reports a fatal error only to syslog, or to a terminal.
        r = subprocess.run(["script", "-qec",
                            f"postfix -c {self.cfg} {what}", "/dev/null"],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise SystemExit(f"postfix {what}: {r.stdout.strip()}")

    def smtpd(self):
        out = []
        for p in descendants(self.master):
            try:
                with open(f"/proc/{p}/comm") as fp:
                    if fp.read().strip() == "smtpd":
                        out.append(p)
            except FileNotFoundError:
                pass
        return out

    def memory(self):
        socks = hold(self.port, N, False)
        try:
            for _ in range(2000):
                if len(self.smtpd()) >= N:
                    break
                time.sleep(0.005)
            pids = self.smtpd()
            if len(pids) != N:
                raise SystemExit(f"{len(pids)} smtpd for {N} connections")
            return per_connection([[p] for p in pids])
        finally:
            release(socks)

    def stop(self):
        try:
            self.postfix("stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def part1(activator, port):
    print(f"memory per connection, {N} connections open at once, "
          "median (KiB; steady = read while the connection waits for a "
          "command)")
    print(f"  {'':30} {'procs':>5} {'RSS':>7} {'PSS':>7} {'USS':>7} "
          f"{'peak':>7}")
    rows = {"smtpauthd after AUTH": smtpauthd_memory(activator, port, True),
            "smtpauthd after EHLO": smtpauthd_memory(activator, port,
                                                     False)}
    if shutil.which("postfix"):
        if shutil.which("saslauthd"):
            print("  (saslauthd is installed but not set up here: Postfix "
                  "is read after EHLO, without AUTH)")
        else:
            print("  (sasl2-bin is not installed: Postfix's smtpd is read "
                  "after EHLO, without AUTH)")
        pf = Postfix()
        try:
            rows["Postfix smtpd after EHLO"] = pf.memory()
        finally:
            pf.stop()
    else:
        print("  (Postfix is not installed: no comparison)")
    for name, r in rows.items():
        print(f"  {name:30} {r['procs']:5.0f} {r['rss']:7.0f} "
              f"{r['pss']:7.0f} {r['uss']:7.0f} {r['hwm']:7.0f}")
    a = rows["smtpauthd after AUTH"]
    peaks = [auth_peak(activator, port) for _ in range(5)]
    print(f"  smtpauthd during AUTH (sampled, 5 connections): up to "
          f"{max(p[0] for p in peaks)} processes, RSS sum up to "
          f"{max(p[1] for p in peaks)} KiB (the password check's child "
          "included)")
    print(f"  target: PSS after AUTH {a['pss'] / 1024:.2f} MiB "
          f"(<= 2 MiB: {'met' if a['pss'] <= 2048 else 'NOT met'})")
    if "Postfix smtpd after EHLO" in rows:
        p = rows["Postfix smtpd after EHLO"]
        e = rows["smtpauthd after EHLO"]
        print("  smtpauthd/Postfix after EHLO: " + "  ".join(
            f"{k} {e[k] / p[k]:.2f}" for k in ("rss", "pss", "uss", "hwm")))
        print("  smtpauthd after AUTH/Postfix after EHLO: " + "  ".join(
            f"{k} {a[k] / p[k]:.2f}" for k in ("rss", "pss", "uss", "hwm")))


def message(mib):
    """A message of mib MiB: a header, then lines of 78 x and CRLF."""
    line = b"x" * 78 + b"\r\n"
    head = b"Subject: bench\r\n\r\n"
    return head + line * ((mib * MIB - len(head)) // len(line))


def vm(pid, key):
    try:
        with open(f"/proc/{pid}/status") as fp:
            for line in fp:
                if line.startswith(key):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


class Sampler(threading.Thread):
    """The largest sum of VmRSS of pids() seen, and the most processes,
    sampled every 2 ms."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        self.pids, self.peak, self.procs = pids, 0, 0
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            pids = self.pids()
            self.peak = max(self.peak, sum(vm(p, "VmRSS:") for p in pids))
            self.procs = max(self.procs, len(pids))
            time.sleep(0.002)


def auth_peak(activator, port):
    """During AUTH (the password check in a child of the monitor): the
    most processes and the largest sum of their VmRSS sampled, KiB."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        f = s.makefile("rb")
        read_reply(f)
        say(s, f, b"EHLO bench", b"250")
        monitor = children(activator.pid)[0]
        sampler = Sampler(lambda: [monitor] + descendants(monitor))
        sampler.start()
        say(s, f, b"AUTH PLAIN " + plain_blob(), b"235")
        sampler.done.set()
        sampler.join()
        say(s, f, b"QUIT", b"221")
    wait_no_children(activator.pid)
    return sampler.procs, sampler.peak


def reaped_cpu(pid):
    """Seconds of CPU of pid's reaped children (cutime + cstime)."""
    with open(f"/proc/{pid}/stat") as fp:
        f = fp.read().rsplit(")", 1)[1].split()
    return (int(f[13]) + int(f[14])) / TICK


def through_smtpauthd(activator, port, body):
    """Seconds for the whole session, seconds of DATA, and KiB: idle RSS,
    sampled peak RSS, VmHWM growth (monitor and session); then seconds of
    CPU of the connection's processes (sendmail's included)."""
    cpu0 = reaped_cpu(activator.pid)
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        f = s.makefile("rb")
        read_reply(f)
        say(s, f, b"EHLO bench", b"250")
        say(s, f, b"AUTH PLAIN " + plain_blob(), b"235")
        say(s, f, b"MAIL FROM:<" + USER.encode() + b"@bench.example>",
            b"250")
        say(s, f, b"RCPT TO:<r@dest.example>", b"250")
        monitor = children(activator.pid)[0]
        settle([monitor], 1)
        pids = [monitor] + descendants(monitor)
        idle = sum(vm(p, "VmRSS:") for p in pids)
        hwm0 = sum(vm(p, "VmHWM:") for p in pids)
        sampler = Sampler(lambda: pids)
        sampler.start()
        say(s, f, b"DATA", b"354")
        t1 = time.perf_counter()
        s.sendall(body + b".\r\n")
        r = read_reply(f)
        t2 = time.perf_counter()
        hwm1 = sum(vm(p, "VmHWM:") for p in pids)
        sampler.done.set()
        sampler.join()
        if not r.startswith(b"250"):
            raise SystemExit(f"message refused: {r!r}")
        say(s, f, b"QUIT", b"221")
    wait_no_children(activator.pid)
    return (t2 - t0, t2 - t1, idle, sampler.peak, hwm1 - hwm0,
            reaped_cpu(activator.pid) - cpu0)


DISCARD = r"""
import socket, sys
n = int(sys.argv[1])
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen(1)
print(l.getsockname()[1], flush=True)
while True:
    c, _ = l.accept()
    buf = bytearray(256 * 1024)
    got = 0
    while got < n:
        k = c.recv_into(buf)
        if k == 0:
            break
        got += k
    c.sendall(b"250 discarded\r\n")
    c.close()
"""


def through_copy(port, body):
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        f = s.makefile("rb")
        s.sendall(body + b".\r\n")
        r = read_reply(f)
    if not r.startswith(b"250"):
        raise SystemExit("the loopback copy did not answer")
    return time.perf_counter() - t0


def part2(activator, port):
    print(f"\none message through smtpauthd (connect to 250) against a "
          f"loopback copy of the same bytes into a discarding process, "
          f"{ROUNDS} rounds alternated, medians")
    growth = {}
    for mib in (max(1, SIZE // 10), SIZE):
        body = message(mib)
        copy = subprocess.Popen([sys.executable, "-c", DISCARD,
                                 str(len(body) + 3)],
                                stdout=subprocess.PIPE, text=True)
        try:
            cport = int(copy.stdout.readline())
            runs, copies = [], []
            for _ in range(ROUNDS):
                runs.append(through_smtpauthd(activator, port, body))
                copies.append(through_copy(cport, body))
        finally:
            copy.terminate()
            copy.wait()
        mb = len(body) / 1e6
        whole = statistics.median(r[0] for r in runs)
        data = statistics.median(r[1] for r in runs)
        c = statistics.median(copies)
        idle = statistics.median(r[2] for r in runs)
        peak = max(r[3] for r in runs)
        hwm = max(r[4] for r in runs)
        cpu = statistics.median(r[5] for r in runs)
        growth[mib] = max(peak - idle, hwm)
        print(f"  {mib:3} MiB: smtpauthd {mb / whole:7.1f} MB/s "
              f"(DATA alone {mb / data:7.1f}), copy {mb / c:7.1f} MB/s, "
              f"ratio {c / whole:.2f} (target >= 0.70: "
              f"{'met' if c / whole >= 0.70 else 'NOT met'})")
        print(f"           server CPU {cpu:.2f} s for {whole:.2f} s "
              f"(all the connection's processes, sendmail's included)")
        print(f"           RSS of monitor+session (KiB): idle {idle:.0f}, "
              f"sampled peak {peak:.0f} (+{peak - idle:.0f}), VmHWM "
              f"growth over DATA +{hwm:.0f}")
    small, big = sorted(growth)
    grows = growth[big] > growth[small] + 1024
    print(f"  RSS growth {growth[small]:.0f} KiB at {small} MiB, "
          f"{growth[big]:.0f} KiB at {big} MiB: "
          f"{'GROWS WITH THE MESSAGE' if grows else 'flat'}")


def main():
    if os.geteuid() != 0:
        print("memory_cost.py: run as root (privilege separation, "
              "Postfix)", file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="smtpauthd-bench.")
    os.chmod(tmp, 0o755)
    conf = write_setup(BINARY, tmp, "auth-failure-delay 0\n")
    activator, port = serve(BINARY, conf)
    try:
        wait_no_children(activator.pid)
        part1(activator, port)
        part2(activator, port)
    finally:
        activator.terminate()
        activator.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
