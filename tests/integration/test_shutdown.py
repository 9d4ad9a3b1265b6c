"""SIGTERM: every process exits by itself (stack.sh stop-proc sends SIGTERM
and only SIGKILLs after 5 s), a front-end first closes its streams with
system-shutdown, an sm first lets its pending database writes finish; the
process is started again and the cluster serves logins as before."""

import asyncio
import os

import pytest

from xmpptest import RawStream, run, stream_error_condition, describe


def log_path(stack, name):
    return os.path.join(stack.env.get("SB_VAR", os.path.join(stack.root, "var/test")),
                        "log", name + ".log")


def log_since(stack, name, offset):
    with open(log_path(stack, name), "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def restart_clean(stack, name):
    out = stack.stack("stop-proc", name)
    assert "stopped: %s" % name in out and "killed" not in out, out
    stack.stack("start-proc", name)


@pytest.mark.parametrize("name,marker", [
    ("sm1", "event=shutdown_drained"),
    ("router1", "event=stop"),
])
def test_sigterm_stops_cleanly_and_restarts(stack, new_user, name, marker):
    jid, password = new_user()
    offset = os.path.getsize(log_path(stack, name))
    restart_clean(stack, name)
    assert marker in log_since(stack, name, offset)
    stack.wait_instances(present=["sm1", "sm2", "c2s1", "c2s2"], timeout=20)

    async def go():
        s = RawStream(stack, direct_tls=True)
        try:
            await s.login(jid, password)
        finally:
            await s.close()
    run(go())


def test_sigterm_on_front_end_sends_system_shutdown(stack, new_user):
    jid, password = new_user()

    async def go():
        s = RawStream(stack, instance="c2s2", direct_tls=True)
        try:
            await s.login(jid, password)
            restart_clean(stack, "c2s2")
            err = await s.element(timeout=10)
            assert stream_error_condition(err) == "system-shutdown", describe(err)
            await s.wait_closed()
            assert s.closed
        finally:
            await s.close()
        stack.wait_instances(present=["c2s2"], timeout=20)
        again = RawStream(stack, instance="c2s2", direct_tls=True)
        deadline = 20
        while True:
            try:
                await again.login(jid, password)
                break
            except (OSError, AssertionError):
                deadline -= 1
                assert deadline > 0, "c2s2 not serving after restart"

                await asyncio.sleep(0.5)
                again = RawStream(stack, instance="c2s2", direct_tls=True)
        await again.close()
    run(go())
