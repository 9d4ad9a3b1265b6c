"""External authentication: a domain with `auth = extauth` checks
passwords with an ejabberd-style extauth program (tests/extauth/users.py,
2-byte length-prefixed `auth:User:Server:Password`, answer 0/1), run and
restarted by sb-c2s. Such a domain offers PLAIN (under TLS), never SCRAM;
the account row is created on the first successful login; a program that
hangs or dies gives temporary-auth-failure after a bounded wait, is
restarted, and does not slow down other domains."""

import asyncio
import os
import secrets
import sys
import time

import pytest

from xmpptest import (NS_SASL, Log, RawStream, close, domains_with_config, login, mechanisms, run,
                      wait_until)

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "extauth", "users.py")
TIMEOUT = 2


class ExtDomain:
    def __init__(self, tmp):
        self.name = "ext%s.localhost" % secrets.token_hex(3)
        self.users = os.path.join(tmp, "users")
        self.starts = os.path.join(tmp, "starts")
        self.password = secrets.token_urlsafe(9) + ":x"     # a ':' inside the password
        with open(self.users, "w") as f:
            f.write("alice:%s\nbob:%s\n" % (self.password, "bobpw"))
        self.section = ("\n[domain.%s]\nauth = extauth\nextauth_program = %s %s %s %s\n"
                        "extauth_instances = 1\nextauth_timeout = %d\n"
                        % (self.name, sys.executable, SCRIPT, self.users, self.starts, TIMEOUT))

    def start_count(self):
        try:
            with open(self.starts) as f:
                return len(f.read().split())
        except FileNotFoundError:
            return 0


@pytest.fixture(scope="module")
def ext(stack, tmp_path_factory):
    d = ExtDomain(str(tmp_path_factory.mktemp("extauth")))
    with domains_with_config(stack, (d.name,), d.section):
        yield d


async def tls_stream(stack, domain):
    s = RawStream(stack, to=domain)
    await s.connect()
    s.open_stream()
    await s.features()
    return s, await s.starttls()


async def plain(stack, domain, user, password, timeout=10):
    """(condition or 'success', seconds it took)"""
    s, _ = await tls_stream(stack, domain)
    t0 = time.monotonic()
    el = await s.auth_plain("%s@%s" % (user, domain), password)
    took = time.monotonic() - t0
    await s.close()
    if el is not None and el.tag == "{%s}success" % NS_SASL:
        return "success", took
    if el is None or el.tag != "{%s}failure" % NS_SASL or not len(el):
        return "no-answer: %r" % el, took
    return el[0].tag.split("}")[1], took


def users_of(stack, domain):
    return stack.sbctl("user", "list", domain).stdout


def test_extauth_domain_offers_plain_not_scram(stack, ext):
    async def go():
        s, feats = await tls_stream(stack, ext.name)
        got = mechanisms(feats)
        s.send("<auth xmlns='%s' mechanism='SCRAM-SHA-256'>biwsbj1hbGljZSxyPWFiY2Q=</auth>"
               % NS_SASL)
        el = await s.element()
        await s.close()
        return got, el
    got, el = run(go())
    assert got == ["PLAIN"]
    assert el.tag == "{%s}failure" % NS_SASL and el[0].tag == "{%s}invalid-mechanism" % NS_SASL


def test_extauth_login_creates_account_and_wrong_password_fails(stack, ext):
    assert "alice" not in users_of(stack, ext.name)
    log = Log(stack, "c2s1")

    async def go():
        xmpp = await login(stack, "alice@%s" % ext.name, ext.password, mech="PLAIN")
        jid = str(xmpp.boundjid)
        await close(xmpp)
        bad = await plain(stack, ext.name, "bob", "wrong")
        return jid, bad
    jid, bad = run(go())
    assert jid.startswith("alice@%s/" % ext.name)
    assert bad[0] == "not-authorized"
    assert "alice" in users_of(stack, ext.name)
    assert log.lines("event=account_auto_created") and log.lines("backend=extauth")
    assert log.lines("reason=directory-refused")


def test_extauth_hang_times_out_and_program_is_restarted(stack, ext):
    starts = ext.start_count()
    log = Log(stack, "c2s1")

    async def go():
        hang = asyncio.ensure_future(plain(stack, ext.name, "hang", "x"))
        await asyncio.sleep(0.3)
        # meanwhile another domain is not held up by the stuck program
        other = await RawStream(stack).login(*stack.add_user("ea"))
        return await hang, other
    (cond, took), other = run(go())
    assert cond == "temporary-auth-failure"
    assert TIMEOUT - 0.5 <= took <= TIMEOUT + 3
    assert other
    assert log.lines("event=extauth_timeout")
    wait_until(lambda: ext.start_count() > starts, 10, "the hung program to be restarted")

    def works():
        return run(plain(stack, ext.name, "bob", "bobpw"))[0] == "success"
    wait_until(works, 10, "logins to work again after the restart", interval=0.5)


def test_extauth_program_that_dies_is_restarted_with_backoff(stack, ext):
    log = Log(stack, "c2s1")
    cond, took = run(plain(stack, ext.name, "die", "x"))
    assert cond == "temporary-auth-failure" and took < TIMEOUT + 2
    assert log.lines("event=extauth_down") and log.lines("reason=exited")
    wait_until(lambda: log.lines("event=extauth_started"), 10, "the program to be started again")
    # dying again before any answer: the next restart waits longer
    assert run(plain(stack, ext.name, "die", "x"))[0] == "temporary-auth-failure"
    delays = [float(line.split("restart_in=")[1].split()[0])
              for line in log.lines("event=extauth_down")]
    assert len(delays) == 2 and delays[1] > delays[0]

    def works():
        return run(plain(stack, ext.name, "bob", "bobpw"))[0] == "success"
    wait_until(works, 15, "logins to work after the restart", interval=0.5)
