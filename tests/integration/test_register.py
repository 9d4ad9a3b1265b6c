"""XEP-0077 in-band registration and passwords, answered by sb-c2s: off
unless [domain.NAME] register = 1 (then the stream feature
<register xmlns='http://jabber.org/features/iq-register'/> and a pre-SASL
iq), a per-IP hourly limit (resource-constraint + register_rate_limited),
invitations from `sbctl invite create` on register_invite_only domains
(one use), password change for the logged-in user (new SCRAM keys: the
new password works with SCRAM, the old one no longer), and <remove/>
(account and data gone, the stream ends with not-authorized). Not offered
on an external (extauth) domain."""

import secrets

import pytest

from xmpptest import (Log, LoginFailed, RawStream, close, domains_with_config, login, run,
                      wait_async,
                      stream_error_condition)

NS_REG = "jabber:iq:register"
NS_CLIENT = "jabber:client"
NS_FEATURE = "http://jabber.org/features/iq-register"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


class Domains:
    def __init__(self):
        tag = secrets.token_hex(3)
        self.open = "reg%s.localhost" % tag
        self.inv = "inv%s.localhost" % tag
        self.rl = "rl%s.localhost" % tag
        self.ext = "rex%s.localhost" % tag
        self.section = (
            "\n[domain.%s]\nregister = 1\nregister_per_ip_per_hour = 100\n"
            "\n[domain.%s]\nregister = 1\nregister_invite_only = 1\n"
            "\n[domain.%s]\nregister = 1\nregister_per_ip_per_hour = 2\n"
            "\n[domain.%s]\nregister = 1\nauth = extauth\nextauth_program = /bin/false\n"
            % (self.open, self.inv, self.rl, self.ext))

    def all(self):
        return (self.open, self.inv, self.rl, self.ext)


@pytest.fixture(scope="module")
def doms(stack):
    d = Domains()
    with domains_with_config(stack, d.all(), d.section):
        yield d


async def tls_stream(stack, domain):
    s = RawStream(stack, to=domain)
    await s.connect()
    s.open_stream()
    await s.features()
    return s, await s.starttls()


def has_register(features):
    return features.find("{%s}register" % NS_FEATURE) is not None


def error_of(iq):
    err = iq.find("{%s}error" % NS_CLIENT)
    if iq.get("type") != "error" or err is None or not len(err):
        return None
    return err[0].tag.split("}")[1]


async def register(stack, domain, user, password, token=None, s=None):
    """A pre-SASL registration set on a fresh stream; (type or condition, stream)."""
    if s is None:
        s, _ = await tls_stream(stack, domain)
    if token is None:
        q = "<username>%s</username><password>%s</password>" % (user, password)
    else:
        q = ("<x xmlns='jabber:x:data' type='submit'>"
             "<field var='FORM_TYPE'><value>%s</value></field>"
             "<field var='username'><value>%s</value></field>"
             "<field var='password'><value>%s</value></field>"
             "<field var='token'><value>%s</value></field></x>" % (NS_REG, user, password, token))
    s.send("<iq type='set' id='r1'><query xmlns='%s'>%s</query></iq>" % (NS_REG, q))
    iq = await s.expect("{%s}iq" % NS_CLIENT)
    return (error_of(iq) or iq.get("type")), s


def users_of(stack, domain):
    return stack.sbctl("user", "list", domain).stdout


def test_registration_is_off_by_default(stack):
    async def go():
        s, feats = await tls_stream(stack, stack.domain)
        s.send("<iq type='get' id='g'><query xmlns='%s'/></iq>" % NS_REG)
        el = await s.element()
        await s.close()
        return feats, el
    feats, el = run(go())
    assert not has_register(feats)
    assert stream_error_condition(el) == "not-authorized"


def test_register_then_login_change_password_and_remove(stack, doms):
    user, pw, pw2 = "n%s" % secrets.token_hex(3), secrets.token_urlsafe(9), secrets.token_urlsafe(9)
    jid = "%s@%s" % (user, doms.open)

    async def go():
        s, feats = await tls_stream(stack, doms.open)
        assert has_register(feats)
        s.send("<iq type='get' id='g'><query xmlns='%s'/></iq>" % NS_REG)
        form = await s.expect("{%s}iq" % NS_CLIENT)
        assert form.get("type") == "result"
        assert form.find("{%s}query/{%s}username" % (NS_REG, NS_REG)) is not None
        got, s = await register(stack, doms.open, user, pw, s=s)
        assert got == "result"
        again, _ = await register(stack, doms.open, user, "other")
        assert again == "conflict"
        # the new account logs in with SCRAM (keys computed server-side)
        x = await login(stack, jid, pw, mech="SCRAM-SHA-256", plugins=("xep_0077",))
        logs = [Log(stack, fe) for fe in ("c2s1", "c2s2")]
        await x["xep_0077"].change_password(pw2)
        await close(x)
        # every front-end's credential cache forgets the old keys (sb:auth)
        for log in logs:
            await wait_async(lambda: any(jid in l for l in log.lines("event=auth_cache_forget")),
                             10, "auth_cache_forget on every front-end")
        with pytest.raises(LoginFailed):
            await login(stack, jid, pw, mech="SCRAM-SHA-256")
        x = await login(stack, jid, pw2, mech="SCRAM-SHA-1")
        await close(x)
        # <remove/>: result, then the stream ends with not-authorized
        r = RawStream(stack, to=doms.open)
        await r.login(jid, pw2)
        r.send("<iq type='set' id='rm'><query xmlns='%s'><remove/></query></iq>" % NS_REG)
        iq = await r.expect("{%s}iq" % NS_CLIENT)
        end = await r.element()
        await r.close()
        return iq, end
    assert user not in users_of(stack, doms.open)
    iq, end = run(go(), timeout=90)
    assert iq.get("type") == "result"
    assert stream_error_condition(end) == "not-authorized"
    assert user not in users_of(stack, doms.open)

    async def gone():
        with pytest.raises(LoginFailed):
            await login(stack, jid, pw2, mech="PLAIN")
    run(gone())


def test_remove_takes_the_uploaded_files_along(stack, doms):
    """<remove/> runs in sb-c2s, which cannot see [upload] dir: the ids are
    queued (upload_trash) in the statement that deletes the account, and an
    sb-bosh unlinks the files; the slot and quota rows go at once."""
    import os
    import urllib.parse
    from test_sbctl import psql
    from test_upload import bosh_port, req, slot, upload_cfg
    from xmpptest import wait_until
    user, pw = "f%s" % secrets.token_hex(3), secrets.token_urlsafe(9)
    jid = "%s@%s" % (user, doms.open)

    async def go():
        got, s = await register(stack, doms.open, user, pw)
        await s.close()
        assert got == "result"
        x = await login(stack, jid, pw, plugins=("xep_0030", "xep_0363"))
        try:
            put, get = await slot(x, "gone.txt", 4, "text/plain")
        finally:
            await close(x)
        assert req(bosh_port(stack), "PUT", put, b"gone", {"Content-Type": "text/plain"})[0] == 201
        r = RawStream(stack, to=doms.open)
        await r.login(jid, pw)
        r.send("<iq type='set' id='rm'><query xmlns='%s'><remove/></query></iq>" % NS_REG)
        iq = await r.expect("{%s}iq" % NS_CLIENT)
        await r.close()
        return iq, get
    iq, get = run(go(), timeout=90)
    assert iq.get("type") == "result"
    fid = urllib.parse.urlsplit(get).path.split("/")[-2]
    f = os.path.join(upload_cfg(stack)["dir"], fid[:2], fid)
    q = ("SELECT (SELECT count(*) FROM upload_files WHERE domain='%s' AND username='%s'),"
         " (SELECT count(*) FROM upload_quota WHERE domain='%s' AND username='%s')"
         % (doms.open, user, doms.open, user))
    assert psql(stack, q) == "0|0"
    wait_until(lambda: not os.path.exists(f), 20, "sb-bosh to unlink the removed account's file")
    assert req(bosh_port(stack), "GET", get)[0] == 404


def test_password_change_for_another_user_is_not_allowed(stack, doms):
    user, pw = "p%s" % secrets.token_hex(3), secrets.token_urlsafe(9)

    async def go():
        assert (await register(stack, doms.open, user, pw))[0] == "result"
        r = RawStream(stack, to=doms.open)
        await r.login("%s@%s" % (user, doms.open), pw)
        r.send("<iq type='set' id='pw'><query xmlns='%s'><username>someoneelse</username>"
               "<password>x</password></query></iq>" % NS_REG)
        iq = await r.expect("{%s}iq" % NS_CLIENT)
        r.send("<iq type='set' id='pw2'><query xmlns='%s'><username>%s</username></query></iq>"
               % (NS_REG, user))
        iq2 = await r.expect("{%s}iq" % NS_CLIENT)
        await r.close()
        return iq, iq2
    iq, iq2 = run(go())
    assert error_of(iq) == "not-allowed"
    assert error_of(iq2) == "bad-request"


def test_invite_only_needs_a_token_used_once(stack, doms):
    log = Log(stack, "c2s1")
    token = stack.sbctl("invite", "create", doms.inv, "--ttl", "600").stdout.strip()
    assert token.startswith("sbi_")

    async def go():
        s, feats = await tls_stream(stack, doms.inv)
        s.send("<iq type='get' id='g'><query xmlns='%s'/></iq>" % NS_REG)
        form = await s.expect("{%s}iq" % NS_CLIENT)
        await s.close()
        fields = [f.get("var") for f in form.iter("{jabber:x:data}field")]
        none, _ = await register(stack, doms.inv, "a" + secrets.token_hex(3), "pw1")
        bad, _ = await register(stack, doms.inv, "b" + secrets.token_hex(3), "pw1", token="sbi_nope")
        ok, _ = await register(stack, doms.inv, "c" + secrets.token_hex(3), "pw1", token=token)
        reuse, _ = await register(stack, doms.inv, "d" + secrets.token_hex(3), "pw1", token=token)
        return fields, none, bad, ok, reuse
    fields, none, bad, ok, reuse = run(go())
    assert "token" in fields
    assert (none, bad, ok, reuse) == ("forbidden", "forbidden", "result", "forbidden")
    assert log.lines("reason=no-invite") and log.lines("reason=invite")
    assert token not in log.text()


def test_registration_flood_from_one_address_is_limited(stack, doms):
    log = Log(stack, "c2s1")

    async def go():
        got = []
        for i in range(4):
            got.append((await register(stack, doms.rl, "f%d%s" % (i, secrets.token_hex(2)),
                                       "pw"))[0])
        return got
    got = run(go())
    assert got[:2] == ["result", "result"]
    assert got[2:] == ["resource-constraint", "resource-constraint"]
    lines = log.lines("event=register_rate_limited")
    assert len(lines) == 2 and all(doms.rl in line for line in lines)


def test_no_registration_on_an_external_domain(stack, doms):
    async def go():
        s, feats = await tls_stream(stack, doms.ext)
        await s.close()
        return feats
    assert not has_register(run(go()))
