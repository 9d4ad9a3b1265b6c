"""The direct path: every sm announces a direct endpoint (shown by `sbctl
status`), and a chat between users on different front-ends flows c2s → sm →
c2s without the router — it is still delivered, both ways, while the router
process is frozen (SIGSTOP). The freeze stays well under the heartbeat
timeout, so the router wakes up with every instance still alive."""

import os
import signal

from xmpptest import close, login, next_message, run, wait_until


def _router_pid(stack):
    var = stack.env.get("SB_VAR", os.path.join(stack.root, "var/test"))
    with open(os.path.join(var, "pid", "router1.pid")) as f:
        return int(f.read().strip())


def _directs(stack):
    """Instance name → DIRECT column of `sbctl status`."""
    out = stack.sbctl("status", timeout=10, check=False).stdout
    lines = out.splitlines()
    if not lines or not lines[0].startswith("INSTANCE"):
        return {}
    col = lines[0].index("DIRECT")
    rows = {}
    for line in lines[1:]:
        if not line.strip() or line.startswith("S2S CONNECTIONS") or line.startswith("("):
            break
        rows[line.split()[0]] = line[col:].split()[0] if len(line) > col else "-"
    return rows


def test_every_sm_announces_a_direct_endpoint(stack):
    def ok():
        d = _directs(stack)
        return all(d.get(sm, "-").startswith("tcp://127.0.0.1:") for sm in ("sm1", "sm2"))
    wait_until(ok, 10, "sm1 and sm2 show a direct endpoint (last: %r)" % _directs(stack))
    d = _directs(stack)
    assert d["sm1"] != d["sm2"]
    assert d.get("c2s1", "-") == "-"        # front-ends bind nothing


def test_chat_is_delivered_both_ways_while_the_router_is_frozen(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users
    router = _router_pid(stack)

    async def go():
        a = b = None
        try:
            a = await login(stack, a_jid, a_pw, instance="c2s1")
            b = await login(stack, b_jid, b_pw, instance="c2s2")
            # Warm up: the first exchange proves both sessions are bound and
            # every direct connection is up before the router stops.
            a.send_message(mto=b_jid, mbody="warm-up", mtype="chat")
            await next_message(b, timeout=10, body="warm-up")
            os.kill(router, signal.SIGSTOP)
            try:
                a.send_message(mto=b_jid, mbody="router asleep a->b", mtype="chat")
                got = await next_message(b, timeout=2, body="router asleep a->b")
                assert got["from"].bare == a_jid
                b.send_message(mto=a_jid, mbody="router asleep b->a", mtype="chat")
                await next_message(a, timeout=2, body="router asleep b->a")
            finally:
                os.kill(router, signal.SIGCONT)
        finally:
            await close(a)
            await close(b)
    run(go(), timeout=40)
    stack.wait_instances(present=["sm1", "sm2", "c2s1", "c2s2"], timeout=10)
