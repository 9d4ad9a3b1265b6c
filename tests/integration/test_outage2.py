"""PostgreSQL down, continued (test_outage.py has the fixture and the first
cases): what one process knew is not lost with the process.

- Credentials: an account that logged in on one front-end logs in on
  another during the outage (the second asks its peers over the bus, the
  first lends the SCRAM keys: auth/README.md, "Asked of the other
  front-ends"); an account no front-end has seen still gets
  temporary-auth-failure, and a password change is forgotten on every
  front-end, so no peer lends the old keys.
- Offline messages: a message spooled by an sm while PostgreSQL is down is
  also in Redis (sm/README.md, "PostgreSQL away"), so an sm killed with
  -9 during the outage does not lose it: it is stored once the database is
  back and delivered exactly once."""

import asyncio
import time

import pytest

from test_outage import RECOVERY, login_until_ok, pg_outage  # noqa: F401 (fixture)
from xmpptest import (Log, LoginFailed, close, login, next_message, redis_cli, run, sm_for,
                      wait_until)


def user_on(stack, sm, prefix):
    """A fresh account whose bare JID the routers hash to `sm`."""
    for _ in range(64):
        jid, pw = stack.add_user(prefix)
        if sm_for(jid) == sm:
            return jid, pw
    raise AssertionError("no JID hashing to %s" % sm)


def test_login_on_another_front_end_during_postgres_outage(stack, new_user, pg_outage):
    stop_pg, start_pg = pg_outage
    (u_jid, u_pw), (n_jid, n_pw) = new_user("pgs"), new_user("pgn")
    (p_jid, p_old), (w_jid, w_pw) = new_user("pgp"), new_user("pgw")
    p_new = p_old + "-new"

    async def go():
        await close(await login(stack, u_jid, u_pw))                 # cached on c2s1 only
        # c2s2 has served a login (its store saw PostgreSQL up), not u's
        await close(await login(stack, w_jid, w_pw, instance="c2s2"))
        await close(await login(stack, p_jid, p_old))
        c2s1, c2s2 = Log(stack, "c2s1"), Log(stack, "c2s2")
        stack.sbctl("user", "passwd", p_jid, p_new)                  # forgotten everywhere
        for log, name in ((c2s1, "c2s1"), (c2s2, "c2s2")):
            await asyncio.to_thread(
                wait_until, lambda: any(p_jid in x for x in log.lines("event=auth_cache_forget")),
                10, "auth_cache_forget on %s" % name)

        stop_pg()
        t0 = time.monotonic()
        c = await login(stack, u_jid, u_pw, instance="c2s2", timeout=15)
        await close(c)
        assert time.monotonic() - t0 < 10, "login took %.1fs" % (time.monotonic() - t0)
        used = c2s2.lines("event=auth_cache_used")
        assert any("why=peer" in x and 'peer="c2s1"' in x for x in used), used
        lent = c2s1.lines("event=auth_cache_peer_asked")
        assert any("lent=1" in x and 'peer="c2s2"' in x for x in lent), lent
        # The lent keys check the proof as the database's would.
        with pytest.raises(LoginFailed) as failed:
            await login(stack, u_jid, u_pw + "x", instance="c2s2", timeout=15)
        assert "not-authorized" in str(failed.value), failed.value
        # No front-end has seen this one: temporary-auth-failure, quickly.
        t0 = time.monotonic()
        with pytest.raises(LoginFailed) as failed:
            await login(stack, n_jid, n_pw, instance="c2s2", timeout=15)
        assert "temporary-auth-failure" in str(failed.value), failed.value
        assert time.monotonic() - t0 < 10, "failure took %.1fs" % (time.monotonic() - t0)
        # The changed password: neither the old keys nor the new are anywhere.
        for inst in ("c2s2", "c2s1"):
            for pw in (p_old, p_new):
                with pytest.raises(LoginFailed) as failed:
                    await login(stack, p_jid, pw, instance=inst, timeout=15)
                assert "temporary-auth-failure" in str(failed.value), (inst, failed.value)
        assert not any("lent=1" in x for x in c2s1.lines("event=auth_cache_peer_asked")
                       if p_jid in x)
        start_pg()
        await close(await login_until_ok(stack, n_jid, n_pw, "login after PostgreSQL restart"))
    run(go(), timeout=150)


async def nothing_twice(a, c, c_jid, errors):
    """After the expected messages: a marker from a reaches c with nothing
    before it (no second copy of a spooled message), and a got no error."""
    a.send_message(mto=c_jid, mbody="marker", mtype="chat")
    got = []
    while True:
        m = await next_message(c, timeout=10)
        if m["body"] == "marker":
            break
        got.append(m["body"])
    assert not got, "delivered twice: %s" % got
    assert errors.empty(), errors.get_nowait()


def run_then_restore_sm1(stack, coro):
    """Run a test that kills sm1; leave sm1 running for the tests after it."""
    try:
        run(coro, timeout=150)
    finally:
        stack.stack("start-proc", "sm1")
        stack.wait_instances(present=("sm1", "sm2"))


def test_spooled_message_survives_the_death_of_its_sm(stack, pg_outage):
    """PostgreSQL down, a message for an offline user is spooled (no error to
    the sender), the sm that spooled it is killed -9 and started again, the
    database comes back: the message is stored and the user gets it once."""
    stop_pg, start_pg = pg_outage
    (c_jid, c_pw), (a_jid, a_pw) = user_on(stack, "sm1", "spc"), user_on(stack, "sm2", "spa")
    stack.wait_instances(present=("sm1", "sm2"))

    def spooled_in_redis():
        return int(redis_cli(stack, "LLEN", "{sb:spool}:sm1") or 0)

    async def go():
        a = c = None
        try:
            a = await login(stack, a_jid, a_pw)
            errors = asyncio.Queue()
            a.add_event_handler("message_error", lambda m: errors.put_nowait(m))
            sm1 = Log(stack, "sm1")
            before = spooled_in_redis()

            stop_pg()
            for i in range(2):
                a.send_message(mto=c_jid, mbody="kept %d" % i, mtype="chat")
            await asyncio.to_thread(
                wait_until, lambda: len(sm1.lines("event=offline_spooled")) >= 2, 10,
                "offline_spooled on sm1")
            await asyncio.to_thread(wait_until, lambda: spooled_in_redis() >= before + 2, 10,
                                    "the spool's copy in Redis")
            stack.stack("kill-proc", "sm1")
            await asyncio.to_thread(stack.wait_instances, absent=("sm1",), present=("sm2",))
            stack.stack("start-proc", "sm1")
            await asyncio.to_thread(stack.wait_instances, present=("sm1", "sm2"))
            await asyncio.to_thread(
                wait_until, lambda: any("why=restart" in x for x in
                                        sm1.lines("event=offline_spool_taken")),
                15, "sm1 to take its spool back")

            start_pg()
            await asyncio.to_thread(
                wait_until, lambda: sm1.lines("event=offline_spool_recovered"), RECOVERY,
                "offline_spool_recovered on sm1")
            await asyncio.to_thread(wait_until, lambda: spooled_in_redis() == 0, 10,
                                    "the Redis copy gone once stored")
            c = await login_until_ok(stack, c_jid, c_pw, "login after PostgreSQL restart")
            for i in range(2):        # in the order sent
                await next_message(c, timeout=10, body="kept %d" % i)
            await nothing_twice(a, c, c_jid, errors)
        finally:
            for x in (a, c):
                await close(x)
    run_then_restore_sm1(stack, go())


def test_spool_of_an_sm_that_stays_dead_is_adopted(stack, pg_outage):
    """The same, but the sm is not started again: once its liveness key is
    gone another sm adopts its spool and stores it when PostgreSQL is back;
    the user, now served by that sm, gets the message once."""
    stop_pg, start_pg = pg_outage
    (c_jid, c_pw), (a_jid, a_pw) = user_on(stack, "sm1", "adc"), user_on(stack, "sm2", "ada")
    stack.wait_instances(present=("sm1", "sm2"))

    async def go():
        a = c = None
        try:
            a = await login(stack, a_jid, a_pw)
            errors = asyncio.Queue()
            a.add_event_handler("message_error", lambda m: errors.put_nowait(m))
            sm1, sm2 = Log(stack, "sm1"), Log(stack, "sm2")
            before = int(redis_cli(stack, "LLEN", "{sb:spool}:sm1") or 0)

            stop_pg()
            a.send_message(mto=c_jid, mbody="adopted", mtype="chat")
            await asyncio.to_thread(
                wait_until, lambda: sm1.lines("event=offline_spooled"), 10, "offline_spooled")
            await asyncio.to_thread(
                wait_until,
                lambda: int(redis_cli(stack, "LLEN", "{sb:spool}:sm1") or 0) > before, 10,
                "the spool's copy in Redis")
            stack.stack("kill-proc", "sm1")
            await asyncio.to_thread(
                wait_until, lambda: any("why=adopted" in x for x in
                                        sm2.lines("event=offline_spool_taken")),
                40, "sm2 to adopt sm1's spool")
            start_pg()
            await asyncio.to_thread(
                wait_until, lambda: sm2.lines("event=offline_spool_recovered"), RECOVERY,
                "offline_spool_recovered on sm2")
            c = await login_until_ok(stack, c_jid, c_pw, "login after PostgreSQL restart")
            await next_message(c, timeout=10, body="adopted")
            await nothing_twice(a, c, c_jid, errors)
        finally:
            for x in (a, c):
                await close(x)
    run_then_restore_sm1(stack, go())
