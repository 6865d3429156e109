#!/usr/bin/python3
"""loadgen.py - an SMTP submission load generator (Python's standard
library, asyncio), for load_cost.py or by hand.

N concurrent clients, each running sessions one after another:
greeting -> EHLO -> [STARTTLS -> EHLO] -> AUTH PLAIN -> M x (MAIL,
K x RCPT, DATA of S bytes) -> QUIT, for a duration or until a count of
sessions is done.  Every reply is read before the next command (no
pipelining), each with a deadline.  Reports per-phase latency
percentiles (ms: connect+greeting, EHLO, STARTTLS, AUTH, MAIL, RCPT,
DATA end - from the final dot to its reply), sessions and messages per
second, and failures by reply code (or exception).  With --activator-pid
(the systemd-socket-activate serving the port) also the server's CPU per
session: the user+system time of its children reaped during the run.
  loadgen.py [-c N] [-d SECONDS | -n SESSIONS] [-m M] [-k K] [-s S]
             [--starttls] [--user U] [--password P] HOST PORT
"""
import argparse
import asyncio
import base64
import collections
import ssl
import sys
import time

from benchlib import children_cpu_pid, pct

PHASES = ("connect", "ehlo", "starttls", "auth", "mail", "rcpt", "data")
DEADLINE = 30.0


class Failure(Exception):
    pass


class Stats:
    def __init__(self):
        self.lat = {p: [] for p in PHASES}
        self.failures = collections.Counter()
        self.sessions = 0
        self.messages = 0
        self.elapsed = 0.0


def message_bytes(size):
    """A message of about size bytes, dot-stuffed already (no line starts
    with a dot), ending with the terminating dot line."""
    head = b"Subject: loadgen\r\nFrom: <loadgen@bench.example>\r\n\r\n"
    body = bytearray()
    line = b"x" * 76 + b"\r\n"
    while len(head) + len(body) + len(line) <= size:
        body += line
    rest = size - len(head) - len(body)
    if rest > 2:
        body += b"y" * (rest - 2) + b"\r\n"
    return head + bytes(body) + b".\r\n"


async def reply(reader):
    """The code and last line of one (possibly multi-line) reply."""
    while True:
        line = await asyncio.wait_for(reader.readline(), DEADLINE)
        if not line:
            raise Failure("eof")
        if line[3:4] != b"-":
            return line[:3].decode("ascii", "replace"), line


async def session(args, stats, blob, msg, ctx):
    clock = time.perf_counter
    t0 = clock()
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(args.host, args.port), DEADLINE)
    try:
        async def step(phase, line, want, t=None):
            t = clock() if t is None else t
            if line is not None:
                writer.write(line + b"\r\n")
            code, _ = await reply(reader)
            if code != want:
                raise Failure(code)
            stats.lat[phase].append((clock() - t) * 1000)

        await step("connect", None, "220", t0)
        await step("ehlo", b"EHLO loadgen.example", "250")
        if args.starttls:
            t = clock()
            await step("starttls", b"STARTTLS", "220")
            await writer.start_tls(ctx)
            await step("starttls", b"EHLO loadgen.example", "250", t)
            stats.lat["starttls"].pop(-2)
        await step("auth", b"AUTH PLAIN " + blob, "235")
        for _ in range(args.messages):
            await step("mail", b"MAIL FROM:<%s@bench.example>" %
                       args.user.encode(), "250")
            for i in range(args.rcpts):
                await step("rcpt", b"RCPT TO:<r%d@dest.example>" % i, "250")
            await step("data", b"DATA", "354")
            t = clock()
            writer.write(msg)
            await step("data", None, "250", t)
            stats.lat["data"].pop(-2)
            stats.messages += 1
        writer.write(b"QUIT\r\n")
        await reply(reader)
        stats.sessions += 1
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def run_async(args):
    stats = Stats()
    blob = base64.b64encode(b"\0" + args.user.encode() + b"\0" +
                            args.password.encode())
    msg = message_bytes(args.size)
    ctx = None
    if args.starttls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    started = [0]
    t0 = time.perf_counter()
    end = t0 + args.duration if args.duration else None

    async def client():
        while True:
            if end is not None and time.perf_counter() >= end:
                return
            if end is None:
                if started[0] >= args.count:
                    return
                started[0] += 1
            try:
                await session(args, stats, blob, msg, ctx)
            except Failure as e:
                stats.failures[str(e)] += 1
            except (OSError, asyncio.TimeoutError, ssl.SSLError) as e:
                stats.failures[type(e).__name__] += 1

    await asyncio.gather(*(client() for _ in range(args.clients)))
    stats.elapsed = time.perf_counter() - t0
    return stats


def run(host, port, clients=1, duration=None, count=None, messages=1,
        rcpts=1, size=2048, starttls=False, user="nobody",
        password="bench-password"):
    """One run; returns Stats.  For load_cost.py."""
    args = argparse.Namespace(host=host, port=port, clients=clients,
                              duration=duration, count=count,
                              messages=messages, rcpts=rcpts, size=size,
                              starttls=starttls, user=user,
                              password=password)
    if not duration and not count:
        raise ValueError("a duration or a count")
    return asyncio.run(run_async(args))


def report(stats, cpu=None, out=sys.stdout):
    e = stats.elapsed or 1e-9
    print(f"  {stats.sessions} sessions, {stats.messages} messages in "
          f"{e:.1f} s: {stats.sessions / e:.1f} sessions/s, "
          f"{stats.messages / e:.1f} messages/s", file=out)
    if cpu is not None and stats.sessions:
        print(f"  server CPU per session {cpu * 1000 / stats.sessions:.2f} "
              "ms", file=out)
    for p in PHASES:
        v = stats.lat[p]
        if v:
            print(f"  {p:9} p50 {pct(v, 50):8.2f}  p90 {pct(v, 90):8.2f}  "
                  f"p99 {pct(v, 99):8.2f}  ms  (n={len(v)})", file=out)
    if stats.failures:
        print("  failures: " + ", ".join(
            f"{k} x{n}" for k, n in sorted(stats.failures.items())),
            file=out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("-c", "--clients", type=int, default=1)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("-d", "--duration", type=float)
    g.add_argument("-n", "--count", type=int)
    ap.add_argument("-m", "--messages", type=int, default=1)
    ap.add_argument("-k", "--rcpts", type=int, default=1)
    ap.add_argument("-s", "--size", type=int, default=2048)
    ap.add_argument("--starttls", action="store_true")
    ap.add_argument("--user", default="nobody")
    ap.add_argument("--password", default="bench-password")
    ap.add_argument("--activator-pid", type=int)
    args = ap.parse_args()
    if not args.duration and not args.count:
        args.duration = 10.0
    c0 = children_cpu_pid(args.activator_pid) if args.activator_pid else 0
    stats = asyncio.run(run_async(args))
    cpu = (children_cpu_pid(args.activator_pid) - c0
           if args.activator_pid else None)
    report(stats, cpu)
    return 1 if stats.failures else 0


if __name__ == "__main__":
    sys.exit(main())
