"""A dead database: PostgreSQL or Redis of the test stack is stopped
(stack.sh pg-stop / redis-stop) and started again inside each test, which
waits until logins work again before it ends, so the tests after it find
the stack as it was.

PostgreSQL down: an account that never logged in on that front-end gets
SASL temporary-auth-failure at once, one that did logs in again from the
front-end's credential cache (auth/README.md), online users keep chatting
(the sm has them cached), a message that has to be stored offline waits
in the sm's spool and is stored once the database returns (no error to the
sender), and once the database is back logins and offline storage work
again without restarting anything. A password change makes the cache
forget the old keys at once.

Redis down: binding a resource gets an iq error, online users keep
chatting, and binds work again once Redis is back."""

import asyncio
import subprocess
import time

import pytest

from test_iq import Client
from test_mam import bodies, until_archived
from xmpptest import (Log, redis_cli, LoginFailed, RawStream, close, describe, login, next_message,
                      run, wait_until, NS_CLIENT, NS_STANZAS)

RECOVERY = 30       # seconds a process may take to notice the store is back


async def chat(a, b, b_jid, body, timeout=5):
    a.send_message(mto=b_jid, mbody=body, mtype="chat")
    await next_message(b, timeout=timeout, body=body)


async def login_until_ok(stack, jid, password, what, timeout=RECOVERY, instance="c2s1"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            return await login(stack, jid, password, timeout=10, instance=instance)
        except LoginFailed as e:
            last = e
            await asyncio.sleep(0.5)
    raise AssertionError("%s: no login within %ss after the store came back (last: %s)"
                         % (what, timeout, last))


def error_of(msg):
    """(type, condition) of a stanza error from slixmpp."""
    return msg["error"]["type"], msg["error"]["condition"]


async def until_logins_need_no_cache(stack, timeout=RECOVERY):
    """Wait until every front-end logs in an account none of them has seen:
    a login from a credential cache says nothing about whether that
    front-end reaches PostgreSQL again (it may still be backing off)."""
    for instance in ("c2s1", "c2s2"):
        jid, pw = stack.add_user("fresh")
        await close(await login_until_ok(stack, jid, pw, "uncached login on " + instance,
                                         timeout=timeout, instance=instance))


@pytest.fixture
def pg_outage(stack):
    stopped = []
    used = []

    def stop():
        stack.stack("pg-stop")
        stopped.append(1)
        used.append(1)

    def start():
        if stopped:
            stack.stack("pg-start", timeout=60)
            stopped.clear()
    yield stop, start
    start()       # whatever happened, the next test gets its database
    if used:      # ... and front-ends that reach it again
        run(until_logins_need_no_cache(stack), timeout=2 * RECOVERY + 30)


@pytest.fixture
def redis_outage(stack):
    stopped = []

    def stop(how="redis-stop"):
        stack.stack(how)
        stopped.append(1)

    def start():
        if stopped:
            stack.stack("redis-start", timeout=30)
            stopped.clear()
    yield stop, start
    start()


def test_postgres_down_then_back(stack, new_user, pg_outage):
    stop_pg, start_pg = pg_outage
    (a_jid, a_pw), (b_jid, b_pw) = new_user("pga"), new_user("pgb")
    (c_jid, c_pw), (d_jid, d_pw) = new_user("pgc"), new_user("pgd")

    async def go():
        a = b = c = d = None
        try:
            a = await login(stack, a_jid, a_pw)
            b = await login(stack, b_jid, b_pw, instance="c2s2")
            errors = asyncio.Queue()
            a.add_event_handler("message_error", lambda m: errors.put_nowait(m))
            await chat(a, b, b_jid, "before the outage")
            await chat(b, a, a_jid, "and back")

            logs = [Log(stack, n) for n in ("sm1", "sm2")]
            stop_pg()
            # A login: SASL temporary-auth-failure, quickly.
            t0 = time.monotonic()
            with pytest.raises(LoginFailed) as failed:
                await login(stack, d_jid, d_pw, timeout=15)
            took = time.monotonic() - t0
            assert "temporary-auth-failure" in str(failed.value), failed.value
            assert took < 10, "temporary-auth-failure took %.1fs" % took
            # Online users keep chatting.
            for i in range(3):
                await chat(a, b, b_jid, "during the outage %d" % i)
                await chat(b, a, a_jid, "reply %d" % i)
            # The archive writes wait and are retried; one line says how many.
            def waiting():
                return [x for l in logs for x in l.lines("event=mam_store_waiting") +
                        l.lines("event=mam_store_failed")]
            await asyncio.to_thread(wait_until, waiting, 20, "mam_store_waiting")
            line = waiting()[0]
            assert "waiting=" in line, line
            # A message for an offline account: spooled in the sm while
            # PostgreSQL is away, no error to the sender.
            a.send_message(mto=c_jid, mbody="to be stored", mtype="chat")
            try:
                refused = await asyncio.wait_for(errors.get(), 3)
                raise AssertionError("spooled message answered with an error: %s" % refused)
            except asyncio.TimeoutError:
                pass

            start_pg()
            d = await login_until_ok(stack, d_jid, d_pw, "login after PostgreSQL restart")
            await chat(a, b, b_jid, "after the outage")
            a.send_message(mto=c_jid, mbody="after the outage", mtype="chat")
            c = await login(stack, c_jid, c_pw)
            await next_message(c, timeout=10, body="to be stored")
            await next_message(c, timeout=10, body="after the outage")
            # Nothing said during the outage is missing from the archive.
            raw = await Client.login(stack, (b_jid, b_pw))
            try:
                res, _ = await until_archived(raw, 9, timeout=RECOVERY)
                said = set(bodies(res))
                want = {"during the outage %d" % i for i in range(3)} | {
                    "reply %d" % i for i in range(3)}
                assert want <= said, sorted(said)
            finally:
                await raw.close()
        finally:
            for x in (a, b, c, d):
                await close(x)
    run(go(), timeout=150)


def test_relogin_and_offline_storage_during_postgres_outage(stack, new_user, pg_outage):
    """A user who logged in before the outage logs in again during it (the
    front-end's credential cache; the sm serves the session without its
    database); a message to an offline user waits in the sm's spool, the
    sender gets no error, and it is delivered from offline storage once
    PostgreSQL is back and the user logs in."""
    stop_pg, start_pg = pg_outage
    (a_jid, a_pw), (b_jid, b_pw), (c_jid, c_pw) = new_user("rla"), new_user("rlb"), new_user("rlc")

    async def go():
        a = b = c = None
        try:
            a = await login(stack, a_jid, a_pw)
            b = await login(stack, b_jid, b_pw)
            c = await login(stack, c_jid, c_pw)
            await close(b)
            await close(c)
            b = c = None
            errors = asyncio.Queue()
            a.add_event_handler("message_error", lambda m: errors.put_nowait(m))
            c2s, sms = Log(stack, "c2s1"), [Log(stack, n) for n in ("sm1", "sm2")]

            stop_pg()
            t0 = time.monotonic()
            b = await login(stack, b_jid, b_pw, timeout=15)
            assert time.monotonic() - t0 < 10, "re-login took %.1fs" % (time.monotonic() - t0)
            assert c2s.lines("event=auth_cache_used"), "login not from the credential cache"
            await chat(a, b, b_jid, "to a user who logged in during the outage")
            await chat(b, a, a_jid, "from a user who logged in during the outage")
            # A wrong password is still wrong, from the cache too.
            with pytest.raises(LoginFailed) as failed:
                await login(stack, b_jid, b_pw + "x", timeout=15)
            assert "not-authorized" in str(failed.value), failed.value

            for i in range(3):
                a.send_message(mto=c_jid, mbody="spooled %d" % i, mtype="chat")
            await asyncio.to_thread(
                wait_until, lambda: sum(len(l.lines("event=offline_spooled")) for l in sms) >= 3,
                10, "offline_spooled")
            try:
                e = await asyncio.wait_for(errors.get(), 2)
                raise AssertionError("the sender got an error: %s" % e)
            except asyncio.TimeoutError:
                pass

            start_pg()
            await asyncio.to_thread(
                wait_until, lambda: any(l.lines("event=offline_spool_recovered") for l in sms),
                RECOVERY, "offline_spool_recovered")
            c = await login_until_ok(stack, c_jid, c_pw, "login after PostgreSQL restart")
            for i in range(3):        # in the order sent
                await next_message(c, timeout=10, body="spooled %d" % i)
            assert errors.empty(), errors.get_nowait()
        finally:
            for x in (a, b, c):
                await close(x)
    run(go(), timeout=150)


def test_password_change_forgets_cached_credentials(stack, new_user, pg_outage):
    """The cached keys never outlive a password change: after `sbctl user
    passwd` the old password fails at once, also while PostgreSQL is down
    and the new keys are the cached ones; `sbctl user del` forgets too."""
    stop_pg, start_pg = pg_outage
    (u_jid, old_pw), (v_jid, v_pw) = new_user("pwc"), new_user("pwd")
    new_pw = old_pw + "-new"

    async def go():
        await close(await login(stack, u_jid, old_pw))        # cached: old keys
        await close(await login(stack, v_jid, v_pw))
        c2s = Log(stack, "c2s1")
        stack.sbctl("user", "passwd", u_jid, new_pw)
        await asyncio.to_thread(wait_until, lambda: c2s.lines("event=auth_cache_forget"), 10,
                                "auth_cache_forget on c2s1")
        with pytest.raises(LoginFailed) as failed:
            await login(stack, u_jid, old_pw, timeout=15)
        assert "not-authorized" in str(failed.value), failed.value
        # Down before anyone logs in again: nothing cached, no old keys.
        stop_pg()
        with pytest.raises(LoginFailed) as failed:
            await login(stack, u_jid, old_pw, timeout=15)
        assert "temporary-auth-failure" in str(failed.value), failed.value
        start_pg()
        await close(await login_until_ok(stack, u_jid, new_pw, "new password after restart"))
        # Now the new keys are cached: the old password fails during an outage too.
        stop_pg()
        with pytest.raises(LoginFailed) as failed:
            await login(stack, u_jid, old_pw, timeout=15)
        assert "not-authorized" in str(failed.value), failed.value
        await close(await login(stack, u_jid, new_pw, timeout=15))
        start_pg()
        # A deleted account is forgotten as well.
        await close(await login_until_ok(stack, v_jid, v_pw, "login after restart"))
        stack.sbctl("user", "del", v_jid)
        await asyncio.to_thread(
            wait_until, lambda: any(v_jid in x for x in c2s.lines("event=auth_cache_forget")),
            10, "auth_cache_forget of the deleted account")
        stop_pg()
        with pytest.raises(LoginFailed) as failed:
            await login(stack, v_jid, v_pw, timeout=15)
        assert "temporary-auth-failure" in str(failed.value), failed.value
        start_pg()
        # the tests after this one find logins working
        await close(await login_until_ok(stack, u_jid, new_pw, "login after the last restart"))
    run(go(), timeout=180)


async def bind_error(stack, jid, password):
    """Log in raw up to the bind; return the bind iq error condition (None
    when the bind succeeded)."""
    s = RawStream(stack, direct_tls=True)
    try:
        await s.connect()
        s.open_stream()
        await s.features()
        ok = await s.auth_plain(jid, password)
        assert ok is not None and ok.tag.endswith("}success"), describe(ok)
        s.open_stream()
        await s.features()
        s.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        iq = await s.expect("{%s}iq" % NS_CLIENT, timeout=20)
        if iq.get("type") == "result":
            return None
        assert iq.get("type") == "error", describe(iq)
        err = iq.find("{%s}error" % NS_CLIENT)
        conds = [c.tag.split("}", 1)[1] for c in err if c.tag.startswith("{%s}" % NS_STANZAS)]
        return conds[0] if conds else "?"
    finally:
        await s.close()


def test_redis_down_then_back(stack, new_user, redis_outage):
    stop_redis, start_redis = redis_outage
    (a_jid, a_pw), (b_jid, b_pw), (e_jid, e_pw) = new_user("rda"), new_user("rdb"), new_user("rde")

    async def go():
        a = b = None
        try:
            a = await login(stack, a_jid, a_pw)
            b = await login(stack, b_jid, b_pw, instance="c2s2")
            await chat(a, b, b_jid, "before the outage")

            stop_redis()
            t0 = time.monotonic()
            cond = await bind_error(stack, e_jid, e_pw)
            assert cond in ("internal-server-error", "resource-constraint"), cond
            assert time.monotonic() - t0 < 15
            # Online users keep chatting.
            await chat(a, b, b_jid, "during the outage")
            await chat(b, a, a_jid, "reply during the outage")

            start_redis()
            deadline = time.monotonic() + RECOVERY
            while await bind_error(stack, e_jid, e_pw) is not None:
                assert time.monotonic() < deadline, "binds still failing after Redis came back"
                await asyncio.sleep(0.5)
            await chat(a, b, b_jid, "after the outage")
        finally:
            await close(a)
            await close(b)
    run(go(), timeout=120)


def redis(stack, *args):
    return redis_cli(stack, *args)


def test_redis_restarted_empty_gets_the_sessions_back(stack, new_user, redis_outage):
    """Redis is live state, rebuildable: after a crash that lost everything,
    each sm writes back the sessions it holds (sess:, pres:, fe:)."""
    crash_redis, start_redis = redis_outage
    (a_jid, a_pw), (b_jid, b_pw) = new_user("rca"), new_user("rcb")

    async def go():
        a = b = None
        try:
            a = await login(stack, a_jid, a_pw)
            b = await login(stack, b_jid, b_pw, instance="c2s2")
            await chat(a, b, b_jid, "before the crash")
            a_full, b_full = str(a.boundjid), str(b.boundjid)
            a_res = a_full.split("/", 1)[1]

            def in_redis():
                fe = redis(stack, "SMEMBERS", "fe:c2s1").splitlines()
                return (redis(stack, "HEXISTS", "sess:{%s}" % a_jid, a_res) == "1"
                        and redis(stack, "HLEN", "sess:{%s}" % b_jid) == "1"
                        and redis(stack, "HEXISTS", "pres:{%s}" % a_jid, a_res) == "1"
                        and any(m.startswith(a_full + " ") for m in fe))
            deadline = time.monotonic() + 10
            while not in_redis():
                assert time.monotonic() < deadline, "sessions never in Redis"
                await asyncio.sleep(0.1)

            crash_redis("redis-crash")
            start_redis()
            deadline = time.monotonic() + RECOVERY
            while not in_redis():
                assert time.monotonic() < deadline, "sessions not written back to Redis: %s" % [
                    redis(stack, "HGETALL", "sess:{%s}" % a_jid), redis(stack, "HLEN", "sess:{%s}" % b_jid),
                    redis(stack, "HKEYS", "pres:{%s}" % a_jid), redis(stack, "SMEMBERS", "fe:c2s1"), a_full]
                await asyncio.sleep(0.2)
            assert b_full.split("/", 1)[1] in redis(stack, "HKEYS", "sess:{%s}" % b_jid)
            await chat(a, b, b_jid, "after the crash")
            await chat(b, a, a_jid, "reply after the crash")
        finally:
            await close(a)
            await close(b)
    run(go(), timeout=120)
