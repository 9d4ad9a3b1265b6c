"""The roster the `pep` fan-out scenario needs (tests/bench/fanout.c): user
PREFIX<first> and each of PREFIX<first+1> … PREFIX<first+n-1> in each
other's roster with subscription both, written straight into PostgreSQL
(1,000 subscriptions over XMPP would be 4,000 stanzas through one rate-
limited client). Used by bench.py and tests/integration/test_bench_smoke.py."""


def pep_roster_sql(domain, prefix, first, n):
    pub = "%s%d" % (prefix, first)
    rng = "generate_series(%d, %d) g" % (first + 1, first + n - 1)
    up = (" ON CONFLICT (domain, username, contact) DO UPDATE"
          " SET subscription = 'both', ask = NULL, removed = false")
    return ";\n".join([
        "INSERT INTO roster (domain, username, contact, subscription, version)"
        " SELECT '%s', '%s', '%s' || g || '@%s', 'both', g FROM %s%s"
        % (domain, pub, prefix, domain, rng, up),
        "INSERT INTO roster (domain, username, contact, subscription, version)"
        " SELECT '%s', '%s' || g, '%s@%s', 'both', 1 FROM %s%s"
        % (domain, prefix, pub, domain, rng, up),
        "INSERT INTO roster_version (domain, username, version)"
        " SELECT '%s', '%s' || g, %d FROM generate_series(%d, %d) g"
        " ON CONFLICT (domain, username) DO UPDATE"
        " SET version = greatest(roster_version.version, EXCLUDED.version)"
        % (domain, prefix, first + n, first, first + n - 1),
    ])
