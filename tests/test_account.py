"""The account checked again before each message (auth_account, through
the monitor's bounded check): a password-file entry locked or removed
while a connection is open stops it from sending more.  Real PAM
accounts are test_root.py's."""

import os

from smtptest import PEER, check, find_events, kv


def all_log(env):
    return "".join(open(p, "rb").read().decode(errors="replace")
                   for p in env.logs)


def test_locked_entry_between_messages(env):
    c = env.session()
    check(c.transaction(), 250)
    hashes = dict(line.split(":", 1) for line in
                  open(env.conf["passwd-file"]).read().splitlines())
    env.write("passwd", "alice:!%sbob:%s" % (hashes["alice"] + "\n",
                                            hashes["bob"] + "\n"), 0o600)
    r = c.transaction()
    check(r, 550, "5.7.1")
    assert r.text == "5.7.1 Account not permitted to send", r
    check(c.mail("alice@example.org"), 550, "5.7.1")
    # Unlocked again: this connection stays refused, a new one is not.
    env.write_passwd()
    check(c.mail("alice@example.org"), 550, "5.7.1")
    c.quit()
    c = env.session()
    check(c.transaction(), 250)
    c.quit()
    assert len(env.calls()) == 2
    log = all_log(env)
    denied = [kv(e) for e in find_events(log, "denied")]
    assert [(d["user"], d["ip"], d["cmd"], d["reason"]) for d in denied] \
        == [("alice", PEER, "DATA", "account-locked")] + \
        [("alice", PEER, "MAIL", "account")] * 2, log


def test_removed_entry(env):
    c = env.session()
    hashes = dict(line.split(":", 1) for line in
                  open(env.conf["passwd-file"]).read().splitlines())
    env.write("passwd", "bob:%s\n" % hashes["bob"], 0o600)
    check(c.mail("alice@example.org"), 250)
    check(c.rcpt("r@example.net"), 250)
    check(c.data(b"Subject: x\r\n\r\nhi\r\n"), 550, "5.7.1")
    c.quit()
    env.no_calls()


def test_unreadable_file_is_a_temporary_failure(env):
    c = env.session()
    os.chmod(env.conf["passwd-file"], 0o644)    # refused: others may read
    r = c.transaction()
    check(r, 451, "4.7.0")
    os.chmod(env.conf["passwd-file"], 0o600)
    check(c.transaction(), 250)
    c.quit()
    assert len(env.calls()) == 1
