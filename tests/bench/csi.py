#!/usr/bin/python3
"""The CSI scenario of `make bench` (XEP-0352): bytes the server writes to
one client whose 100 contacts change presence repeatedly, with the client
active and then inactive (held presence coalesced per contact, flushed on
<active/>). Prints one JSON line: bytes and stanzas each way, bytes saved.

  csi.py [--profile bench|test] [--contacts 100] [--rounds 5] [--carbons-msgs N]

Bytes are the XML the client reads (after TLS), counted from the first
presence change to the answer of an iq sent after the last one (inactive:
after <active/>), minus that answer. Runs against a live stack profile
(stack.sh -p PROFILE env); accounts are created with sbctl."""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests/integration"))

from imclient import IQ, PRESENCE, IMClient  # noqa: E402
from xmpptest import Stack  # noqa: E402

INACTIVE = "<inactive xmlns='urn:xmpp:csi:0'/>"
ACTIVE = "<active xmlns='urn:xmpp:csi:0'/>"


def stack_of(profile):
    out = subprocess.run([os.path.join(ROOT, "deploy/dev/stack.sh"), "-p", profile, "env"],
                         check=True, capture_output=True, text=True, timeout=10).stdout
    env = dict(os.environ)
    for line in out.splitlines():
        k, _, v = line.partition("=")
        env[k] = v
    return Stack(env)


def counting(client):
    """Count the bytes read from the client's stream from now on."""
    raw = client.raw
    client.rx = 0
    read = raw.reader.read

    async def counted(n=-1):
        data = await read(n)
        client.rx += len(data)
        return data
    raw.reader.read = counted


async def settle(client):
    """A ping to the own account waits in the user's queue behind everything
    before it; returns the approximate size of its answer."""
    iq = await client.iq("get", "<ping xmlns='urn:xmpp:ping'/>", timeout=60)
    assert iq.get("type") == "result"
    return len(b"<iq type='result' id='q00000000' to='%s'/>" % client.jid.encode())


async def befriend_all(obs, contacts):
    """Mutual subscriptions observer ↔ every contact, the contacts in parallel."""
    for c in contacts:
        obs.presence(to=c.bare, type_="subscribe")

    async def contact_side(c):
        await c.presence_from(obs.bare, "subscribe", timeout=60)
        c.presence(to=obs.bare, type_="subscribed")
        c.presence(to=obs.bare, type_="subscribe")
        await c.presence_from(obs.bare, "subscribed", timeout=60)
    task = asyncio.gather(*(contact_side(c) for c in contacts))
    want = {c.bare for c in contacts}
    seen = set()
    while seen != want:
        el = await obs.next(lambda e: e.tag == PRESENCE and e.get("type") == "subscribe", 60,
                            "subscribe")
        who = el.get("from").split("/")[0]
        if who in want and who not in seen:
            seen.add(who)
            obs.presence(to=who, type_="subscribed")
    await task


async def wave(contacts, rounds, tag):
    for r in range(rounds):
        for c in contacts:
            c.presence(status="%s round %d, still here" % (tag, r))
    for c in contacts:
        await settle(c)


async def drain(obs, secs):
    try:
        await obs.next(lambda e: False, secs)
    except AssertionError:
        pass


def count_presence(obs, contacts):
    jids = {c.jid for c in contacts}
    n = sum(1 for e in obs.backlog if e.tag == PRESENCE and e.get("from") in jids)
    obs.backlog.clear()
    return n


async def main(args):
    stack = stack_of(args.profile)
    users = [stack.add_user("csib") for _ in range(args.contacts + 1)]
    obs = await IMClient(stack, *users[0], instance="c2s1").login()
    await obs.roster_get()
    obs.presence()
    contacts = []
    for i, (jid, pw) in enumerate(users[1:]):
        c = await IMClient(stack, jid, pw, instance="c2s%d" % (1 + i % 2)).login()
        c.presence()
        contacts.append(c)
    await befriend_all(obs, contacts)
    await drain(obs, 2)
    obs.backlog.clear()
    counting(obs)
    res = {"scenario": "csi", "contacts": args.contacts, "rounds": args.rounds}

    # active: every change is delivered
    obs.rx = 0
    t0 = time.monotonic()
    await wave(contacts, args.rounds, "active")
    await drain(obs, 1)
    res["active_bytes"] = obs.rx
    res["active_presences"] = count_presence(obs, contacts)
    res["active_s"] = round(time.monotonic() - t0, 2)

    # inactive: held, coalesced, flushed on <active/>
    obs.send(INACTIVE)
    await settle(obs)
    obs.backlog.clear()
    obs.rx = 0
    await wave(contacts, args.rounds, "inactive")
    await drain(obs, 1)
    held_rx = obs.rx
    obs.send(ACTIVE)
    extra = await settle(obs)
    await drain(obs, 1)
    res["inactive_bytes_while_inactive"] = held_rx
    res["inactive_bytes"] = obs.rx - extra
    res["inactive_presences"] = count_presence(obs, contacts)
    res["saved_bytes"] = res["active_bytes"] - res["inactive_bytes"]
    res["saved_pct"] = round(100.0 * res["saved_bytes"] / max(res["active_bytes"], 1), 1)
    for c in contacts + [obs]:
        await c.close()
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--profile", default="bench")
    p.add_argument("--contacts", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(p.parse_args()))
