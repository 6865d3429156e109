"""The sender policy's configuration (issue 12): sender-policy,
sender-domains, sender-delimiter, sender-map, sender-header-check, as -t
checks them and -T prints them.  What the policy decides is tested in
tests/unit.c (test_policy); these run the real binary's -t on real files.
"""

import os

import pytest

from smtptest import IS_ROOT, RUN_UID, check

GOOD_MAP = """\
# moved from Postfix: smtpd_sender_login_maps = hash:/etc/postfix/sender_login
sales@example.org      alice, bob
support@example.org    alice
    carol
@example.net           erin
"""


def run_t(env, conf, as_root=False):
    path = env.write_config(conf)
    r = env.run(["-t", "-f", path], as_root=as_root)
    return r, r.stderr.decode()


def test_good_map_passes(env):
    m = env.write("sender_login", GOOD_MAP)
    r, err = run_t(env, {"sender-policy": "map", "sender-map": m})
    assert r.returncode == 0, err
    assert "sender" not in err, err


def test_bad_map_line_named_with_its_number(env):
    m = env.write("sender_login", GOOD_MAP + "\nnologin\nx@y@z bob\n")
    r, err = run_t(env, {"sender-policy": "map", "sender-map": m})
    assert r.returncode == 78, err
    assert "sender-map %s:7: \"nologin\" has no value" % m in err, err
    assert "sender-map %s:8: \"x@y@z\" is not an address" % m in err, err
    assert all(l.startswith("smtpauthd: ") for l in err.splitlines()), err


def test_continuation_of_nothing(env):
    m = env.write("sender_login", "   alice@example.org alice\n")
    r, err = run_t(env, {"sender-policy": "map", "sender-map": m})
    assert r.returncode == 78, err
    assert "sender-map %s:1: begins with a blank" % m in err, err


@pytest.mark.parametrize("mode", [0o664, 0o646])
def test_map_writable_by_others(env, mode):
    m = env.write("sender_login", GOOD_MAP, mode=mode)
    r, err = run_t(env, {"sender-policy": "map", "sender-map": m})
    assert r.returncode == 78, err
    assert "sender-map %s: group or others may write" % m in err, err


def test_map_missing(env):
    m = os.path.join(env.dir, "nonexistent")
    r, err = run_t(env, {"sender-policy": "map", "sender-map": m})
    assert r.returncode == 78, err
    assert "sender-map %s: No such file" % m in err, err


def test_map_symlink_refused(env):
    m = env.write("sender_login", GOOD_MAP)
    link = os.path.join(env.dir, "link")
    os.symlink(m, link)
    r, err = run_t(env, {"sender-policy": "map", "sender-map": link})
    assert r.returncode == 78, err
    assert "sender-map %s: a symbolic link" % link in err, err


@pytest.mark.skipif(not IS_ROOT, reason="needs root to own a file as "
                    "another user")
def test_map_owned_by_another_user(env):
    """Run as root, the map must be root's: one owned by the test user
    (nobody) is refused."""
    m = env.write("sender_login", GOOD_MAP)
    assert os.stat(m).st_uid == RUN_UID != 0
    r, err = run_t(env, {"sender-policy": "map", "sender-map": m},
                   as_root=True)
    assert r.returncode == 78, err
    assert "sender-map %s: owned by uid %d" % (m, RUN_UID) in err, err
    os.chown(m, 0, 0)
    r, err = run_t(env, {"sender-policy": "map", "sender-map": m},
                   as_root=True)
    assert "sender-map" not in err, err


def test_any_warns(env):
    r, err = run_t(env, {"sender-policy": "any"})
    assert r.returncode == 0, err
    assert "smtpauthd: warning: sender-policy any:" in err, err


def test_own_does_not_warn(env):
    r, err = run_t(env, {"sender-policy": "own"})
    assert r.returncode == 0, err
    assert "sender" not in err, err


def test_map_without_sender_map_is_an_error(env):
    r, err = run_t(env, {"sender-policy": "map"})
    assert r.returncode == 78, err
    assert "sender-policy map needs sender-map" in err, err


def test_map_without_sender_map_refuses_connections(env):
    c = env.start(sender_policy="map", greet=False)
    check(c.reply(), 421, "4.3.0")
    assert c.wait_exit() == 78
    env.no_calls()


def test_unused_map_warns_and_is_checked(env):
    m = env.write("sender_login", GOOD_MAP + "bad\n")
    r, err = run_t(env, {"sender-policy": "own", "sender-map": m})
    assert r.returncode == 78, err
    assert "warning: sender-map %s is not used unless sender-policy is " \
        "map" % m in err, err
    assert "sender-map %s:6: \"bad\" has no value" % m in err, err


def test_domainless_hostname_warns(env):
    r, err = run_t(env, {"hostname": "mailhost", "sender-policy": "own"})
    assert r.returncode == 0, err
    assert "warning: sender-domains is unset and hostname mailhost" in err
    r, err = run_t(env, {"hostname": "mailhost", "sender-policy": "own",
                         "sender-domains": "example.org"})
    assert "sender-domains" not in err, err


@pytest.mark.parametrize("key,value", [
    ("sender-policy", "all"), ("sender-domains", ","),
    ("sender-domains", "example.org, exa!mple.org"),
    ("sender-delimiter", "a"), ("sender-delimiter", "@"),
    ("sender-delimiter", "+-_=.~/!#"), ("sender-map", "relative/path"),
    ("sender-header-check", "maybe")])
def test_bad_values(env, key, value):
    r, err = run_t(env, {key: value})
    assert r.returncode == 78, err
    assert key in err, err


def test_T_prints_them(env):
    path = env.write_config({"sender-policy": "map",
                             "sender-domains": "example.org, example.net",
                             "sender-delimiter": "+-",
                             "sender-map": "/etc/postfix/sender_login",
                             "sender-header-check": "yes"})
    r = env.run(["-T", "-f", path])
    assert r.returncode == 0, r
    out = r.stdout.decode().splitlines()
    for line in ["sender-policy map",
                 "sender-domains example.org, example.net",
                 "sender-delimiter +-",
                 "sender-map /etc/postfix/sender_login",
                 "sender-header-check yes"]:
        assert line in out, out
