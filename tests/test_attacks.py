"""What a taken-over session, a client with a stolen password and hostile
policy servers try against the monitor's checks (issue 12, found by an
adversarial review).  Each test failed before its fix."""

import pytest

from test_privsep import (AUTH_OK, RECV, envelope, mail_reply,  # noqa: F401
                          probe, probe_bin, rcpt_reply, submit_reply)

LIMITED = "4.7.1 Sending rate limit exceeded, try later"


def test_probe_reused_queue_id_still_counts(env, probe_bin):
    """The queue id is the session's word: a subverted session that
    names the same id for every message must not have each message
    replace the last one's count in the store (a sending limit that
    never fills)."""
    steps = [AUTH_OK, RECV]
    for i in range(3):
        steps += envelope("alice@example.org", "r%d@example.net" % i)
    r = probe(env, probe_bin, steps, user_message_limit="2/1h",
              user_recipient_limit="0")
    assert [submit_reply(r.replies[i])[0] for i in (3, 6)] == [250, 250], r
    # The third MAIL is over the limit of two messages an hour.
    assert mail_reply(r.replies[7]) == (451, LIMITED), r
    assert len(env.calls()) == 2


def test_probe_reused_queue_id_recipients_count(env, probe_bin):
    """The same for the recipient limit: two messages of one recipient
    each under one id are two recipients."""
    steps = [AUTH_OK, RECV]
    for i in range(2):
        steps += envelope("alice@example.org", "r%d@example.net" % i)
    steps += envelope("alice@example.org", "r9@example.net")
    r = probe(env, probe_bin, steps, user_message_limit="0",
              user_recipient_limit="2/1h")
    assert [submit_reply(r.replies[i])[0] for i in (3, 6)] == [250, 250], r
    assert rcpt_reply(r.replies[8]) == (451, LIMITED), r


def test_probe_spool_rewritten_after_the_header_check(env, probe_bin):
    """sender-header-check reads the spool, but the subverted session
    still holds a writable descriptor of it: rewriting From: once the
    check has passed (here while the policy server takes its time) must
    not reach sendmail.  What sendmail reads is what was checked."""
    import time
    from test_policy_service import FakePolicy
    from test_privsep import mail_pkt, rcpt_pkt, submit_pkt

    def slow(req):
        if req.get("protocol_state") == "END-OF-MESSAGE":
            time.sleep(1.5)
        return b"action=DUNNO\n\n"

    srv = FakePolicy(slow)
    try:
        good = b"From: alice@example.org\nSubject: x\n\nhi\n"
        evil = b"From: bob@example.org  \nSubject: x\n\nhi\n"
        assert len(good) == len(evil)
        r = probe(env, probe_bin, [
            AUTH_OK, RECV, "spool", "write " + good.hex(),
            mail_pkt("alice@example.org"), RECV,
            rcpt_pkt("r@example.net"), RECV,
            submit_pkt(), "sleep 500", "write " + evil.hex(), RECV],
            sender_policy="own", sender_domains="example.org",
            sender_header_check="yes", policy_service=srv.spec,
            policy_service_timeout="10")
    finally:
        srv.close()
    assert r.status == 0, r
    assert r.did == ["write %d 0" % len(good)] * 2, r
    code, _ = submit_reply(r.replies[-1])
    calls = env.calls()
    if code == 250:
        assert len(calls) == 1 and b"bob@" not in calls[0].message, calls
    else:
        assert calls == [], calls


def test_concurrent_messages_cannot_both_pass_the_limit(env):
    """Two connections of one login end their messages at the same time
    (here: while another process holds the store's write lock, as a busy
    store does), with room left for one message: one is delivered, the
    other gets 451.  The check and the count are one transaction; read
    apart, both connections saw room for one and both were counted."""
    import sqlite3
    import threading
    import time
    from smtptest import check

    conf = {"user_message_limit": "1/1h", "user_recipient_limit": "0"}
    conns = [env.session(conf=conf) for _ in range(2)]
    for c in conns:
        check(c.mail("alice@example.org"), 250)
        check(c.rcpt("r@example.net"), 250)
    db = sqlite3.connect(env.statedb, timeout=5, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    results = [None, None]

    def end(i):
        results[i] = conns[i].data(b"Subject: x\r\n\r\nhi\r\n")

    threads = [threading.Thread(target=end, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    # Both monitors reach the store while it is locked (less than the
    # second they wait for a lock before failing open).
    time.sleep(0.4)
    db.execute("COMMIT")
    db.close()
    for t in threads:
        t.join(30)
    codes = sorted(r.code for r in results)
    assert codes == [250, 451], results
    assert len(env.calls()) == 1
    for c in conns:
        c.quit()
