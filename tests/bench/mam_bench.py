#!/usr/bin/python3
"""MAM query latency on a large archive (XEP-0313, sm/mod_mam.c): the
`mamq` scenario of `make bench` (BENCH_MAM_ROWS, BENCH_MAM_HEAVY,
BENCH_MAM_QUERIES), or by hand against a running stack:

  SB_TEST_PORT_OFFSET=2000 deploy/dev/stack.sh -p test run
  SB_TEST_PORT_OFFSET=2000 MAM_ROWS=1000000 /usr/bin/python3 tests/bench/mam_bench.py
  SB_BENCH_PORT_OFFSET=1000 MAM_ROWS=10000000 tests/bench/mam_bench.py --profile bench

Generates MAM_ROWS archive rows (default 1,000,000) spread over
MAM_USERS owners (default 1000, so each has ROWS/USERS messages; one more
"heavy" user, the measured one, holds MAM_HEAVY rows, default 100,000) with
one INSERT … SELECT generate_series per kind of owner. The archive's
secondary indexes are dropped first and built again afterwards (their
definitions read from pg_indexes, all in one transaction: a failure leaves
the table as it was), then VACUUM ANALYZE, as autovacuum would leave an
archive that has been written for a while. With --profile bench the
archive and the heavy account are kept (var/bench/mam-archive.json) and
reused while MAM_ROWS and MAM_HEAVY stay the same.

Then it times MAM_QUERIES queries per kind over a real stream (login, iq
set, every <result/>, <fin/>): the last page, a page after a given id, a
`with` filter, full-text one word / two words. Prints a Markdown table and
one JSON line (p50/p99/mean in ms per kind). Figures go in
tests/bench/README.md."""

import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

ROWS = int(os.environ.get("MAM_ROWS", "1000000"))
USERS = int(os.environ.get("MAM_USERS", "1000"))
HEAVY = int(os.environ.get("MAM_HEAVY", "100000"))
QUERIES = int(os.environ.get("MAM_QUERIES", "50"))

WORDS = ["hello", "привет", "meeting", "встреча", "tomorrow", "завтра", "coffee", "кофе",
         "report", "отчёт", "lunch", "обед", "deploy", "релиз"]


def psql(env, sql, timeout=7200, single=True):
    """One psql -c as the application role; env: the stack's (SB_PG_PORT,
    SB_PG_PASSWORD_FILE). Several statements run in one transaction
    (single=False for what cannot run in one: VACUUM)."""
    e = dict(os.environ)
    if env.get("SB_PG_PASSWORD_FILE"):
        with open(env["SB_PG_PASSWORD_FILE"]) as f:
            e["PGPASSWORD"] = f.read().strip()
    p = subprocess.run(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", env["SB_PG_PORT"],
                        "-U", "switchboard", "-d", "switchboard", "-v", "ON_ERROR_STOP=1",
                        *(["-1"] if single else []), "-tAc", sql], env=e, capture_output=True, text=True,
                       timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("psql: %s" % p.stderr.strip())
    return p.stdout.strip()


def generate(env, domain, heavy_node):
    """ROWS - HEAVY rows over USERS owners, HEAVY rows for heavy_node; the
    seconds it took (insert, index builds, VACUUM ANALYZE)."""
    arr = "ARRAY[%s]" % ",".join("'%s'" % w for w in WORDS)
    body = ("(%s)[1 + g %% %d] || ' ' || (%s)[1 + (g / 7) %% %d] || ' ' || g" %
            (arr, len(WORDS), arr, len(WORDS)))
    t0 = time.time()
    idx = psql(env, "SELECT indexname || ' ' || indexdef FROM pg_indexes WHERE"
               " tablename = 'archive' AND indexname <> 'archive_pkey'").splitlines()
    stmts = ["SET LOCAL maintenance_work_mem = '512MB'"]
    stmts += ["DROP INDEX %s" % l.split(" ", 1)[0] for l in idx]
    # the bulk: many owners (accounts that do not exist), then the heavy owner
    for owner, n in (("'bulk' || (g %% %d)" % USERS, ROWS - HEAVY), ("'%s'" % heavy_node, HEAVY)):
        if n <= 0:
            continue
        stmts.append(
            "INSERT INTO archive (domain, username, stanza_id, with_bare, with_res,"
            " outgoing, ts, stanza, body_tsv)"
            " SELECT '%s', %s, md5(g::text || random()::text), 'peer' || (g %% 20) || '@%s', '',"
            " g %% 2 = 0, now() - make_interval(secs => %d - g),"
            " '<message type=''chat'' to=''x@%s''><body>' || b || '</body></message>',"
            " to_tsvector('simple', b)"
            " FROM generate_series(1, %d) AS g, LATERAL (SELECT %s AS b) AS t"
            % (domain, owner, domain, n, domain, n, body))
    stmts += [l.split(" ", 1)[1] for l in idx]
    psql(env, ";\n".join(stmts))
    t1 = time.time()
    psql(env, "VACUUM ANALYZE archive", single=False)
    return t1 - t0, time.time() - t1


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def measure(stack, account):
    from test_iq import Client
    from test_mam import mam, form, rsm, fin

    async def timed(c, payload):
        t = time.perf_counter()
        res, ans = await mam(c, payload, timeout=120)
        assert ans.get("type") == "result", ans
        return (time.perf_counter() - t) * 1e3, res, ans

    c = await Client.login(stack, account)
    out = {}
    _, res, ans = await timed(c, rsm(max=50, before=""))
    f = fin(ans)
    assert f["count"] == HEAVY, f            # every generated row of the user, counted
    last_page_first = f["first"]
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
        out[name] = {"p50_ms": round(pct(ts, 50), 2), "p99_ms": round(pct(ts, 99), 2),
                     "mean_ms": round(statistics.mean(ts), 2)}
    await c.close()
    return out


def stack_for(profile):
    sys.path.insert(0, os.path.join(HERE, "..", "integration"))
    from xmpptest import Stack
    if profile == "test":
        return Stack.from_environment()
    out = subprocess.run([os.path.join(ROOT, "deploy/dev/stack.sh"), "-p", profile, "env"],
                         check=True, capture_output=True, text=True, timeout=10).stdout
    env = dict(os.environ)
    env.update(dict(l.split("=", 1) for l in out.splitlines() if "=" in l))
    return Stack(env)


def main():
    profile = "test"
    if len(sys.argv) == 3 and sys.argv[1] == "--profile":
        profile = sys.argv[2]
    stack = stack_for(profile)
    keep = os.path.join(stack.env["SB_VAR"], "mam-archive.json") if profile == "bench" else None
    kept = None
    if keep and os.path.exists(keep):
        kept = json.load(open(keep))
        if (kept.get("rows"), kept.get("heavy"), kept.get("users")) != (ROWS, HEAVY, USERS):
            kept = None
    gen = None
    if kept and psql(stack.env, "SELECT count(*) FROM archive WHERE domain = '%s' AND"
                     " username = '%s'" % (stack.domain, kept["jid"].split("@")[0])) == str(HEAVY):
        jid, pw = kept["jid"], kept["password"]
    else:
        jid, pw = stack.add_user("mamheavy")
        gen, vac = generate(stack.env, stack.domain, jid.split("@")[0])
        print("generated %d rows in %.1f s (+ VACUUM ANALYZE %.1f s)" % (ROWS, gen, vac),
              file=sys.stderr, flush=True)
        if keep:
            with open(keep, "w") as f:
                json.dump({"rows": ROWS, "heavy": HEAVY, "users": USERS, "jid": jid,
                           "password": pw, "generate_s": gen, "vacuum_s": vac}, f)
    total = int(psql(stack.env, "SELECT count(*) FROM archive"))
    res = asyncio.run(measure(stack, (jid, pw)))
    print("archive rows: %d (heavy user %d rows%s)" % (
        total, HEAVY, "; generated %d in %.1f s" % (ROWS, gen) if gen else ", kept"))
    print("| query | p50 ms | p99 ms | mean ms |")
    print("|---|---|---|---|")
    for k, v in res.items():
        print("| %s | %.1f | %.1f | %.1f |" % (k, v["p50_ms"], v["p99_ms"], v["mean_ms"]))
    print(json.dumps({"scenario": "mamq", "archive_rows": total, "generated": ROWS,
                      "heavy": HEAVY, "queries": QUERIES, "generate_s": gen,
                      "vacuum_s": vac if gen else None, "kinds": res}))


if __name__ == "__main__":
    main()
