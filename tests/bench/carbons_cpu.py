#!/usr/bin/python3
"""Server CPU per message a user sends from resource 1 while resource 2 is
online, with carbons (XEP-0280) off vs on (sent copies): the `carbons`
scenario of `make bench`, or by hand on a running stack:
  carbons_cpu.py [--profile bench|test] N   (N <= 400: stays under the default stanza burst)
Three runs each way, alternating; CPU from /proc/PID/task/*/schedstat of
sm1, sm2, c2s1, c2s2, router1, router2. One JSON line per run, then a
summary line (medians)."""
import asyncio
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "../integration"))
from csi import stack_of  # noqa: E402
from imclient import IMClient, MESSAGE  # noqa: E402

PROCS = ["sm1", "sm2", "c2s1", "c2s2", "router1", "router2"]
RUNS = 3


def cpu(piddir):
    tot = 0.0
    for p in PROCS:
        pid = int(open(os.path.join(piddir, p + ".pid")).read().split()[0])
        for t in os.listdir("/proc/%d/task" % pid):
            try:
                tot += int(open("/proc/%d/task/%s/schedstat" % (pid, t)).read().split()[0]) / 1e9
            except OSError:            # a thread that ended meanwhile
                pass
    return tot


async def run(st, carbons, n):
    piddir = os.path.join(st.env["SB_VAR"], "pid")
    (aj, ap), (bj, bp) = st.add_user("cpa"), st.add_user("cpb")
    a1 = await IMClient(st, aj, ap, "c2s1").login()
    a1.presence()
    a2 = await IMClient(st, aj, ap, "c2s2").login()
    a2.presence()
    b = await IMClient(st, bj, bp, "c2s2").login()
    b.presence()
    for c in (a1, a2):
        await c.iq("set", "<%s xmlns='urn:xmpp:carbons:2'/>" % ("enable" if carbons else "disable"))
    # a2's enable makes A's sm tell c2s1 (control carbons-route) to pass
    # a1's messages through it; that control and the answer to this iq of
    # a1 travel on the same link, so once a1 has the answer, c2s1 routes
    # a1's next messages by the new route (without it, a1's burst can leave
    # before the control arrives: no copies)
    await a1.iq("set", "<%s xmlns='urn:xmpp:carbons:2'/>" % ("enable" if carbons else "disable"))
    c0 = cpu(piddir)
    for i in range(n):
        a1.send("<message to='%s' type='chat'><body>m%d</body></message>" % (bj, i))
    for _ in range(n):
        await b.next(lambda e: e.tag == MESSAGE, 30)
    copies = 0
    if carbons:
        while copies < n:
            await a2.next(lambda e: e.tag == MESSAGE, 30)
            copies += 1
    c1 = cpu(piddir)
    for c in (a1, a2, b):
        await c.close()
    return (c1 - c0) / n * 1e6, copies


async def main():
    args = sys.argv[1:]
    profile = "bench"
    if args[:1] == ["--profile"]:
        profile, args = args[1], args[2:]
    n = int(args[0])
    st = stack_of(profile)
    us = {False: [], True: []}
    for carbons in (False, True) * RUNS:
        x, copies = await run(st, carbons, n)
        if carbons and copies != n:
            raise SystemExit("carbons: %d copies of %d messages" % (copies, n))
        us[carbons].append(x)
        print(json.dumps({"carbons": carbons, "messages": n, "copies": copies,
                          "server_cpu_us_per_msg": round(x, 1)}), flush=True)
    print(json.dumps({"summary": True, "messages": n, "runs": RUNS,
                      "off_us": round(statistics.median(us[False]), 1),
                      "on_us": round(statistics.median(us[True]), 1),
                      "off_all": [round(x, 1) for x in us[False]],
                      "on_all": [round(x, 1) for x in us[True]]}))


asyncio.run(main())
