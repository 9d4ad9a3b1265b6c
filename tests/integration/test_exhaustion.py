"""Resource exhaustion, each limit driven to its end against extra
front-ends started here (the rest of the suite keeps its defaults):

- c2s5 (`max_pending` 256 KiB, no rate limits): a client that never reads
  while it is sent a lot is disconnected with policy-violation (`slow_reader`)
  and the other users of the process go on chatting.
- c2s6 (`max_memory_mb` 2, `max_pending` 64 MiB, no rate limits): while a
  client that does not read holds megabytes of output, a new connection is
  refused with the stream error resource-constraint (`memory_refused`) and
  the sessions already up keep chatting; once that output is gone new
  connections are accepted again.
- bosh7 (`max_pending` 64 KiB): a BOSH session whose client stops polling
  while stanzas arrive for it is terminated with policy-violation.
"""

import asyncio
import types

import pytest

from test_limits import ExtraC2S
from xmpptest import (RawStream, close, describe, login, next_message, run,
                      stream_error_condition, wait_async, wait_until)

BIG = 60 * 1024                # body bytes of one flood message


def big_message(to, n):
    return ("<message to='%s' type='chat' id='big%d'><body>%s</body></message>"
            % (to, n, "x" * BIG))


def no_rate_limits(kind="C2S"):
    return {"SB_%s_MAX_RATE" % kind: "0", "SB_%s_MAX_STANZAS_PER_SEC" % kind: "0"}


@pytest.fixture(scope="module")
def pending_c2s(stack):
    c = ExtraC2S(stack, "c2s5", env=dict(no_rate_limits(), SB_C2S_MAX_PENDING="262144"))
    try:
        c.wait_ready()
        yield c
    finally:
        assert c.stop() == 0, "c2s5 did not exit cleanly on SIGTERM"


@pytest.fixture(scope="module")
def memory_c2s(stack):
    c = ExtraC2S(stack, "c2s6", env=dict(no_rate_limits(), SB_C2S_MAX_MEMORY_MB="2",
                                         SB_C2S_MAX_PENDING=str(64 << 20)))
    try:
        c.wait_ready()
        yield c
    finally:
        assert c.stop() == 0, "c2s6 did not exit cleanly on SIGTERM"


async def still_chatting(stack, a, b, b_jid, label):
    for n in range(3):
        body = "%s %d" % (label, n)
        a.send_message(mto=b_jid, mbody=body, mtype="chat")
        await next_message(b, timeout=10, body=body)


def test_slow_reader_is_disconnected_while_others_chat(stack, new_user, pending_c2s):
    (r_jid, r_pw), (s_jid, s_pw) = new_user("slowr"), new_user("slows")
    (a_jid, a_pw), (b_jid, b_pw) = new_user(), new_user()

    async def go():
        a = b = None
        reader = RawStream(stack, instance="c2s5", direct_tls=True)
        sender = RawStream(stack, instance="c2s5", direct_tls=True)
        try:
            a = await login(stack, a_jid, a_pw, instance="c2s5")
            b = await login(stack, b_jid, b_pw, instance="c2s5")
            full = await reader.login(r_jid, r_pw)
            await sender.login(s_jid, s_pw)
            # the reader never reads from here on; asyncio stops taking bytes
            # off its socket after 128 KiB, then the kernel's buffers fill
            for n in range(100):
                sender.send(big_message(full, n))
                await sender.writer.drain()
                if "event=slow_reader" in pending_c2s.log_text():
                    break
            await wait_async(lambda: "event=slow_reader" in pending_c2s.log_text()
                             and r_jid in pending_c2s.log_text(), 10, "slow_reader log line")
            # what it was sent, then the stream error, then the end
            err = None
            while True:
                el = await reader.element(timeout=10)
                if el is None or stream_error_condition(el):
                    err = el
                    break
            assert stream_error_condition(err) == "policy-violation", describe(err)
            await still_chatting(stack, a, b, b_jid, "after the slow reader")
        finally:
            for s in (reader, sender):
                await s.close()
            for x in (a, b):
                if x:
                    await close(x)
    run(go(), timeout=90)


async def probe(stack, instance):
    """Open a stream on the plain port: 'features', or the stream error's
    condition."""
    s = RawStream(stack, instance=instance)
    try:
        await s.connect()
        s.open_stream()
        el = await s.element(timeout=10)
        return stream_error_condition(el) or "features"
    finally:
        await s.close()


def test_memory_cap_refuses_new_connections_while_sessions_go_on(stack, new_user, memory_c2s):
    (r_jid, r_pw), (s_jid, s_pw) = new_user("memr"), new_user("mems")
    (a_jid, a_pw), (b_jid, b_pw) = new_user(), new_user()
    # an sm restarted by an earlier test drops what is in flight to it
    stack.wait_instances(present=("sm1", "sm2"))

    async def go():
        a = b = None
        reader = RawStream(stack, instance="c2s6", direct_tls=True)
        sender = RawStream(stack, instance="c2s6", direct_tls=True)
        try:
            assert await probe(stack, "c2s6") == "features"
            a = await login(stack, a_jid, a_pw, instance="c2s6")
            b = await login(stack, b_jid, b_pw, instance="c2s6")
            full = await reader.login(r_jid, r_pw)
            await sender.login(s_jid, s_pw)
            # 9 MB for a reader that takes nothing: the kernel holds up to
            # ~4 MB of it (tcp_wmem's 4 MiB send buffer, the reader's
            # window), the rest waits in c2s6: past the cap (90 % of 2 MiB),
            # far short of max_pending (64 MiB)
            for n in range(150):
                sender.send(big_message(full, n))
                await sender.writer.drain()
            refused, end = None, asyncio.get_running_loop().time() + 30
            n = 150
            while asyncio.get_running_loop().time() < end:
                got = await probe(stack, "c2s6")
                if got != "features":
                    refused = got
                    break
                if n < 400:            # more, should some of it have gone astray
                    sender.send(big_message(full, n))
                    n += 1
                await asyncio.sleep(0.1)
            assert refused == "resource-constraint", (refused, memory_c2s.log_text()[-3000:])
            assert "event=memory_refused" in memory_c2s.log_text()
            await still_chatting(stack, a, b, b_jid, "near the memory cap")
            # the reader goes: its queued output is freed, new streams are welcome
            reader.abort()

            async def accepted():
                end = asyncio.get_running_loop().time() + 15
                while asyncio.get_running_loop().time() < end:
                    if await probe(stack, "c2s6") == "features":
                        return True
                    await asyncio.sleep(0.2)
                return False
            assert await accepted(), "new connections still refused after the reader left"
        finally:
            for s in (reader, sender):
                await s.close()
            for x in (a, b):
                if x:
                    await close(x)
    run(go(), timeout=120)


@pytest.fixture(scope="module")
def small_bosh(stack):
    c = ExtraC2S(stack, "bosh7", kind="bosh", env={"SB_BOSH_MAX_PENDING": "65536"})
    stack.c2s.pop("bosh7", None)
    try:
        c.wait_ready()
        yield c, types.SimpleNamespace(env=dict(stack.env, SB_BOSH_PORT=str(c.port),
                                                SB_BOSH_TLS_PORT=str(c.tls_port)))
    finally:
        assert c.stop() == 0, "bosh7 did not exit cleanly on SIGTERM"


def test_bosh_queue_cap_terminates_a_session_that_stops_polling(stack, new_user, small_bosh):
    from webtest import Bosh, anon_domain
    bosh, web = small_bosh
    s_jid, s_pw = new_user("boshs")

    async def go():
        sender = RawStream(stack, instance="c2s1", direct_tls=True)
        try:
            v = Bosh(web)
            vjid = await asyncio.to_thread(v.login_anonymous, anon_domain(stack))
            await sender.login(s_jid, s_pw)
            # 8 KiB each, 160 KiB in all: well inside c2s1's rate burst, far
            # over bosh6's queue while nobody polls
            for n in range(20):
                sender.send("<message to='%s' type='chat' id='q%d'><body>%s</body></message>"
                            % (vjid, n, "y" * 8192))
            await sender.writer.drain()
            await wait_async(lambda: "event=slow_reader" in bosh.log_text(), 15,
                             "slow_reader log line on bosh7")
            root = await asyncio.to_thread(v.post_raw, v.body(rid=v.rid))
            assert root.get("type") == "terminate", v.last
            assert root.get("condition") in ("policy-violation", "item-not-found"), v.last
        finally:
            await sender.close()
    run(go(), timeout=60)
