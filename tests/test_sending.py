"""Sending limits per login and suspension (sending.c, monitor.c): counted
by the monitor in the real SQLite store (each test has its own), at MAIL
and at each RCPT so that the client is told at the command that goes
over, and again at the end of DATA; only what sendmail accepted counts.
smtpauthd -S suspend, unsuspend and list.

Windows are an hour long: nothing here waits for one to pass, and
nothing depends on the date."""

import os
import re

from smtptest import PEER, check, find_events, kv

LIMITED = "4.7.1 Sending rate limit exceeded, try later"
SUSPENDED = "5.7.1 Account suspended from sending; contact postmaster"
OFF = {"user_recipient_limit": "0", "user_message_limit": "0"}
DEFAULTS = {"user_recipient_limit": None, "user_message_limit": None}


def limits(**kw):
    conf = dict(OFF)
    conf.update(kw)
    return conf


def all_log(env):
    text = ""
    for path in env.logs:
        with open(path, "rb") as f:
            text += f.read().decode(errors="replace")
    return text


def events(env, name):
    return [kv(e) for e in find_events(all_log(env), name)]


def send(c, rcpts, sender="alice@example.org"):
    """One whole message; the end-of-data reply."""
    return c.transaction(sender=sender, rcpts=rcpts)


def S(env, *args, conf=None):
    path = env.write_config(conf or {})
    return env.run(["-f", path, "-S"] + list(args))


def test_recipient_limit_at_the_rcpt_that_passes_it(env):
    conf = limits(user_recipient_limit="3/1h")
    c = env.session(conf=conf)
    check(send(c, ["a@example.net", "b@example.net"]), 250)
    check(c.mail("alice@example.org"), 250)
    check(c.rcpt("c@example.net"), 250, "2.1.5")
    r = c.rcpt("d@example.net")
    check(r, 451, "4.7.1")
    assert r.text == LIMITED, r
    # The recipient that fits is still delivered.
    check(c.data(b"Subject: x\r\n\r\nhi\r\n"), 250)
    c.quit()
    calls = env.calls()
    assert [call.rcpts() for call in calls] == [
        ["a@example.net", "b@example.net"], ["c@example.net"]], calls
    # The store the monitor kept open from MAIL on is not sendmail's.
    assert [call.fds for call in calls] == [[0, 1, 2]] * 2, calls
    ev = events(env, "limited")
    assert len(ev) == 1, ev
    assert (ev[0]["user"], ev[0]["ip"], ev[0]["limit"], ev[0]["rate"],
            ev[0]["sent"]) == ("alice", PEER, "user-recipient-limit",
                               "3/3600s", "2"), ev


def test_recipient_limit_counts_across_connections_and_windows(env):
    conf = limits(user_recipient_limit="100/1h, 2/1d")
    c = env.session(conf=conf)
    check(send(c, ["a@example.net", "b@example.net"]), 250)
    c.quit()
    c = env.session(conf=conf)
    check(c.mail("alice@example.org"), 250)
    check(c.rcpt("c@example.net"), 451, "4.7.1")
    c.quit()
    assert len(env.calls()) == 1


def test_message_limit_at_mail(env):
    conf = limits(user_message_limit="2/1h")
    c = env.session(conf=conf)
    for i in range(2):
        check(send(c, ["r%d@example.net" % i]), 250)
    r = c.mail("alice@example.org")
    check(r, 451, "4.7.1")
    assert r.text == LIMITED, r
    # Nothing was begun: RCPT needs a MAIL first.
    check(c.rcpt("x@example.net"), 503)
    c.quit()
    assert len(env.calls()) == 2
    ev = events(env, "limited")
    assert [e["limit"] for e in ev] == ["user-message-limit"], ev


def test_another_login_is_not_limited(env):
    conf = limits(user_message_limit="1/1h")
    c = env.session(conf=conf)
    check(send(c, ["r@example.net"]), 250)
    check(c.mail("alice@example.org"), 451)
    c.quit()
    c = env.session("bob", conf=conf)
    check(send(c, ["r@example.net"], sender="bob@example.org"), 250)
    c.quit()
    assert len(env.calls()) == 2


def test_refused_messages_do_not_count(env):
    conf = limits(user_recipient_limit="2/1h", user_message_limit="2/1h")
    env.knob("exit", 75)
    c = env.session(conf=conf)
    for i in range(3):
        check(send(c, ["a@example.net", "b@example.net"]), 451, "4.3.0")
    env.knob("exit", 0)
    check(send(c, ["a@example.net", "b@example.net"]), 250)
    check(c.mail("alice@example.org"), 250)
    check(c.rcpt("c@example.net"), 451, "4.7.1")
    c.quit()
    assert len(env.calls()) == 4


def test_limits_off(env):
    c = env.session(conf=limits())
    for i in range(5):
        check(send(c, ["a@example.net", "b@example.net"]), 250)
    c.quit()
    assert len(env.calls()) == 5
    assert events(env, "limited") == []


def test_end_of_data_checks_again(env):
    """Between one connection's RCPT and its end of DATA, another of the
    same login used the allowance: the first is refused at the end of
    DATA, and nothing of it reaches sendmail."""
    conf = limits(user_recipient_limit="1/1h")
    a = env.session(conf=conf)
    check(a.mail("alice@example.org"), 250)
    check(a.rcpt("a@example.net"), 250)
    b = env.session(conf=conf)
    check(send(b, ["b@example.net"]), 250)
    b.quit()
    r = a.data(b"Subject: late\r\n\r\nhi\r\n")
    check(r, 451, "4.7.1")
    a.quit()
    assert [call.rcpts() for call in env.calls()] == [["b@example.net"]]


def test_default_limits(env):
    """The defaults are on: 30 messages a minute."""
    c = env.session(conf=DEFAULTS)
    for i in range(30):
        check(send(c, ["r@example.net"]), 250)
    check(c.mail("alice@example.org"), 451, "4.7.1")
    c.quit()
    assert len(env.calls()) == 30


def test_suspend_and_unsuspend(env):
    conf = limits(user_message_limit="10/1m")
    r = S(env, "suspend", "alice", "password seen on a paste site",
          conf=conf)
    assert r.returncode == 0 and r.stdout.decode() == "suspended alice\n", r
    c = env.session(conf=conf)  # it still logs in
    r = c.mail("alice@example.org")
    check(r, 550, "5.7.1")
    assert r.text == SUSPENDED, r
    c.quit()
    c = env.session("bob", conf=conf)
    check(send(c, ["r@example.net"], sender="bob@example.org"), 250)
    c.quit()
    ev = events(env, "denied")
    assert [(e["user"], e["ip"], e["cmd"], e["reason"]) for e in ev] == [
        ("alice", PEER, "MAIL", "suspended")], ev
    r = S(env, "list", conf=conf)
    assert r.returncode == 0, r
    lines = r.stdout.decode().splitlines()
    sus = [l for l in lines if l.startswith("suspended ")]
    assert len(sus) == 1, lines
    assert re.match(r'^suspended user=alice since=\d{4}-\d\d-\d\dT\d\d:\d\d:'
                    r'\d\dZ reason="password seen on a paste site"$',
                    sus[0]), sus
    assert "sent user=bob messages=1 window=60s" in lines, lines
    r = S(env, "unsuspend", "ALICE")
    assert r.returncode == 0 and r.stdout.decode() == "unsuspended ALICE\n", r
    r = S(env, "unsuspend", "alice")
    assert r.returncode == 1 and b"not suspended" in r.stderr, r
    c = env.session()
    check(send(c, ["r@example.net"]), 250)
    c.quit()


def test_suspension_reaches_an_open_connection(env):
    """Suspended while connected: the next MAIL is refused, and so is the
    end of DATA of a transaction begun before."""
    c = env.session()
    check(c.mail("alice@example.org"), 250)
    check(c.rcpt("r@example.net"), 250)
    r = S(env, "suspend", "alice")
    assert r.returncode == 0, r
    check(c.data(b"Subject: x\r\n\r\nhi\r\n"), 550, "5.7.1")
    check(c.mail("alice@example.org"), 550, "5.7.1")
    c.quit()
    env.no_calls()
    r = S(env, "list")
    assert 'suspended user=alice since=' in r.stdout.decode(), r


def test_S_usage(env):
    for args in (["suspend"], ["unsuspend"], ["suspend", "a", "b", "c"],
                 ["unsuspend", "a", "b"], ["suspend", ""]):
        r = S(env, *args)
        assert r.returncode == 64 and b"suspend LOGIN" in r.stderr, (args, r)


def test_store_failing_open(env):
    """A store that cannot be opened lets mail through, with a log line."""
    conf = limits(user_message_limit="1/1h",
                  state="sqlite:/proc/no/such/dir/state.db")
    c = env.session(conf=conf)
    for i in range(2):
        check(send(c, ["r@example.net"]), 250)
    c.quit()
    assert len(env.calls()) == 2
    assert all_log(env).count(
        "no limits for this connection (failing open)") == 1, all_log(env)


def limits_map(env, text):
    return env.write("limits_map", text, 0o600)


def test_limits_map_override_and_unlimited(env):
    path = limits_map(env, "# per login\n"
                      "alice  recipients=3/1h, 100/1d   messages=off\n"
                      "BOB    unlimited\n")
    conf = limits(user_recipient_limit="1/1h", user_message_limit="1/1h",
                  limits_map=path)
    c = env.session(conf=conf)
    check(send(c, ["a@example.net", "b@example.net"]), 250)
    check(c.mail("alice@example.org"), 250)    # messages=off
    check(c.rcpt("c@example.net"), 250)
    check(c.rcpt("d@example.net"), 451, "4.7.1")
    check(c.cmd("RSET"), 250)
    c.quit()
    c = env.session("bob", conf=conf)
    for i in range(3):
        check(send(c, ["a@example.net", "b@example.net"],
                   sender="bob@example.org"), 250)
    c.quit()
    assert len(env.calls()) == 4


def test_limits_map_not_named_keeps_the_default(env):
    path = limits_map(env, "alice messages=5/1h\n")
    conf = limits(user_recipient_limit="1/1h", limits_map=path)
    c = env.session(conf=conf)
    check(send(c, ["a@example.net"]), 250)
    check(c.mail("alice@example.org"), 250)
    check(c.rcpt("b@example.net"), 451)
    c.quit()


def test_broken_limits_map_keeps_the_defaults(env):
    path = limits_map(env, "alice unlimited\nbob recipients=lots\n")
    conf = limits(user_message_limit="1/1h", limits_map=path)
    c = env.session(conf=conf)
    check(send(c, ["a@example.net"]), 250)
    check(c.mail("alice@example.org"), 451)
    c.quit()
    assert "the default sending limits apply" in all_log(env)


def test_t_checks_the_limits_map(env):
    path = limits_map(env, "alice unlimited\n"
                      "bob recipients=lots\n"
                      "carol speed=9\n"
                      "dave\n"
                      "erin recipients=1/1h, 2/1h\n")
    conf = env.write_config({"limits_map": path})
    r = env.run(["-t", "-f", conf])
    err = r.stderr.decode()
    assert r.returncode == 78, err
    for n in (2, 3, 4, 5):
        assert "limits-map %s:%d:" % (path, n) in err, err
    assert "limits-map %s:1:" % path not in err, err
    os.chmod(path, 0o666)
    r = env.run(["-t", "-f", conf])
    assert r.returncode == 78 and "limits-map" in r.stderr.decode(), r


def test_t_warns_without_a_store(env):
    path = env.write_config({"state": "none", "user_message_limit": "5/1h"})
    r = env.run(["-t", "-f", path])
    err = r.stderr.decode()
    assert r.returncode == 0 and "warning: state none: the sending limits " \
        "are not counted" in err, err
    path = env.write_config({"state": "none"})
    r = env.run(["-t", "-f", path])
    assert "state none" not in r.stderr.decode(), r


def test_a_newer_stores_layout_is_left_alone(env):
    """A store another (newer) smtpauthd made is not dropped, which would
    lift its suspensions: this one goes on without it."""
    import sqlite3
    r = S(env, "suspend", "alice", "kept")
    assert r.returncode == 0, r
    db = sqlite3.connect(env.statedb)
    version = db.execute("PRAGMA user_version").fetchone()[0]
    db.execute("PRAGMA user_version = %d" % (version + 1))
    db.commit()
    db.close()
    c = env.session()
    check(send(c, ["r@example.net"]), 250)      # failing open
    c.quit()
    assert "newer than this smtpauthd's" in all_log(env)
    r = S(env, "list")
    assert r.returncode == 75 and b"newer" in r.stderr, r
    db = sqlite3.connect(env.statedb)
    rows = db.execute("SELECT count(*) FROM marks WHERE key LIKE "
                      "'suspended:%'").fetchone()[0]
    db.close()
    assert rows == 1


def test_t_warns_inject_headers_with_a_recipient_limit(env):
    path = env.write_config({"inject": "headers",
                             "user_recipient_limit": "10/1h"})
    r = env.run(["-t", "-f", path])
    assert r.returncode == 0 and b"warning: inject headers" in r.stderr, r
    path = env.write_config({"inject": "headers"})
    r = env.run(["-t", "-f", path])
    assert b"inject headers" not in r.stderr, r
