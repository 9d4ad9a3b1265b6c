#!/usr/bin/python3
"""MAM query latency on a large archive (XEP-0313, sm/mod_mam.c).

  SB_TEST_PORT_OFFSET=2000 deploy/dev/stack.sh -p test run
  SB_TEST_PORT_OFFSET=2000 MAM_ROWS=1000000 /usr/bin/python3 tests/bench/mam_bench.py
  SB_TEST_PORT_OFFSET=2000 deploy/dev/stack.sh -p test stop

Generates MAM_ROWS archive rows (default 1,000,000) spread over
MAM_USERS owners (default 1000, so the measured user has ROWS/USERS
messages; one more "heavy" user holds MAM_HEAVY rows, default 100,000)
with one INSERT … SELECT generate_series, then times MAM_QUERIES queries
per kind over a real stream (login, iq set, every result, <fin/>): the
last page, a page after a given id, a `with` filter, a full-text search.
Prints p50/p99 in ms per kind. Figures go in tests/bench/README.md."""

import asyncio
import os
import secrets
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from xmpptest import Stack  # noqa: E402
from test_iq import Client  # noqa: E402
import subprocess  # noqa: E402
from test_mam import mam, form, rsm, fin  # noqa: E402

ROWS = int(os.environ.get("MAM_ROWS", "1000000"))
USERS = int(os.environ.get("MAM_USERS", "1000"))
HEAVY = int(os.environ.get("MAM_HEAVY", "100000"))
QUERIES = int(os.environ.get("MAM_QUERIES", "50"))

WORDS = ["hello", "привет", "meeting", "встреча", "tomorrow", "завтра", "coffee", "кофе",
         "report", "отчёт", "lunch", "обед", "deploy", "релиз"]


def psql(stack, sql, timeout=3600):
    env = dict(os.environ)
    if stack.env.get("SB_PG_PASSWORD_FILE"):
        with open(stack.env["SB_PG_PASSWORD_FILE"]) as f:
            env["PGPASSWORD"] = f.read().strip()
    p = subprocess.run(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", stack.env["SB_PG_PORT"],
                        "-U", "switchboard", "-d", "switchboard", "-v", "ON_ERROR_STOP=1",
                        "-tAc", sql], env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def generate(stack, domain, heavy_node):
    arr = "ARRAY[%s]" % ",".join("'%s'" % w for w in WORDS)
    body = ("(%s)[1 + g %% %d] || ' ' || (%s)[1 + (g / 7) %% %d] || ' ' || g" %
            (arr, len(WORDS), arr, len(WORDS)))
    t0 = time.time()
    # The bulk: many owners, then one heavy owner (the measured one).
    for owner_expr, n in (("'bulk' || (g %% %d)" % USERS, ROWS - HEAVY), ("'%s'" % heavy_node, HEAVY)):
        psql(stack, "INSERT INTO archive (domain, username, stanza_id, with_bare, with_res,"
             " outgoing, ts, stanza, body_tsv)"
             " SELECT '%s', %s, md5(g::text || random()::text), 'peer' || (g %% 20) || '@%s', '',"
             " g %% 2 = 0, now() - make_interval(secs => %d - g),"
             " '<message type=''chat'' to=''x@%s''><body>' || %s || '</body></message>',"
             " to_tsvector('simple', %s) FROM generate_series(1, %d) AS g"
             % (domain, owner_expr, domain, n, domain, body, body, n))
    psql(stack, "ANALYZE archive")
    return time.time() - t0


async def timed(c, payload):
    t = time.perf_counter()
    res, ans = await mam(c, payload, timeout=60)
    assert ans.get("type") == "result", ans
    return (time.perf_counter() - t) * 1e3, res, ans


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def measure(stack, account):
    c = await Client.login(stack, account)
    out = {}
    _, res, ans = await timed(c, rsm(max=50, before=""))
    last_page_first = fin(ans)["first"]
    kinds = {
        "last page (max 50)": lambda: rsm(max=50, before=""),
        "page after an id": lambda: rsm(max=50, after=last_page_first),
        "with filter, last page": lambda: form(**{"with": "peer7@" + stack.domain}) +
        rsm(max=50, before=""),
        "full-text word": lambda: form(fulltext=secrets.choice(WORDS)) + rsm(max=50, before=""),
        "full-text 2 words": lambda: form(fulltext="привет coffee") + rsm(max=50),
    }
    for name, mk in kinds.items():
        ts = []
        for _ in range(QUERIES):
            ms, _, _ = await timed(c, mk())
            ts.append(ms)
        out[name] = (pct(ts, 50), pct(ts, 99), statistics.mean(ts))
    await c.close()
    return out


def main():
    stack = Stack.from_environment()
    jid, pw = stack.add_user("mamheavy")
    node = jid.split("@")[0]
    gen = generate(stack, stack.domain, node)
    total = psql(stack, "SELECT count(*) FROM archive")
    print("archive rows: %s (generated %d in %.1f s; heavy user %d rows)" % (total, ROWS, gen, HEAVY))
    res = asyncio.run(measure(stack, (jid, pw)))
    print("| query | p50 ms | p99 ms | mean ms |")
    print("|---|---|---|---|")
    for k, (p50, p99, mean) in res.items():
        print("| %s | %.1f | %.1f | %.1f |" % (k, p50, p99, mean))


if __name__ == "__main__":
    main()
