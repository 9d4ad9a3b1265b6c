#!/usr/bin/python3
"""Server CPU per message a user sends from resource 1 while resource 2 is
online, with carbons off vs on (sent copies), on a running bench stack:
  carbons_cpu.py N   (N <= 400: stays under the default stanza burst)
CPU from /proc/PID/task/*/schedstat of sm1, sm2, c2s1, c2s2, router1, router2."""
import asyncio, os, sys, time, json
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "../integration"))
from csi import stack_of
from imclient import IMClient, MESSAGE
PIDDIR = os.path.join(HERE, "../../var/bench/pid")
PROCS = ["sm1", "sm2", "c2s1", "c2s2", "router1", "router2"]
def cpu():
    tot = 0.0
    for p in PROCS:
        pid = int(open(os.path.join(PIDDIR, p + ".pid")).read().split()[0])
        for t in os.listdir("/proc/%d/task" % pid):
            tot += int(open("/proc/%d/task/%s/schedstat" % (pid, t)).read().split()[0]) / 1e9
    return tot
async def run(carbons, n):
    st = stack_of("bench")
    (aj, ap), (bj, bp) = st.add_user("cpa"), st.add_user("cpb")
    a1 = await IMClient(st, aj, ap, "c2s1").login(); a1.presence()
    a2 = await IMClient(st, aj, ap, "c2s2").login(); a2.presence()
    b = await IMClient(st, bj, bp, "c2s2").login(); b.presence()
    for c in (a1, a2):
        await c.iq("set", "<%s xmlns='urn:xmpp:carbons:2'/>" % ("enable" if carbons else "disable"))
    await a1.iq("set", "<%s xmlns='urn:xmpp:carbons:2'/>" % ("enable" if carbons else "disable"))
    c0 = cpu()
    for i in range(n):
        a1.send("<message to='%s' type='chat'><body>m%d</body></message>" % (bj, i))
    got = 0
    while got < n:
        el = await b.next(lambda e: e.tag == MESSAGE, 30)
        got += 1
    copies = 0
    if carbons:
        while copies < n:
            await a2.next(lambda e: e.tag == MESSAGE, 30); copies += 1
    c1 = cpu()
    for c in (a1, a2, b): await c.close()
    return (c1 - c0) / n * 1e6, copies
async def main():
    n = int(sys.argv[1])
    for carbons in (False, True) * 3:
        us, copies = await run(carbons, n)
        print(json.dumps({"carbons": carbons, "messages": n, "copies": copies, "server_cpu_us_per_msg": round(us, 1)}))
asyncio.run(main())
