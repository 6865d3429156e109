"""The sender bound to the login (policy.c, decided by the monitor at
MAIL and again at the end of DATA): sender-policy own, map and any,
sender-map in Postfix's form, <>, the header check, inject headers, and
a session speaking the channel itself that cannot get past it."""

import os

from smtptest import PEER, check, find_events, kv
from test_privsep import (AUTH_OK, RECV, REFUSED, mail_pkt, mail_reply,
                          probe, probe_bin, rcpt_pkt, submit_pkt)

assert probe_bin    # the fixture, imported for the probe test below

DOMAINS = {"sender_policy": "own",
           "sender_domains": "example.org, mail.example.org"}
BODY = b"Subject: x\r\n\r\nhi\r\n"


def own(**kw):
    conf = dict(DOMAINS)
    conf.update(kw)
    return conf


def all_log(env):
    return "".join(open(p, "rb").read().decode(errors="replace")
                   for p in env.logs)


def denied(env):
    return [kv(e) for e in find_events(all_log(env), "denied")]


def sender_map(env, text):
    return env.write("sender_login", text, 0o600)


def test_own_address_and_tags(env):
    c = env.session(conf=own())
    for sender in ("alice@example.org", "alice+news@example.org",
                   "ALICE@Example.ORG", "alice@mail.example.org", ""):
        check(c.transaction(sender=sender, body=BODY), 250)
    c.quit()
    assert [call.argv[3] for call in env.calls()] == [
        "alice@example.org", "alice+news@example.org", "ALICE@Example.ORG",
        "alice@mail.example.org", "<>"]
    assert denied(env) == []


def test_another_users_address_refused_at_mail(env):
    c = env.session(conf=own())
    for sender in ("bob@example.org", "alice@evil.example",
                   "alicex@example.org", "alice-x@example.org"):
        r = c.mail(sender)
        check(r, 553, "5.7.1")
        assert r.text == ("5.7.1 <%s>: Sender address rejected: not owned "
                          "by user alice" % sender), r
        check(c.rcpt("r@example.net"), 503)
    c.quit()
    env.no_calls()
    ev = denied(env)
    assert [(e["user"], e["ip"], e["cmd"], e["reason"], e["from"])
            for e in ev] == [
        ("alice", PEER, "MAIL", "sender-not-owned", "<%s>" % a)
        for a in ("bob@example.org", "alice@evil.example",
                  "alicex@example.org", "alice-x@example.org")], ev


def test_refusals_count_as_errors(env):
    """Trying one address after another ends in max-errors' 421."""
    c = env.session(conf=own(max_errors=3))
    check(c.mail("a@evil.example"), 553)
    check(c.mail("b@evil.example"), 553)
    check(c.mail("c@evil.example"), 421, "4.7.0")
    assert c.closed(10)


def test_delimiter_set(env):
    c = env.session(conf=own(sender_delimiter="+-"))
    check(c.transaction(sender="alice-lists@example.org", body=BODY), 250)
    check(c.mail("alice_x@example.org"), 553)
    c.quit()


def test_sender_map_aliases_and_domains(env):
    path = sender_map(env, "# aliases\n"
                      "info@example.org    alice, bob\n"
                      "@shop.example       alice\n"
                      "sales@shop.example  bob\n")
    conf = own(sender_policy="map", sender_map=path)
    c = env.session(conf=conf)
    for sender in ("info@example.org", "INFO@example.org",
                   "anything@shop.example", "alice@example.org"):
        check(c.transaction(sender=sender, body=BODY), 250)
    # The address's own entry wins over its domain's.
    check(c.mail("sales@shop.example"), 553)
    c.quit()
    c = env.session("bob", conf=conf)
    check(c.transaction(sender="info@example.org", body=BODY), 250)
    check(c.mail("anything@shop.example"), 553)
    c.quit()
    assert len(env.calls()) == 5


def test_map_entries_unused_under_own(env):
    path = sender_map(env, "info@example.org alice\n")
    c = env.session(conf=own(sender_map=path))
    check(c.mail("info@example.org"), 553)
    c.quit()


def test_broken_map_is_a_temporary_failure(env):
    path = sender_map(env, "info@example.org alice\nbroken-line\n")
    c = env.session(conf=own(sender_policy="map", sender_map=path))
    r = c.mail("info@example.org")
    check(r, 451, "4.3.0")
    # The login's own address does not need the map.
    check(c.transaction(sender="alice@example.org", body=BODY), 250)
    c.quit()
    assert "sender-map %s:2" % path in all_log(env)
    assert [e["reason"] for e in denied(env)] == ["sender-map-unavailable"]


def test_any(env):
    c = env.session(conf=own(sender_policy="any"))
    check(c.transaction(sender="bob@elsewhere.example", body=BODY), 250)
    c.quit()
    assert len(env.calls()) == 1


def test_header_check(env):
    conf = own(sender_header_check="yes")
    c = env.session(conf=conf)
    check(c.transaction(body=b"From: Alice <alice@example.org>\r\n"
                        b"Subject: ok\r\n\r\nhi\r\n"), 250)
    r = c.transaction(body=b"From: \"The Boss\" <bob@example.org>\r\n"
                      b"Subject: forged\r\n\r\nhi\r\n")
    check(r, 550, "5.7.1")
    assert r.text == "5.7.1 From: header not owned by user alice", r
    check(c.transaction(body=b"From: alice@example.org\r\n"
                        b"Sender: bob@example.org\r\n\r\nhi\r\n"), 550)
    check(c.transaction(body=b"From: alice@example.org\r\n"
                        b"From: bob@example.org\r\n\r\nhi\r\n"), 550)
    check(c.transaction(body=b"Subject: no From at all\r\n\r\nhi\r\n"), 250)
    check(c.transaction(body=b"From: \"unterminated <bob@example.org>\r\n"
                        b"\r\nhi\r\n"), 550)
    c.quit()
    assert len(env.calls()) == 2
    reasons = [(e["reason"], e.get("from")) for e in denied(env)]
    assert reasons == [("from-header-not-owned", "<bob@example.org>"),
                       ("sender-header-not-owned", "<bob@example.org>"),
                       ("from-header-not-owned", "<bob@example.org>"),
                       ("header-unreadable", None)], reasons


def test_header_check_off(env):
    c = env.session(conf=own())
    check(c.transaction(body=b"From: bob@example.org\r\n\r\nhi\r\n"), 250)
    c.quit()
    assert len(env.calls()) == 1


def test_inject_headers_still_checks_the_envelope(env):
    c = env.session(conf=own(inject="headers"))
    check(c.mail("bob@example.org"), 553)
    check(c.transaction(body=b"To: r@example.net\r\n\r\nhi\r\n"), 250)
    c.quit()
    call = env.one_call()
    assert call.argv[1:5] == ["-i", "-t", "-f", "alice@example.org"], \
        call.argv


def test_default_domains_from_hostname(env):
    """Unset sender-domains: hostname and its parent domain."""
    c = env.start(conf={"sender_policy": "own",
                        "hostname": "mail.example.org"}, greet=False)
    check(c.reply(15), 220)
    c.login()
    check(c.transaction(sender="alice@example.org", body=BODY), 250)
    check(c.transaction(sender="alice@mail.example.org", body=BODY), 250)
    check(c.mail("alice@other.example"), 553)
    c.quit()


# ---- a session that speaks the channel itself (tests/monitor-probe)

def test_probe_cannot_skip_the_check(env, probe_bin):
    """MAIL with another user's address is refused by the monitor; the
    RCPT and SUBMIT that follow are protocol violations, and nothing
    reaches sendmail."""
    r = probe(env, probe_bin, [AUTH_OK, RECV, mail_pkt("bob@example.org"),
                               RECV, rcpt_pkt("r@example.net"), RECV,
                               submit_pkt(), RECV], **own())
    assert mail_reply(r.replies[1]) == (
        553, "5.7.1 <bob@example.org>: Sender address rejected: not owned "
        "by user alice"), r
    env.no_calls()
    assert REFUSED + "RCPT without an approved MAIL; closing" in r.log, r
    assert os.listdir(env.spool) == []
