"""Limits on guessing across connections (limits.c, state.c): failures
counted per address, network and user in the real SQLite store, as
distinct user-and-password pairs; blocks at the greeting and at AUTH
without the backend being asked (pam_counter counts its calls); the
owner's known addresses; the store under contention and when it fails
(fail open); smtpauthd -S list and unblock.

Each test has a store of its own (Env.statedb).  Windows are seconds
long where a test waits for one to pass; nothing depends on the date."""

import calendar
import os
import shutil
import sqlite3
import subprocess
import threading
import time

import pytest

from smtptest import IS_ROOT, PEER, check, drop_kwargs, find_events, kv

ALICE = "Alice-Pw-1"   # PAM_USERS["alice"]
GREETING_421 = "Too many authentication failures from your address"
NO_LIMITS = {"auth_limit_ip": "0", "auth_limit_net": "0",
             "auth_limit_user": "0"}
TESTS = os.path.dirname(os.path.abspath(__file__))
PROBE = os.path.join(TESTS, "state-probe")


def limits(**kw):
    conf = dict(NO_LIMITS)
    conf.update(kw)
    return conf


def at(addr):
    return {"REMOTE_ADDR": addr}


def fail_once(env, addr, user, password, conf):
    """One connection from addr with one failed AUTH; the reply."""
    c = env.start(conf=conf, environ=at(addr))
    c.ehlo()
    r = c.auth_plain(user, password)
    c.quit()
    return r


def blocked_at_greeting(env, addr, conf):
    c = env.start(conf=conf, environ=at(addr), greet=False)
    r = c.reply(15)
    if r.code == 220:
        c.quit()
        return False
    check(r, 421, "4.7.0")
    assert GREETING_421 in r.text, r
    assert c.closed(), "still open after the 421 greeting"
    c.wait_exit()
    return True


def blocked_lines(env):
    out = []
    for path in env.logs:
        with open(path, "rb") as f:
            text = f.read().decode(errors="replace")
        out += [kv(e) for e in find_events(text, "blocked")]
    return out


def all_log(env):
    text = ""
    for path in env.logs:
        with open(path, "rb") as f:
            text += f.read().decode(errors="replace")
    return text


# ---------------------------------------------------------- per address

def test_distinct_failures_over_concurrent_connections_block_the_address(pam_env):
    conf = limits(auth_limit_ip="4/1h", max_auth_failures="2")
    clients = [pam_env.start(conf=conf) for _ in range(2)]
    for c in clients:
        c.ehlo()
    n = 0
    for c in clients:
        for _ in range(2):
            r = c.auth_plain("alice", "wrong-%d" % n)
            n += 1
    for c in clients:
        c.closed()
    assert pam_env.backend_calls() == 4
    assert blocked_at_greeting(pam_env, PEER, conf)
    assert pam_env.backend_calls() == 4, "the backend was asked when blocked"
    b = blocked_lines(pam_env)
    assert b and b[-1]["ip"] == PEER and b[-1]["reason"] == "auth-limit-ip", b
    assert "disconnect ip=%s user=- reason=auth-limit" % PEER in all_log(pam_env)
    # Another address is not affected, and logs in.
    c = pam_env.start(conf=conf, environ=at("198.51.100.9"))
    c.login("alice", ALICE)
    check(c.transaction(), 250)
    c.quit()


def test_the_same_stale_password_counts_once(pam_env):
    conf = limits(auth_limit_ip="3/1h", auth_limit_user="3/1h")
    for _ in range(8):
        r = fail_once(pam_env, PEER, "alice", "old-password", conf)
        check(r, 535, "5.7.8")
    assert pam_env.backend_calls() == 8
    assert not blocked_at_greeting(pam_env, PEER, conf)
    c = pam_env.start(conf=conf)
    c.login("alice", ALICE)
    c.quit()
    assert blocked_lines(pam_env) == []


def test_new_users_count_as_new_guesses(pam_env):
    conf = limits(auth_limit_ip="3/1h")
    for i in range(3):
        check(fail_once(pam_env, PEER, "user%d" % i, "same", conf), 535)
    assert blocked_at_greeting(pam_env, PEER, conf)


def test_auth_in_an_open_connection_gets_421_once_blocked(pam_env):
    conf = limits(auth_limit_ip="2/1h")
    early = pam_env.start(conf=conf)
    early.ehlo()
    for i in range(2):
        check(fail_once(pam_env, PEER, "alice", "guess-%d" % i, conf), 535)
    calls = pam_env.backend_calls()
    r = early.auth_plain("alice", ALICE)
    check(r, 421, "4.7.0")
    assert GREETING_421 in r.text, r
    assert early.closed()
    assert pam_env.backend_calls() == calls, "a blocked AUTH reached PAM"


def test_a_network_limit_catches_guesses_spread_over_a_24(pam_env):
    conf = limits(auth_limit_ip="100/1h", auth_limit_net="4/1h")
    for i in range(4):
        check(fail_once(pam_env, "203.0.113.%d" % (10 + i), "alice",
                        "guess-%d" % i, conf), 535)
    assert blocked_at_greeting(pam_env, "203.0.113.200", conf)
    b = blocked_lines(pam_env)
    assert b[-1]["reason"] == "auth-limit-net" and b[-1]["ip"] == "203.0.113.200"
    assert not blocked_at_greeting(pam_env, "203.0.114.1", conf)


def test_ipv6_counts_by_64_and_48(pam_env):
    conf = limits(auth_limit_ip="2/1h", auth_limit_net="3/1h")
    check(fail_once(pam_env, "2001:db8:1:2::1", "alice", "g1", conf), 535)
    check(fail_once(pam_env, "2001:db8:1:2::ffff", "alice", "g2", conf), 535)
    # The same /64: one client.
    assert blocked_at_greeting(pam_env, "2001:db8:1:2::77", conf)
    # Another /64 in the /48 is not blocked yet, until the /48 is.
    assert not blocked_at_greeting(pam_env, "2001:db8:1:3::1", conf)
    check(fail_once(pam_env, "2001:db8:1:3::1", "alice", "g3", conf), 535)
    assert blocked_at_greeting(pam_env, "2001:db8:1:99::1", conf)
    assert not blocked_at_greeting(pam_env, "2001:db8:2::1", conf)


def test_the_block_ends_with_its_window(pam_env):
    # Both failures in one connection and -S list at once, so that even
    # under valgrind the window has not passed before it is read; the
    # wait is what -S list says.
    window = 12
    conf = limits(auth_limit_ip="2/%ds" % window, max_auth_failures="3")
    c = pam_env.start(conf=conf)
    c.ehlo()
    for p in ("g0", "g1"):
        check(c.auth_plain("alice", p), 535)
    c.quit()
    r = S(pam_env, "list", conf=conf)
    assert "until=" in r.stdout.decode(), r
    until = r.stdout.decode().split("until=")[1].strip()
    end = calendar.timegm(time.strptime(until, "%Y-%m-%dT%H:%M:%SZ"))
    assert end - time.time() <= window, until
    assert blocked_at_greeting(pam_env, PEER, conf)
    time.sleep(max(0.0, end - time.time()) + 1.0)
    c = pam_env.start(conf=conf)
    c.login("alice", ALICE)
    c.quit()


def test_exempt_addresses_are_neither_counted_nor_blocked(pam_env):
    conf = limits(auth_limit_ip="2/1h", auth_limit_exempt="10.9.0.0/16, ::1")
    for i in range(4):
        check(fail_once(pam_env, "10.9.8.7", "alice", "g%d" % i, conf), 535)
    assert not blocked_at_greeting(pam_env, "10.9.8.7", conf)
    # Not even opened for them.
    assert not os.path.exists(pam_env.statedb)
    check(fail_once(pam_env, "10.8.0.1", "alice", "g", conf), 535)
    con = sqlite3.connect(pam_env.statedb)
    assert con.execute("SELECT count(*) FROM marks").fetchone()[0] == 1
    con.close()


# ---------------------------------------------------------- per user

def user_conf():
    return limits(auth_limit_user="3/1h", auth_known_ip_time="1h")


def test_distinct_wrong_passwords_lock_the_user_but_not_its_known_address(pam_env):
    conf = user_conf()
    home = "198.51.100.50"
    c = pam_env.start(conf=conf, environ=at(home))
    c.login("alice", ALICE)
    c.quit()
    for i in range(3):
        check(fail_once(pam_env, "203.0.113.%d" % i, "alice", "g%d" % i,
                        conf), 535)
    calls = pam_env.backend_calls()
    # Right password, new address: refused as an outage, PAM not asked.
    c = pam_env.start(conf=conf, environ=at("203.0.113.99"))
    c.ehlo()
    r = c.auth_plain("alice", ALICE)
    check(r, 454, "4.7.0")
    assert r.text == "4.7.0 Temporary authentication failure", r
    assert pam_env.backend_calls() == calls
    c.quit()
    b = blocked_lines(pam_env)
    assert b[-1] == {**b[-1], "user": "alice", "ip": "203.0.113.99",
                     "reason": "auth-limit-user"}, b
    # From home the owner still logs in and sends.
    c = pam_env.start(conf=conf, environ=at(home))
    c.login("alice", ALICE)
    check(c.transaction(), 250)
    c.quit()
    # bob is not affected.
    c = pam_env.start(conf=conf, environ=at("203.0.113.99"))
    c.login("bob", "Bob-Pw-2")
    c.quit()


def test_one_wrong_password_a_hundred_times_is_one(pam_env):
    conf = dict(user_conf(), max_auth_failures="50")
    c = pam_env.start(conf=conf, environ=at("203.0.113.1"))
    c.ehlo()
    for _ in range(40):
        check(c.auth_plain("alice", "stale"), 535)
    c.quit()
    for i in range(3):
        check(fail_once(pam_env, "203.0.113.%d" % (2 + i), "ALICE", "stale",
                        conf), 535)
    c = pam_env.start(conf=conf, environ=at("203.0.113.77"))
    c.login("alice", ALICE)
    c.quit()


def test_an_unknown_user_is_limited_alike(pam_env):
    conf = user_conf()
    replies = {}
    for user in ("alice", "nosuchuser"):
        for i in range(3):
            check(fail_once(pam_env, "203.0.113.%d" % i, user, "g%d" % i,
                            conf), 535)
        c = pam_env.start(conf=conf, environ=at("203.0.113.50"))
        c.ehlo()
        replies[user] = c.auth_plain(user, "another")
        c.quit()
    assert replies["alice"].code == replies["nosuchuser"].code == 454
    assert replies["alice"].text == replies["nosuchuser"].text


# ---------------------------------------------------------- -S

def S(env, *args, conf=None):
    """smtpauthd -f CONF [-d] -S ARGS..."""
    path = env.write_config(conf or {})
    args = list(args)
    debug = ["-d"] if args[:1] == ["-d"] else []
    return env.run(["-f", path] + debug + ["-S"] + args[len(debug):])


def test_S_list_and_unblock_on_a_real_store(pam_env):
    conf = limits(auth_limit_ip="2/1h", auth_limit_user="2/1h")
    for i in range(2):
        check(fail_once(pam_env, PEER, "alice", "g%d" % i, conf), 535)
    r = S(pam_env, "list", conf=conf)
    assert r.returncode == 0, r
    lines = sorted(r.stdout.decode().splitlines())
    assert len(lines) == 2, lines
    assert lines[0].startswith("blocked ip=%s failures=2 limit=2 until=" % PEER)
    assert lines[1].startswith("blocked user=alice failures=2 limit=2 until=")
    until = lines[0].split("until=")[1]
    assert until.endswith("Z") and time.strptime(until, "%Y-%m-%dT%H:%M:%SZ")
    assert blocked_at_greeting(pam_env, PEER, conf)
    r = S(pam_env, "-d", "unblock", PEER, conf=conf)
    assert r.returncode == 0, r
    assert ("unblocked ip:%s (2 counted)" % PEER) in r.stdout.decode()
    assert "unblocked ip:%s by smtpauthd -S" % PEER in r.stderr.decode(), r
    assert not blocked_at_greeting(pam_env, PEER, conf)
    r = S(pam_env, "unblock", "ALICE", conf=conf)
    assert r.returncode == 0 and "user:alice" in r.stdout.decode(), r
    r = S(pam_env, "list", conf=conf)
    assert r.returncode == 0 and r.stdout == b"", r
    assert b"nothing is blocked" in r.stderr
    r = S(pam_env, "unblock", "192.0.2.200", conf=conf)
    assert r.returncode == 1 and b"nothing is counted" in r.stderr, r


def test_S_unblocks_a_network_by_its_prefix(pam_env):
    conf = limits(auth_limit_net="2/1h")
    for i in range(2):
        check(fail_once(pam_env, "203.0.113.%d" % i, "alice", "g%d" % i,
                        conf), 535)
    r = S(pam_env, "list", conf=conf)
    assert r.stdout.decode().startswith("blocked net=203.0.113.0/24 "), r
    r = S(pam_env, "unblock", "203.0.113.0/24", conf=conf)
    assert r.returncode == 0, r
    assert not blocked_at_greeting(pam_env, "203.0.113.9", conf)


@pytest.mark.parametrize("args", [[], ["bogus"], ["list", "x"], ["unblock"],
                                  ["unblock", "192.0.2.1/24"]])
def test_S_usage(env, args):
    r = S(env, *args)
    assert r.returncode == 64, r


def test_S_with_state_none(env):
    r = S(env, "list", conf={"state": "none"})
    assert r.returncode == 0 and b"nothing is remembered" in r.stderr, r


# ---------------------------------------------------------- the store

def test_eight_writers_lose_no_count(env):
    spec = "sqlite:" + env.statedb
    # As the store's owner, as smtpauthd's monitor would be, from where
    # that user may run it (as the binary under test is staged).
    kw = drop_kwargs() if IS_ROOT else {}
    probe = os.path.join(env.dir, "state-probe")
    shutil.copy2(PROBE, probe)
    os.chmod(probe, 0o755)
    procs = [subprocess.Popen([probe, spec, "mark", "contended", "w%d" % i,
                               "200"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, **kw)
             for i in range(8)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    r = subprocess.run([probe, spec, "count", "contended"], capture_output=True,
                       **kw)
    assert r.returncode == 0 and r.stdout.strip() == b"1600", r
    con = sqlite3.connect(env.statedb)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_store_files_are_root_only(env):
    conf = limits(auth_limit_ip="5/1h")
    fail_once(env, PEER, "alice", "x", conf)
    for path in (env.statedb, env.statedb + ".key"):
        mode = os.stat(path).st_mode & 0o777
        assert mode == 0o600, (path, oct(mode))
    assert os.path.getsize(env.statedb + ".key") == 32
    con = sqlite3.connect(env.statedb)
    members = [m for (m,) in con.execute("SELECT member FROM marks")]
    con.close()
    assert members and all(len(m) == 32 and "x" != m for m in members)


def send_one(env, conf):
    c = env.start(conf=conf)
    c.login("alice", env.users["alice"])
    check(c.transaction(), 250)
    c.quit()
    c.wait_exit()
    return c


@pytest.mark.parametrize("how", ["missing-dir", "corrupt", "not-a-file",
                                 "no-table"])
def test_a_broken_store_does_not_stop_mail(env, how):
    conf = limits(auth_limit_ip="1/1h")
    if how == "missing-dir":
        conf["state"] = "sqlite:" + os.path.join(env.dir, "no", "such",
                                                 "state.db")
    elif how == "corrupt":
        with open(env.statedb, "wb") as f:
            f.write(b"this is not an SQLite database\n" * 200)
        env.chown(env.statedb)
        os.chmod(env.statedb, 0o600)
    elif how == "not-a-file":
        os.mkdir(env.statedb)
        env.chown(env.statedb)
    else:
        # Made as the service makes it, then damaged: it still opens.
        check(fail_once(env, PEER, "alice", "first", limits(auth_limit_ip="5/1h")),
              535)
        con = sqlite3.connect(env.statedb)
        con.execute("DROP TABLE marks")
        con.commit()
        con.close()
    check(fail_once(env, PEER, "alice", "wrong", conf), 535)
    c = send_one(env, conf)
    assert "failing open" in c.log, c.log
    assert [kv(e) for e in find_events(c.log, "auth") if e.startswith("auth ok")]
    path = env.write_config(conf)
    r = env.run(["-t", "-f", path])
    assert r.returncode == 78 and b"state sqlite:" in r.stderr, r


def test_state_none_remembers_nothing(env):
    conf = limits(auth_limit_ip="1/1h", state="none")
    for i in range(3):
        check(fail_once(env, PEER, "alice", "g%d" % i, conf), 535)
    send_one(env, conf)
    assert not os.path.exists(env.statedb)


@pytest.mark.parametrize("key,value", [
    ("auth-limit-ip", "10"), ("auth-limit-ip", "10/"), ("auth-limit-ip", "x/1m"),
    ("auth-limit-ip", "10/1w"), ("auth-limit-net", "10001/1m"),
    ("auth-limit-user", "5/367d"), ("auth-known-ip-time", "-1"),
    ("auth-limit-exempt", "192.0.2.1/24"), ("auth-limit-exempt", "example.org"),
    ("state", "sqlite:relative.db"), ("state", "redis://127.0.0.1:0"),
    ("state", "mysql:x")])
def test_bad_values_are_refused(env, key, value):
    r = env.run(["-f", "/dev/null", "-o", "%s=%s" % (key, value), "-T"])
    assert r.returncode == 78 and key.encode() in r.stderr, r


def test_T_prints_limits_canonically(env):
    r = env.run(["-f", "/dev/null", "-o", "auth-limit-ip=5/600",
                 "-o", "auth-limit-net=0", "-o", "auth-known-ip-time=7200",
                 "-o", "auth-limit-exempt=192.0.2.0/24 2001:db8::/32", "-T"])
    assert r.returncode == 0, r
    out = r.stdout.decode().splitlines()
    for line in ("auth-limit-ip 5/10m", "auth-limit-net 0",
                 "auth-known-ip-time 2h", "auth-limit-user 20/1d",
                 "auth-limit-exempt 192.0.2.0/24 2001:db8::/32",
                 "state sqlite:/var/lib/smtpauthd/state.db"):
        assert line in out, out


def test_a_known_ipv6_client_is_its_64(pam_env):
    conf = user_conf()
    c = pam_env.start(conf=conf, environ=at("2001:db8:5:6::1"))
    c.login("alice", ALICE)
    c.quit()
    for i in range(3):
        check(fail_once(pam_env, "203.0.113.%d" % i, "alice", "g%d" % i,
                        conf), 535)
    # A privacy address of the same /64 is the same client.
    c = pam_env.start(conf=conf, environ=at("2001:db8:5:6:a:b:c:d"))
    c.login("alice", ALICE)
    c.quit()
    c = pam_env.start(conf=conf, environ=at("2001:db8:5:7::1"))
    c.ehlo()
    check(c.auth_plain("alice", ALICE), 454, "4.7.0")
    c.quit()


def test_a_store_in_a_directory_others_may_write_is_not_used(env):
    os.chmod(env.statedir, 0o770)
    conf = limits(auth_limit_ip="1/1h")
    check(fail_once(env, PEER, "alice", "wrong", conf), 535)
    c = send_one(env, conf)
    assert "no one else may write" in c.log and "failing open" in c.log, c.log
    assert not os.path.exists(env.statedb)


def test_implicit_tls_is_refused_inside_tls(env, pki):
    """On 465 the 421 comes after the handshake: plaintext would look like a
    broken handshake to the client."""
    conf = limits(auth_limit_ip="1/1h", tls="implicit",
                  tls_cert=pki.path("chain.pem"), tls_key=pki.path("leaf.key"))
    check(fail_once(env, PEER, "alice", "wrong", limits(auth_limit_ip="1/1h")),
          535)
    c = env.start(conf=conf, greet=False)
    c.wrap_tls()
    r = c.reply(15)
    check(r, 421, "4.7.0")
    assert GREETING_421 in r.text, r
    assert c.closed()


def concurrent_auths(env, conf, n, user, password_of):
    """n connections from PEER, greeted and past EHLO, then each sends its
    AUTH at once; their replies."""
    clients = [env.start(conf=conf) for _ in range(n)]
    for c in clients:
        c.ehlo()
    go = threading.Barrier(n)
    replies = [None] * n

    def one(i):
        go.wait()
        replies[i] = clients[i].auth_plain(user, password_of(i))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for c in clients:
        try:
            c.cmd("QUIT")           # a 421 closed some already
        except OSError:
            pass
        c.closed()
        c.wait_exit()
    return replies


def test_guesses_at_once_are_counted_before_their_checks(pam_env):
    # Not under valgrind: eight monitors at once there wait on each
    # other's transactions past the store's one-second lock wait, and
    # fail open, as they should.
    conf = limits(auth_limit_ip="2/1h")
    replies = concurrent_auths(pam_env, conf, 8, "alice",
                               lambda i: "guess-%d" % i)
    codes = sorted(r.code for r in replies)
    assert pam_env.backend_calls() <= 2, (pam_env.backend_calls(), codes)
    assert codes.count(535) == pam_env.backend_calls(), codes
    assert codes.count(421) == 8 - pam_env.backend_calls(), codes
    assert blocked_at_greeting(pam_env, PEER, conf)


def test_right_passwords_at_once_are_not_counted(pam_env):
    conf = limits(auth_limit_ip="2/1h", auth_limit_user="2/1h")
    replies = concurrent_auths(pam_env, conf, 4, "alice", lambda i: ALICE)
    assert [r.code for r in replies] == [235] * 4, replies
    con = sqlite3.connect(pam_env.statedb)
    kinds = [k for (k,) in con.execute("SELECT key FROM marks")]
    con.close()
    assert kinds == ["known:alice"], kinds


def test_limit_reached_is_logged_once(pam_env):
    conf = limits(auth_limit_ip="2/1h", max_auth_failures="10")
    c = pam_env.start(conf=conf)
    c.ehlo()
    for p in ("a", "b"):
        check(c.auth_plain("alice", p), 535)
    r = c.auth_plain("alice", "c")
    check(r, 421, "4.7.0")
    c.closed()
    c.wait_exit()
    reached = [kv(e) for e in find_events(all_log(pam_env), "limit")]
    assert len(reached) == 1, reached
    assert reached[0]["reason"] == "auth-limit-ip" and \
        reached[0]["failures"] == "2", reached
    assert "limit reached ip:%s " % PEER in all_log(pam_env)
    assert [b["reason"] for b in blocked_lines(pam_env)] == ["auth-limit-ip"]


def test_a_flood_of_names_does_not_push_out_fresh_failures(env):
    """Past the bound the least recently marked go first: a day's worth
    of failures under other names must not lift an address's block."""
    bound = 200000
    conf = limits(auth_limit_ip="2/1h", auth_limit_user="1000/1d")
    check(fail_once(env, "198.51.100.1", "x", "made", conf), 535)
    now = int(time.time())
    con = sqlite3.connect(env.statedb)
    (top,) = con.execute("SELECT max(rowid) FROM marks").fetchone()
    # Rows so that the store is past its bound and PEER's second failure
    # lands on an insertion that trims (every 256th rowid).
    last = ((top + bound) // 256 + 1) * 256 - 3
    con.executemany(
        "INSERT INTO marks (rowid, key, member, expires, marked) "
        "VALUES (?, ?, 'm', ?, ?)",
        ((i, "user:bulk%d" % i, now + 86400, now - 3600)
         for i in range(top + 1, last + 1)))
    con.commit()
    con.close()
    for p in ("g1", "g2"):
        check(fail_once(env, PEER, "alice", p, conf), 535)
    con = sqlite3.connect(env.statedb)
    (rows,) = con.execute("SELECT count(*) FROM marks").fetchone()
    (ip,) = con.execute("SELECT count(*) FROM marks WHERE key = ?",
                        ("ip:" + PEER,)).fetchone()
    con.close()
    # Trimmed (to the bound, then one more insertion), the fresh kept.
    assert rows <= bound + 256 and rows < last - top, rows
    assert ip == 2
    assert blocked_at_greeting(env, PEER, conf)
