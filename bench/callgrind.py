#!/usr/bin/python3
"""callgrind.py - instructions per whole session, start-up included, and
the functions that execute them: a count that stays put on a busy machine
where times do not, so that a regression shows.

The shipped binary (../smtpauthd), as root with privilege separation as
shipped, run under valgrind --tool=callgrind with children followed, over
a socketpair (stdin = stdout = one end, as inetd would give it); auth
file (a yescrypt hash from -H), a sendmail that discards its input (not
followed, like PAM's unix_chkpwd: --trace-children-skip as in
tests/valgrind/smtpauthd-valgrind.in).  One session: greeting, EHLO,
AUTH PLAIN, MAIL, RCPT, DATA (2 KiB), QUIT.

A forked child starts with its parent's counts in callgrind, so
--dump-before=_Fork writes (and zeroes) the parent's counts at each fork:
every instruction is then counted once, in the process that ran it.
--dump-before=execve keeps the part of the sendmail child before its exec.

The session writes its counts when it exits, chrooted in privsep-dir: to
the output file's absolute path inside that directory.  privsep-dir must
be empty when the monitor checks it, at the start of the connection; so
the script gives it a privsep-dir of its own and makes that path in it
once the greeting (sent by the confined session) has come, and removes it
at the end.

Prints the instructions (Ir) per process (monitor, session, password
check, sendmail child before exec) and their total, the share of each
object (the program, the loader, libc, libcrypto, ...), and the top
TOP functions by self Ir over the session (every part of every process
summed), with and without libcrypt (the hash: a fixed cost).  KEEP=1 keeps the callgrind.out files (for
callgrind_annotate --inclusive=yes FILE, one process at a time).
"""
import collections
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile

from benchlib import USER, plain_blob, read_reply, say, write_setup

HERE = os.path.dirname(os.path.abspath(__file__))
TOP_DIR = os.path.dirname(HERE)
BINARY = os.path.join(TOP_DIR, "smtpauthd")
TOP = int(os.environ.get("TOP", "15"))
TIMEOUT = 300


def session(s):
    f = s.makefile("rb")
    r = read_reply(f)
    if not r.startswith(b"220"):
        raise SystemExit(f"no greeting: {r!r}")
    yield
    say(s, f, b"EHLO bench", b"250")
    say(s, f, b"AUTH PLAIN " + plain_blob(), b"235")
    say(s, f, b"MAIL FROM:<" + USER.encode() + b"@bench.example>", b"250")
    say(s, f, b"RCPT TO:<r@dest.example>", b"250")
    say(s, f, b"DATA", b"354")
    say(s, f, b"Subject: bench\r\n\r\n" + (b"x" * 78 + b"\r\n") * 26 +
        b".", b"250")
    say(s, f, b"QUIT", b"221")
    f.close()


def run(tmp):
    conf = write_setup(BINARY, tmp, f"privsep-dir {tmp}/jail\n"
                       "auth-failure-delay 0\n")
    os.mkdir(f"{tmp}/jail", 0o555)
    os.chmod(f"{tmp}/jail", 0o555)
    out = f"{tmp}/out"
    os.mkdir(out)
    os.chmod(out, 0o1777)
    inner = f"{tmp}/jail{out}"
    a, b = socket.socketpair()
    with open(f"{tmp}/stderr", "w") as err:
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--vgdb=no",
             "--trace-children=yes",
             "--trace-children-skip=*sendmail*,*/unix_chkpwd",
             "--dump-before=_Fork", "--dump-before=execve",
             f"--callgrind-out-file={out}/callgrind.out.%p",
             f"--log-file={out}/valgrind.%p.log",
             BINARY, "-f", conf], stdin=b, stdout=b, stderr=err, cwd=out)
    b.close()
    try:
        a.settimeout(TIMEOUT)
        steps = session(a)
        next(steps)
        # The session is confined now: the path its counts go to.
        os.makedirs(inner, 0o755)
        os.chmod(inner, 0o1777)
        for _ in steps:
            pass
        a.close()
        proc.wait(TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    files = []
    for d in (out, inner):
        if os.path.isdir(d):
            # A file a dump never reached is empty (the sendmail
            # child's last, its exec being its end).
            files += [os.path.join(d, n) for n in os.listdir(d)
                      if n.startswith("callgrind.out.") and
                      os.path.getsize(os.path.join(d, n)) > 0]
    if os.path.isdir(inner):
        for n in os.listdir(inner):
            shutil.move(os.path.join(inner, n), out)
        files = [os.path.join(out, os.path.basename(p)) for p in files]
        first = os.path.relpath(inner, f"{tmp}/jail").split("/")[0]
        shutil.rmtree(f"{tmp}/jail/{first}")
    return proc.pid, files


def header(path):
    h = {}
    with open(path, errors="replace") as fp:
        for line in fp:
            k, sep, v = line.partition(": ")
            if sep and k in ("pid", "part", "summary", "totals", "cmd",
                             "desc"):
                h.setdefault(k, v.strip())
            if line.startswith(("fl=", "fn=")) and "summary" in h:
                break
    return h


REF = re.compile(r"^\((\d+)\)(?: (.*))?$")


def self_costs(path):
    """{(function, object): self Ir} of one callgrind.out file, read
    from the format itself (callgrind_annotate's self column gives a
    forked child's whole cost to the functions on the stack at the fork,
    __libc_start_main and main).  A cost line right after calls= is the
    call's inclusive cost: not the caller's own."""
    names = {"fn": {}, "ob": {}, "fl": {}}
    cost = collections.Counter()
    fn = ob = None
    skip = False

    def name(kind, v):
        m = REF.match(v)
        if not m:
            return v
        if m.group(2) is not None:
            names[kind][m.group(1)] = m.group(2)
        return names[kind].get(m.group(1), v)

    with open(path, errors="replace") as fp:
        for line in fp:
            c = line[:1]
            if c.isdigit() or c in "+-*":
                if skip:
                    skip = False
                else:
                    f = line.split()
                    if len(f) > 1:
                        cost[(fn, ob)] += int(f[1])
                continue
            k, sep, v = line.rstrip("\n").partition("=")
            if not sep:
                continue
            if k == "ob":
                ob = name("ob", v)
            elif k == "fn":
                fn = name("fn", v)
            elif k in ("cob", "cfn"):
                name(k[1:], v)
            elif k in ("fl", "fi", "fe", "cfi", "cfl"):
                name("fl", v)
            elif k == "calls":
                skip = True
    return cost


# What a child ran, from the names in its counts (callgrind names each
# function once per file): the first that matches names it.
ROLES = (("relay_submit", "sendmail child (to exec)"),
         ("monitor_submit", "account check (submit)"),
         ("monitor_auth", "password check"), ("data_feed", "session"))


def role(path):
    with open(path, errors="replace") as fp:
        text = fp.read()
    for marker, name in ROLES:
        if marker in text:
            return name
    return "child"


def label(key):
    fn, ob = key
    ob = os.path.basename(ob or "?")
    return fn if ob == "smtpauthd" else f"{fn} [{ob}]"


def report(per_pid, parts, roles):
    total = sum(sum(c.values()) for c in per_pid.values())
    print("instructions (Ir) of one whole session under callgrind "
          "(connect, EHLO, AUTH PLAIN, 2 KiB message, QUIT; start-up "
          "included; as root, privilege separation as shipped)")
    for pid in sorted(per_pid):
        ir = sum(per_pid[pid].values())
        print(f"  {roles[pid]:24} {ir:13,}  {100 * ir / total:5.1f}%"
              f"  ({parts[pid]} part{'s' if parts[pid] > 1 else ''})")
    merged = collections.Counter()
    for c in per_pid.values():
        merged.update(c)
    objs = collections.Counter()
    for (_, ob), v in merged.items():
        objs[os.path.basename(ob or "?")] += v
    hash_ir = sum(v for k, v in objs.items() if k.startswith("libcrypt.so"))
    print(f"  {'total':24} {total:13,}")
    print(f"  {'total but libcrypt':24} {total - hash_ir:13,}  (the "
          "password hash is fixed work; regressions show here)")
    print("  by object (self Ir):")
    for k, v in objs.most_common(8):
        print(f"    {v:13,}  {100 * v / total:5.1f}%  {k}")
    print(f"  top {TOP} functions by self Ir, all processes:")
    for k, v in merged.most_common(TOP):
        print(f"    {v:13,}  {100 * v / total:5.1f}%  {label(k)}")
    print(f"  top {TOP} functions by self Ir outside libcrypt:")
    rest = [(k, v) for k, v in merged.most_common()
            if not os.path.basename(k[1] or "").startswith("libcrypt.so")]
    for k, v in rest[:TOP]:
        print(f"    {v:13,}  {100 * v / total:5.1f}%  {label(k)}")


def main():
    if os.geteuid() != 0:
        print("callgrind.py: run as root (privilege separation as "
              "shipped)", file=sys.stderr)
        return 1
    if not shutil.which("valgrind"):
        print("callgrind.py: valgrind is not installed", file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="smtpauthd-bench.")
    os.chmod(tmp, 0o755)
    try:
        monitor, files = run(tmp)
        per_pid = collections.defaultdict(collections.Counter)
        parts = collections.Counter()
        roles = {}
        for path in files:
            pid = int(header(path)["pid"])
            if pid == monitor:
                roles[pid] = "monitor"
            elif roles.get(pid, "child") == "child":
                roles[pid] = role(path)
            per_pid[pid].update(self_costs(path))
            parts[pid] += 1
        missing = {"monitor", "session", "password check"} - \
            set(roles.values())
        if missing:
            raise SystemExit(f"callgrind.py: no counts of the "
                             f"{', '.join(sorted(missing))}: see "
                             f"{tmp}/stderr (and KEEP=1)")
        report(per_pid, parts, roles)
    finally:
        if os.environ.get("KEEP"):
            print(f"  (kept {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
