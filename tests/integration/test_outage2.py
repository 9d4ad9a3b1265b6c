"""PostgreSQL down, continued (test_outage.py has the fixture and the first
cases): what one process knew is not lost with the process.

- Credentials: an account that logged in on one front-end logs in on
  another during the outage (the second asks its peers over the bus, the
  first lends the SCRAM keys: auth/README.md, "Asked of the other
  front-ends"); an account no front-end has seen still gets
  temporary-auth-failure, and a password change is forgotten on every
  front-end, so no peer lends the old keys."""

import asyncio
import time

import pytest

from test_outage import RECOVERY, login_until_ok, pg_outage  # noqa: F401 (fixture)
from xmpptest import Log, LoginFailed, close, login, run, wait_until


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

