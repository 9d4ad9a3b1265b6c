"""sbctl as operators use it: the configuration found without flags, usage
errors exit 2, `--json` that parses, exit 1 for what is not there, status
with a database down (bounded, named), live sessions listed and kicked,
`user del` that ends the sessions and leaves no row, and domains that are
served and dropped within a second (Redis pub/sub, not the 30 s refresh)."""

import asyncio
import json
import os
import secrets
import subprocess
import time

import pytest

from xmpptest import (NS_STREAM, NS_STREAMS_ERR, RawStream, describe, run,
                      stream_error_condition)

LIVE = 1.5      # seconds a domain change may take (the fallback refresh is 30 s)


def sbctl_in(stack, cwd, *args, env=None, timeout=15):
    """sbctl without -c, from cwd, with SB_CONFIG unset unless env sets it."""
    e = {k: v for k, v in os.environ.items() if k != "SB_CONFIG"}
    e.update(env or {})
    return subprocess.run([os.path.join(stack.bin, "sbctl"), *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=timeout)


def psql(stack, sql):
    env = dict(os.environ)
    if stack.env.get("SB_PG_PASSWORD_FILE"):
        with open(stack.env["SB_PG_PASSWORD_FILE"]) as f:
            env["PGPASSWORD"] = f.read().strip()
    p = subprocess.run(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", stack.env["SB_PG_PORT"],
                        "-U", "switchboard", "-d", "switchboard", "-v", "ON_ERROR_STOP=1",
                        "-tAc", sql], env=env, capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def jsonout(stack, *args, rc=0):
    p = stack.sbctl(*args, "--json", check=False)
    assert p.returncode == rc, "sbctl %s: rc %d: %s%s" % (args, p.returncode, p.stdout, p.stderr)
    return json.loads(p.stdout)


def new_domain():
    return "d%s.localhost" % secrets.token_hex(4)


async def login_until(stack, jid, pw, deadline, instance="c2s1"):
    """Log in on jid's domain, again and again until deadline (monotonic)."""
    last = None
    while True:
        s = RawStream(stack, instance=instance, to=jid.split("@", 1)[1])
        try:
            await s.login(jid, pw, timeout=max(0.2, deadline - time.monotonic()))
            return s
        except (AssertionError, asyncio.TimeoutError, OSError) as e:
            last = e
            s.abort()
        if time.monotonic() >= deadline:
            raise AssertionError("no login as %s in time (last: %r)" % (jid, last))
        await asyncio.sleep(0.05)


async def stream_error(s, timeout):
    """The <stream:error/> the server ends s with, within timeout."""
    deadline = time.monotonic() + timeout
    while True:
        el = await s.element(timeout=max(0.05, deadline - time.monotonic()))
        if el is None:
            raise AssertionError("stream closed without a stream error")
        if el.tag == "{%s}error" % NS_STREAM:
            return el


# ------------------------------------------------------------------ config, usage
def test_config_is_found_in_cwd_without_flags_and_a_missing_one_is_named(stack, tmp_path):
    os.makedirs(tmp_path / "var")
    os.symlink(stack.ini, tmp_path / "var" / "switchboard.ini")
    p = sbctl_in(stack, tmp_path, "domain", "list", "--json")
    assert p.returncode == 0, p.stderr
    assert stack.domain in [d["name"] for d in json.loads(p.stdout)]

    empty = tmp_path / "empty"
    os.makedirs(empty)
    p = sbctl_in(stack, empty, "domain", "list")
    if os.path.exists("/etc/switchboard/switchboard.ini"):
        pytest.skip("this host has /etc/switchboard/switchboard.ini")
    assert p.returncode == 1
    assert "./var/switchboard.ini" in p.stderr and "No such file" in p.stderr, p.stderr

    p = sbctl_in(stack, empty, "status", env={"SB_CONFIG": str(tmp_path / "nope.ini")})
    assert p.returncode == 1
    assert str(tmp_path / "nope.ini") in p.stderr and "No such file" in p.stderr, p.stderr


def test_unknown_command_or_option_prints_usage_and_exits_2(stack):
    for args in (("frobnicate",), ("status", "--bogus"), ("user", "add", "--nope"),
                 ("session", "list", "--wat"), ("domain", "del"), ("session",)):
        p = stack.sbctl(*args, check=False)
        assert p.returncode == 2, (args, p.returncode, p.stdout, p.stderr)
        assert "usage:" in p.stderr, (args, p.stderr)
    p = stack.sbctl("help")
    for cmd in ("status", "session list", "session kick", "user add", "user del", "user passwd",
                "user list", "domain add", "domain del", "domain list", "drain", "keys generate",
                "db migrate", "--json"):
        assert cmd in p.stdout, (cmd, p.stdout)
    p = stack.sbctl("session", "--help")
    assert "session kick" in p.stdout and p.returncode == 0


def test_json_output_parses_for_every_listing(stack, new_user):
    jid, _ = new_user("js")
    st = jsonout(stack, "status")
    assert st["healthy"] is True and st["problems"] == []
    kinds = {i["kind"] for i in st["instances"]}
    assert {"router", "sm", "c2s", "bosh", "s2s"} <= kinds, kinds
    for i in st["instances"]:
        assert i["pid"] > 0 and "up_s" in i and i["lease_ttl_ms"] is not None, i
    assert st["redis"]["up"] and st["postgresql"]["up"]
    assert jid in jsonout(stack, "user", "list", stack.domain)
    assert isinstance(jsonout(stack, "session", "list"), list)
    assert jsonout(stack, "user", "passwd", jid, "pw2")["result"] == "password changed"


# ------------------------------------------------------------------ status
def test_status_with_postgres_stopped_names_it_and_exits_1_quickly(stack, new_user):
    jid, pw = new_user("pg")
    stack.stack("pg-stop")
    try:
        t0 = time.monotonic()
        p = stack.sbctl("status", check=False, timeout=20)
        took = time.monotonic() - t0
        assert p.returncode == 1, p.stdout + p.stderr
        assert "problem: PostgreSQL is down" in p.stdout, p.stdout
        assert took < 10, "status took %.1fs" % took
        st = jsonout(stack, "status", rc=1)
        assert not st["postgresql"]["up"] and st["redis"]["up"] and not st["healthy"]
        assert any("PostgreSQL" in x for x in st["problems"]), st["problems"]
    finally:
        stack.stack("pg-start", timeout=60)
    deadline = time.monotonic() + 30
    while stack.sbctl("status", check=False).returncode != 0:
        assert time.monotonic() < deadline, "status unhealthy 30 s after pg-start"
        time.sleep(0.5)

    async def back():       # the next tests need logins (c2s reconnects with back-off)
        for instance in ("c2s1", "c2s2"):
            s = await login_until(stack, jid, pw, time.monotonic() + 30, instance=instance)
            s.abort()
    run(back())


# ------------------------------------------------------------------ sessions
def test_session_list_shows_a_logged_in_user(stack, new_user):
    jid, pw = new_user("sl")

    async def go():
        s = RawStream(stack, instance="c2s2")
        full = await s.login(jid, pw)
        try:
            rows = jsonout(stack, "session", "list", jid)
            assert [r["jid"] for r in rows] == [full], rows
            assert rows[0]["instance"] == "c2s2" and rows[0]["sid"], rows
            assert full in [r["jid"] for r in jsonout(stack, "session", "list", "--instance",
                                                       "c2s2")]
            assert full in [r["jid"] for r in jsonout(stack, "session", "list")]
            assert full in stack.sbctl("session", "list", jid).stdout
        finally:
            s.abort()
    run(go())


def test_session_kick_closes_that_stream_with_the_reason(stack, new_user):
    jid, pw = new_user("sk")

    async def go():
        s = RawStream(stack)
        other = RawStream(stack, instance="c2s2")
        full = await s.login(jid, pw)
        await other.login(jid, pw)
        p = stack.sbctl("session", "kick", full, "--reason", "maintenance <now> & later")
        assert "ended" in p.stdout
        err = await stream_error(s, 5)
        assert stream_error_condition(err) == "policy-violation", describe(err)
        assert err.findtext("{%s}text" % NS_STREAMS_ERR) == "maintenance <now> & later"
        # the other session of the user stays
        other.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert (await other.element(timeout=5)).get("id") == "p1"
        other.abort()
        p = stack.sbctl("session", "kick", full, check=False)
        assert p.returncode == 1 and "no session" in p.stderr, p.stderr
    run(go())


def test_session_kick_of_an_unknown_jid_exits_1(stack):
    p = stack.sbctl("session", "kick", "nobody%s@%s/x" % (secrets.token_hex(3), stack.domain),
                    check=False)
    assert p.returncode == 1 and "no session" in p.stderr, p.stderr


# ------------------------------------------------------------------ users
def test_user_del_ends_sessions_and_removes_every_row(stack, new_user):
    jid, pw = new_user("ud")
    node, dom = jid.split("@")
    tables = ("roster", "roster_version", "roster_pending", "offline", "vcards",
              "private_storage", "last_activity", "blocklist")

    async def go():
        s = RawStream(stack)
        await s.login(jid, pw)
        s.send("<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>Del</FN></vCard></iq>"
               "<iq type='set' id='r1'><query xmlns='jabber:iq:roster'>"
               "<item jid='x@%s'/></query></iq>" % stack.domain)
        for _ in range(2):
            await s.element(timeout=5)
        psql(stack, "INSERT INTO offline(domain, username, stanza) VALUES ('%s', '%s', '<m/>');"
             "INSERT INTO private_storage(domain, username, namespace, data)"
             " VALUES ('%s', '%s', 'x:y', '<a/>')" % (dom, node, dom, node))
        p = stack.sbctl("user", "del", jid)
        assert "1 session ended" in p.stdout, p.stdout
        err = await stream_error(s, 5)
        assert stream_error_condition(err) == "not-authorized", describe(err)
        for t in tables + ("users",):
            n = psql(stack, "SELECT count(*) FROM %s WHERE domain='%s' AND username='%s'"
                     % (t, dom, node))
            assert n == "0", "%s rows left in %s" % (n, t)
        s2 = RawStream(stack)
        with pytest.raises(AssertionError, match="PLAIN login failed"):
            await s2.login(jid, pw)
        s2.abort()
    run(go())
    p = stack.sbctl("user", "del", jid, check=False)
    assert p.returncode == 1 and "no such user" in p.stderr


# ------------------------------------------------------------------ domains
def test_domain_added_is_served_within_a_second(stack):
    dom = new_domain()
    jid, pw = "u@" + dom, secrets.token_urlsafe(10)
    try:
        t0 = time.monotonic()
        stack.sbctl("domain", "add", dom)
        stack.sbctl("user", "add", jid, pw)

        async def go():
            s = await login_until(stack, jid, pw, t0 + LIVE)
            s.abort()
        run(go())
    finally:
        stack.sbctl("domain", "del", dom, "--force", check=False)


def test_domain_del_ends_its_sessions_and_refuses_new_streams(stack):
    dom = new_domain()
    jid, pw = "u@" + dom, secrets.token_urlsafe(10)
    stack.sbctl("domain", "add", dom)
    stack.sbctl("user", "add", jid, pw)

    async def go():
        s = await login_until(stack, jid, pw, time.monotonic() + 5)
        t0 = time.monotonic()
        stack.sbctl("domain", "del", dom, "--force")
        err = await stream_error(s, LIVE)
        assert stream_error_condition(err) == "host-unknown", describe(err)
        assert time.monotonic() - t0 < LIVE
        n = RawStream(stack, to=dom)
        await n.connect()
        n.open_stream()
        err = await n.element(timeout=5)
        assert stream_error_condition(err) == "host-unknown", describe(err)
        n.abort()
    run(go())
    assert dom not in [d["name"] for d in jsonout(stack, "domain", "list")]


def test_domain_del_refuses_while_accounts_exist_unless_forced(stack):
    dom = new_domain()
    stack.sbctl("domain", "add", dom)
    stack.sbctl("user", "add", "a@" + dom, "pw")
    p = stack.sbctl("domain", "del", dom, check=False)
    assert p.returncode == 1 and "--force" in p.stderr, p.stderr
    assert dom in [d["name"] for d in jsonout(stack, "domain", "list")]
    assert jsonout(stack, "domain", "del", dom, "--force")["result"].startswith("deleted")
    assert psql(stack, "SELECT count(*) FROM users WHERE domain='%s'" % dom) == "0"
    p = stack.sbctl("domain", "del", dom, check=False)
    assert p.returncode == 1 and "no such domain" in p.stderr, p.stderr
