"""The state store's two backends, one suite (state.c, state_sqlite.c,
state_redis.c): the same operations through tests/state-probe, with the
same expected answers, against SQLite and against a real redis-server
this module starts on loopback (no persistence, stopped after), so that
the two cannot drift apart.  Then Redis alone: keys, TTLs and the
prefix, the password, and a few connections through smtpauthd with two
"hosts" (two configurations) sharing one Redis.

Without redis-server the Redis cases skip; with SMTPAUTHD_REQUIRE_E2E=1
(CI) they fail instead.  The probe cases start no smtpauthd."""

import os
import subprocess

import pytest

from services import Redis
from smtptest import PEER, check, find_events, free_port, kv

TESTS = os.path.dirname(os.path.abspath(__file__))
PROBE = os.path.join(TESTS, "state-probe")


@pytest.fixture(scope="module")
def redis():
    r = Redis()
    yield r
    r.stop()


_n = [0]


def fresh_prefix():
    """Tests share the module's Redis: each counts under its own prefix."""
    _n[0] += 1
    return "t%d.%d:" % (os.getpid(), _n[0])


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    """(spec, probe options) of an empty store of either kind."""
    if request.param == "sqlite":
        return "sqlite:%s/state/state.db" % tmp_path, []
    r = request.getfixturevalue("redis")
    return r.url, ["-p", fresh_prefix()]


def probe(store, lines, opts=(), timeout=30):
    spec, o = store
    p = subprocess.run([PROBE] + o + list(opts) + [spec, "run"],
                       input="".join(l + "\n" for l in lines),
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()


def same(store, script):
    """script: (operation, expected answer) pairs."""
    got = probe(store, [op for op, _ in script])
    assert list(zip([op for op, _ in script], got)) == script, got


# ------------------------------------------------ both stores, same answers

def test_mark_counts_distinct_members_and_keeps_the_latest(store):
    same(store, [
        ("mark ip:a m1 0 600 3", "1 1"),
        ("mark ip:a m2 1 600 3", "2 1"),
        ("mark ip:a m1 2 600 3", "2 0"),     # renewed, not added
        ("mark ip:a m3 3 600 3", "3 1"),
        ("mark ip:a m4 4 600 3", "3 1"),     # m2, least recently marked, goes
        ("has ip:a m2 4", "0"),
        ("has ip:a m1 4", "1"),
        ("latest ip:a 4", "m4 4"),
        ("count ip:a 4 0", "3 0"),
        ("mark ip:a m5 4 600 0", "config"),  # keep 0 is no store's
    ])


def test_members_expire(store):
    same(store, [
        ("mark ip:b x 0 10 5", "1 1"),
        ("count ip:b 9 0", "1 0"),
        ("has ip:b x 9", "1"),
        ("has ip:b x 10", "0"),
        ("count ip:b 10 0", "0 0"),
        ("latest ip:b 10", "none"),
        ("mark ip:b y 20 10 5", "1 1"),      # x is gone, not counted
        ("mark ip:b x 21 10 5", "2 1"),      # x again: a new member
        ("latest ip:b 21", "x 21"),
    ])


def test_weights_and_until(store):
    same(store, [
        ("add sent:u q1 0 3600 5", "ok"),
        ("add sent:u q2 10 3600 3", "ok"),
        ("add sent:u q3 20 60 2", "ok"),
        ("count sent:u 30 0", "10 0"),
        # Newest to expire first: q2 (3), q1 (8): below 8 when q1 goes.
        ("count sent:u 30 8", "10 3600"),
        ("count sent:u 30 10", "10 80"),
        ("count sent:u 30 11", "10 0"),
        ("count sent:u 100 0", "8 0"),       # q3 expired
        ("add sent:u q1 100 3600 1", "ok"),  # replaces its weight
        ("count sent:u 100 0", "4 0"),
        ("unmark sent:u q2", "ok"),
        ("unmark sent:u nosuch", "ok"),
        ("count sent:u 100 0", "1 0"),
        ("latest sent:u 100", "q1 100"),
    ])


def test_forever_members_and_forget(store):
    same(store, [
        ("add suspended:bob why 0 0 1", "ok"),
        ("count suspended:bob 999999999 1", "1 forever"),
        ("latest suspended:bob 5", "why 0"),
        ("mark ip:c a 0 600 10", "1 1"),
        ("mark ip:c b 0 600 10", "2 1"),
        ("keys 1", "ip:c suspended:bob"),
        ("keys 601", "suspended:bob"),
        ("forget ip:c", "2"),
        ("forget ip:c", "0"),
        ("forget suspended:bob", "1"),
        ("latest suspended:bob 5", "none"),
        ("keys 1", ""),
    ])


def test_transactions_commit_or_roll_back(store):
    same(store, [
        ("begin sending:v", "ok"),
        ("count sent:v 0 0", "0 0"),
        ("add sent:v m1 0 60 4", "ok"),
        ("add sent:v m2 0 60 1", "ok"),
        ("end 1", "ok"),
        ("count sent:v 0 0", "5 0"),
        ("begin sending:v", "ok"),
        ("add sent:v m3 0 60 4", "ok"),
        ("unmark sent:v m1", "ok"),
        ("end 0", "retry"),                 # rolled back, as both say
        ("count sent:v 0 0", "5 0"),
        ("begin sending:v", "ok"),
        ("unmark sent:v m1", "ok"),
        ("end 1", "ok"),
        ("count sent:v 0 0", "1 0"),
    ])


def test_begin_excludes_another_connection(store):
    """Between one connection's begin and end, another's begin of the
    same scope waits, and past its timeout gives up (STATE_RETRY: that
    message goes uncounted, failing open); after end it gets in."""
    spec, o = store
    a = subprocess.Popen([PROBE] + o + [spec, "run"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        a.stdin.write("mark ip:d x 0 60 5\nbegin sending:d\n")
        a.stdin.flush()
        assert a.stdout.readline() == "1 1\n"
        assert a.stdout.readline() == "ok\n"
        assert probe(store, ["begin sending:d"], ["-t", "50"]) == ["retry"]
        if spec.startswith("redis"):
            # Redis locks the scope (one login's counts), not the store:
            # another login's transaction goes on meanwhile.  (SQLite's
            # write lock excludes every writer.)
            assert probe(store, ["begin sending:f", "end 1"],
                         ["-t", "50"]) == ["ok", "ok"]
        a.stdin.write("end 1\n")
        a.stdin.flush()
        assert a.stdout.readline() == "ok\n"
        assert probe(store, ["begin sending:d", "end 1"]) == ["ok", "ok"]
    finally:
        a.stdin.close()
        a.wait(30)


# ------------------------------------------------------------- Redis alone

def test_redis_keys_ttls_and_prefix(redis):
    prefix = fresh_prefix()
    out = probe((redis.url, ["-p", prefix]), [
        "mark ip:e a 0 600 5", "add suspended:eve r 0 0 1",
        "begin sending:e", "add sent:e q 0 3600 2", "end 1"])
    assert out == ["1 1", "ok", "ok", "ok", "ok"]
    ttl = int(redis.cli("TTL", prefix + "ip:e"))
    assert 590 <= ttl <= 601, ttl
    assert int(redis.cli("TTL", prefix + "sent:e")) > 3500
    # A suspension keeps its key until lifted.
    assert int(redis.cli("TTL", prefix + "suspended:eve")) == -1
    # The lock is gone with end; the secret is there, the hosts' own.
    assert redis.cli("EXISTS", prefix + " lock sending:e").strip() == "0"
    assert len(redis.cli("GET", prefix + " secret").strip()) == 64
    # Another prefix sees none of it.
    assert probe((redis.url, ["-p", fresh_prefix()]), ["keys 0"]) == [""]
    # Over the unix socket, the same store.
    assert probe(("redis+unix://" + redis.sock, ["-p", prefix]),
                 ["keys 0"]) == ["ip:e sent:e suspended:eve"]


def test_redis_script_flushed_and_server_slow(redis):
    """A script Redis forgot (SCRIPT FLUSH, a restart) is sent again
    (EVAL after NOSCRIPT); a server slower than state-timeout is a store
    that is down (STATE_RETRY), not a wait."""
    spec = (redis.url, ["-p", fresh_prefix()])
    a = subprocess.Popen([PROBE] + spec[1] + [spec[0], "run"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        a.stdin.write("mark ip:h x 0 60 5\n")
        a.stdin.flush()
        assert a.stdout.readline() == "1 1\n"
        redis.cli("SCRIPT", "FLUSH")
        a.stdin.write("mark ip:h y 0 60 5\n")
        a.stdin.flush()
        assert a.stdout.readline() == "2 1\n"
    finally:
        a.stdin.close()
        a.wait(30)
    # Every client's commands wait 2 s; the probe gives up after 100 ms.
    redis.cli("CLIENT", "PAUSE", "2000")
    p = subprocess.run([PROBE, "-t", "100"] + spec[1] + [spec[0], "run"],
                       input="count ip:h 0 0\n", capture_output=True,
                       text=True, timeout=30)
    redis.cli("PING")  # returns when the pause is over
    assert p.returncode == 1 and "redis GET: no answer within " \
        "state-timeout (100 ms)" in p.stderr, p


def test_redis_lock_lost_applies_nothing(redis):
    """The lock lives 12 state-timeouts (the round trips a holder may
    make); a holder frozen past that finds it lost at end (here it is
    deleted under it, as its expiry would) and applies nothing: its
    message goes uncounted (failing open), and the one that took the lock
    meanwhile is counted alone - never both on one count."""
    prefix = fresh_prefix()
    lock = prefix + " lock sending:z"
    a = subprocess.Popen([PROBE, "-p", prefix, redis.url, "run"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        a.stdin.write("begin sending:z\nadd sent:z m1 0 60 1\n")
        a.stdin.flush()
        assert [a.stdout.readline(), a.stdout.readline()] == ["ok\n"] * 2
        assert 2000 < int(redis.cli("PTTL", lock)) <= 2400
        redis.cli("DEL", lock)
        assert probe((redis.url, ["-p", prefix]), [
            "begin sending:z", "add sent:z m2 0 60 1", "end 1"]) == \
            ["ok"] * 3
        a.stdin.write("end 1\n")
        a.stdin.flush()
        assert a.stdout.readline() == "retry\n"
    finally:
        a.stdin.close()
        a.wait(30)
    assert "the lock was lost" in a.stderr.read()
    assert probe((redis.url, ["-p", prefix]), ["count sent:z 0 0"]) == \
        ["1 0"]


def test_redis_password(tmp_path):
    r = Redis(password="pw-Redis-1")
    try:
        good = tmp_path / "good"
        good.write_text("pw-Redis-1\nignored\n")
        good.chmod(0o600)
        bad = tmp_path / "bad"
        bad.write_text("wrong\n")
        bad.chmod(0o600)
        assert probe((r.url, ["-P", str(good)]), ["count ip:f 0 0"]) == \
            ["0 0"]
        # The URL's password works too (-t warns of it).
        url = "redis://:pw-Redis-1@127.0.0.1:%d/1" % r.port
        assert probe((url, []), ["count ip:f 0 0"]) == ["0 0"]
        for opts, words in (([], "NOAUTH"), (["-P", str(bad)], "WRONGPASS")):
            p = subprocess.run([PROBE] + opts + [r.url, "run"], input="",
                               capture_output=True, text=True, timeout=30)
            assert p.returncode == 1 and words in p.stderr, p
        good.chmod(0o644)
        p = subprocess.run([PROBE, "-P", str(good), r.url, "run"], input="",
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 1 and "mode 0600" in p.stderr, p
    finally:
        r.stop()


# ---------------------------------------------- through smtpauthd, two hosts

def hosts(env, redis, prefix, **conf):
    """Two hosts' configurations on one Redis (each its own file)."""
    c = {"state": redis.url, "state_prefix": prefix, "auth_limit_ip": "2/1h",
         "auth_limit_net": "0", "auth_limit_user": "0"}
    c.update(conf)
    return c, dict(c)


def test_two_hosts_count_guesses_and_S_works(env, redis):
    prefix = fresh_prefix()
    one, two = hosts(env, redis, prefix)
    for conf in (one, two):
        c = env.start(conf=conf)
        c.ehlo()
        check(c.auth_plain("alice", "wrong-%s" % id(conf)), 535)
        c.quit()
    # The third connection, on host one, is refused at the greeting.
    c = env.start(conf=one, greet=False)
    check(c.reply(15), 421, "4.7.0")
    c.wait_exit()
    path = env.write_config(two)
    r = env.run(["-f", path, "-S", "list"])
    assert r.returncode == 0, r
    assert r.stdout.decode().startswith(
        "blocked ip=%s failures=2 limit=2 until=" % PEER), r
    r = env.run(["-f", path, "-S", "unblock", PEER])
    assert r.returncode == 0 and b"unblocked ip:" + PEER.encode() in \
        r.stdout, r
    r = env.run(["-f", path, "-S", "suspend", "alice", "leaked"])
    assert r.returncode == 0, r
    r = env.run(["-f", path, "-S", "list"])
    assert r.stdout.decode().startswith(
        "suspended user=alice since="), r
    # A host with another prefix counts apart: not blocked, not suspended.
    other = dict(one, state_prefix=fresh_prefix())
    c = env.session(conf=other)
    check(c.transaction(), 250)
    c.quit()


def test_two_hosts_share_a_sending_limit(env, redis):
    one, two = hosts(env, redis, fresh_prefix(),
                     user_message_limit="2/1h")
    a = env.session(conf=one)
    check(a.transaction(), 250)
    b = env.session(conf=two)
    check(b.transaction(), 250)
    r = a.mail("alice@example.org")
    check(r, 451, "4.7.1")
    a.quit()
    b.quit()
    assert len(env.calls()) == 2


def failing_open(log):
    """The line saying the store failed: one per connection (the limits
    on guessing and the sending limits go without it together), not one
    per part or per operation."""
    lines = [l for l in log.splitlines() if "failing open" in l]
    assert [l.split("; ")[-1] for l in lines] == [
        "no limits for this connection (failing open)"], log
    return lines


def test_redis_down_fails_open_with_one_line(env):
    port = free_port()  # nothing listens there
    conf = {"state": "redis://127.0.0.1:%d" % port, "auth_limit_ip": "1/1h",
            "user_message_limit": "1/1h"}
    c = env.start(conf=conf)
    c.ehlo()
    check(c.auth_plain("alice", "wrong"), 535)
    c.login()
    check(c.transaction(), 250)
    check(c.transaction(), 250)
    c.quit()
    lines = failing_open(c.log)
    assert "cannot reach Redis at 127.0.0.1:%d" % port in lines[0], lines
    path = env.write_config(conf)
    r = env.run(["-t", "-f", path])
    assert r.returncode == 78 and b"cannot reach Redis" in r.stderr, r
    r = env.run(["-t", "-f", path, "-o", "state=redis://:pw@h:0"])
    assert r.returncode == 78 and b'"redis://:****@h:0": redis://HOST:PORT: ' \
        b"PORT is a number, 1 to 65535" in r.stderr and b"pw" not in \
        r.stderr, r


def test_redis_wrong_password_fails_open(env):
    r = Redis(password="pw-Redis-2")
    try:
        pw = env.write("redis-password", "not-it\n", 0o600)
        conf = {"state": r.url, "state_password_file": pw,
                "user_message_limit": "1/1h"}
        c = env.session(conf=conf)
        check(c.transaction(), 250)
        c.quit()
        lines = failing_open(c.log)
        assert "WRONGPASS" in lines[0], lines
        assert "not-it" not in c.log
    finally:
        r.stop()
