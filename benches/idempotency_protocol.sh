#!/usr/bin/env bash
# The idempotent transaction's shapes at the protocol level, with pgbench's C client and
# prepared statements: the statements the library sends in each handler mode, without the
# library, against the bare transaction. Same body as `cargo bench --bench idempotency`:
# one UPDATE of a product's stock, 16 clients, each on its own 62 products (so that lock
# waits do not blur the comparison). `cargo bench --bench idempotency` runs this script
# itself, in the same run as the library, on loopback and through its delay proxy, and
# prints library/reference ratios; run it alone for the protocol table only.
#
#   bash benches/idempotency_protocol.sh [seconds measured per shape, default 8] [rounds, default 3]
#
# Needs pgbench and a PostgreSQL server (PGHOST/PGPORT/PGUSER, default 127.0.0.1:5432,
# postgres). Works in a scratch database that it drops at the end. Prints the mean events
# per second of each shape over the rounds, and its ratio to the bare one. `SHAPES="bare
# chained"` runs only those; `EXTRA=1` adds the pipelined and record-last shapes (what
# pipelining, which sqlx cannot do, would buy). Through the bench's delay proxy:
#   BENCH_PROXY_SERVE=6543 target/release/deps/idempotency-<hash> &  PGPORT=6543 bash benches/idempotency_protocol.sh
#
# How each shape is measured: a shape that handles N events per pgbench transaction
# (chained: N = 16, because a pgbench script may not end inside a transaction; a batch: its
# size) is a script of N events, so it has N times the statements, and pgbench prepares each
# statement of a script synchronously when a client first runs it, stalling every client of
# its thread. In a short run that start-up stall is a large part of the time (a chained
# script of 49 statements, 16 clients on 2 threads: 0 events in the first second, under
# load), which is why an earlier version of this script measured the chained shape below
# claim-first. So each run starts with WARMUP seconds (default 2) that are not counted:
# the rate is the mean of pgbench's per-second progress reports after them.
set -euo pipefail

seconds="${1:-8}"
rounds="${2:-3}"
warmup="${WARMUP:-2}"
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
db="prost_bench_protocol_$$"
work="$(mktemp -d)"
trap 'psql -qX -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null; rm -rf "$work"' EXIT

psql -qX -d postgres -c "CREATE DATABASE $db"
repo="$(cd "$(dirname "$0")/.." && pwd)"
# The idempotency table exactly as the framework creates it: its DDL, read from the source,
# in the database's public schema. Duplicates replay records 1 to 100000 of action 'dup'.
ddl=$(sed -n '/^pub(crate) const STEP_2_IDEMPOTENCY_RECORDS: &str = r#"$/,/^"#;$/p' \
    "$repo/prost-db/src/framework.rs" | sed '1d;$d; s/{schema}\.//g')
[[ "$ddl" == *"CREATE TABLE"* ]] || { echo "idempotency DDL not found in framework.rs" >&2; exit 1; }
psql -qX -v ON_ERROR_STOP=1 -d "$db" <<SQL
CREATE TABLE products (id BIGINT PRIMARY KEY, stock BIGINT NOT NULL);
INSERT INTO products SELECT g, 1000000000 FROM generate_series(1, 1000) g;
$ddl
INSERT INTO idempotency_records (event_id, service_name, action, payload_hash)
  SELECT g::text, 'catalog', 'dup', sha256('x'::bytea) FROM generate_series(1, 100000) g;
VACUUM ANALYZE;
SQL

# The statements, as the library sends them (record.rs, batch.rs), with pgbench variables
# for the parameters. A key is a random 63-bit number (in text, as the library's keys are);
# the library's `BEGIN ...; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; SET LOCAL
# lock_timeout` is one simple query that pgbench's prepared mode cannot send as one
# message: `BEGIN ISOLATION LEVEL READ COMMITTED` stands for it (the claim's set_config
# sets the lock timeout, as the library's claim does too).
own='\set p :client_id * 62 + random(1, 62)'
key='\set k random(1, 9000000000000000000)'
dup='\set d random(1, 100000)'
begin='BEGIN ISOLATION LEVEL READ COMMITTED;'
claim() { # $1: key expression, $2: action
    echo "INSERT INTO idempotency_records (event_id, service_name, action, payload_hash)
  SELECT $1, 'catalog', '$2', sha256('x'::bytea)
  FROM (SELECT set_config('lock_timeout', '30000', true)) AS lock_timeout
  ON CONFLICT (event_id, service_name, action) DO NOTHING;"
}
update='UPDATE products SET stock = stock - 1 WHERE id = :p;'
update_data='UPDATE products SET stock = stock - 1 WHERE id = :p RETURNING stock;'
complete="UPDATE idempotency_records SET result = '999999'::jsonb, permanent_error = false
  WHERE event_id = :k AND service_name = 'catalog' AND action = 'reserve_stock';"
# Chained mode's result write, as record.rs's COMPLETE_AND_CHAIN (its values hex literals,
# here the result '999999'; the key stays a parameter), checked to write 1 row, and sent
# with the COMMIT AND CHAIN in one pipeline: the library sends the two as one simple query,
# pgbench's prepared mode cannot, and a pipeline is the same single round trip.
complete_chained="WITH completed AS (UPDATE idempotency_records
  SET result = convert_from(decode('393939393939', 'hex'), 'UTF8')::jsonb, permanent_error = false
  WHERE event_id = :k AND service_name = 'catalog' AND action = 'reserve_stock' RETURNING 1)
  SELECT 1 / count(*)::int FROM completed;"
select="SELECT payload_hash, result, permanent_error, created_at FROM idempotency_records
  WHERE event_id = :d AND service_name = 'catalog' AND action = 'dup';"
# One event's statements inside the transaction, per body and kind of event.
event() { # $1: unit, data (data_body: without the result write) or dup
    case "$1" in
    unit) printf '%s\n' "$own" "$key" "$(claim :k::text reserve_stock)" "$update" ;;
    data) printf '%s\n' "$own" "$key" "$(claim :k::text reserve_stock)" "$update_data" "$complete" ;;
    data_body) printf '%s\n' "$own" "$key" "$(claim :k::text reserve_stock)" "$update_data" ;;
    dup) printf '%s\n' "$dup" "$(claim :d::text dup)" "$select" ;;
    esac
}
end() { [[ "$1" == dup ]] && echo 'ROLLBACK' || echo 'COMMIT'; }

# Claim first (transaction mode): BEGIN, the event, COMMIT (a duplicate: ROLLBACK).
# Chained: 16 events per script, each ended with COMMIT AND CHAIN (a duplicate: ROLLBACK
# AND CHAIN), a result write in the same round trip; the script's first BEGIN and last
# COMMIT are one event in 16.
# Batch of N: BEGIN, one claim of N keys, the N bodies, one UPDATE of their results (data),
# or the claim and one SELECT of the N records (duplicates), COMMIT.
printf '%s\n' "$own" 'BEGIN;' "$update" 'COMMIT;' >"$work/bare.sql"
for kind in unit data dup; do
    suffix=$([[ $kind == unit ]] && echo "" || echo "_$kind")
    { echo "$begin"; event "$kind"; echo "$(end "$kind");"; } >"$work/claim_first$suffix.sql"
    {
        echo "$begin"
        for ((i = 1; i <= 16; i++)); do
            last="$(end "$kind");"
            if ((i < 16)); then last="$(end "$kind") AND CHAIN;"; fi
            if [[ $kind == data ]]; then
                # The event without its result write, then the write and the commit at once.
                event data_body
                printf '%s\n' '\startpipeline' "$complete_chained" "$last" '\endpipeline'
            else
                event "$kind"
                echo "$last"
            fi
        done
    } >"$work/chained${suffix}_x16.sql"
    for n in 32 128; do
        keys="(:k::bigint + g)::text"
        series="generate_series(1, $n) AS g"
        {
            echo "$begin"
            if [[ $kind == dup ]]; then
                echo "$dup"
                echo "INSERT INTO idempotency_records (event_id, service_name, action, payload_hash) SELECT ((:d + g) % 100000 + 1)::text, 'catalog', 'dup', sha256('x'::bytea) FROM generate_series(1, $n) AS g ORDER BY 1 ON CONFLICT (event_id, service_name, action) DO NOTHING RETURNING event_id;"
                echo "SELECT event_id, payload_hash, result, permanent_error, created_at FROM idempotency_records WHERE event_id = ANY(ARRAY(SELECT ((:d + g) % 100000 + 1)::text FROM generate_series(1, $n) AS g)) AND service_name = 'catalog' AND action = 'dup';"
            else
                echo "$key"
                echo "INSERT INTO idempotency_records (event_id, service_name, action, payload_hash) SELECT $keys, 'catalog', 'batch', sha256('x'::bytea) FROM $series ORDER BY 1 ON CONFLICT (event_id, service_name, action) DO NOTHING RETURNING event_id;"
                for ((i = 1; i <= n; i++)); do
                    printf '%s\n' "$own" "$([[ $kind == data ]] && echo "$update_data" || echo "$update")"
                done
                if [[ $kind == data ]]; then
                    echo "UPDATE idempotency_records AS r SET result = '999999'::jsonb, permanent_error = false FROM (SELECT $keys FROM $series) AS t(k) WHERE r.event_id = t.k AND r.service_name = 'catalog' AND r.action = 'batch';"
                fi
            fi
            echo 'COMMIT;'
        } >"$work/batch${n}${suffix}_x$n.sql"
    done
done
if [[ "${EXTRA:-0}" == 1 ]]; then
    printf '%s\n' "$own" "$key" "$begin" "$update" \
        "INSERT INTO idempotency_records (event_id, service_name, action, payload_hash, result)
  VALUES (:k::text, 'catalog', 'record_last', sha256('x'::bytea), 'null')
  ON CONFLICT (event_id, service_name, action) DO NOTHING;" 'COMMIT;' >"$work/record_last.sql"
    printf '%s\n' "$own" "$key" '\startpipeline' "$begin" "$(claim :k::text reserve_stock)" \
        '\endpipeline' "$update" 'COMMIT;' >"$work/claim_first_pipelined.sql"
fi

# The per-second progress reports after the warm-up, averaged; times events per script.
measure() { # $1: script
    local name per
    name=$(basename "$1" .sql)
    per=1
    [[ "$name" =~ _x([0-9]+)$ ]] && per="${BASH_REMATCH[1]}"
    pgbench -n -M prepared -c 16 -j 2 -P 1 -T $((warmup + seconds)) -f "$1" "$db" 2>&1 |
        awk -v w="$warmup" -v p="$per" -v n="${name%_x*}" '
            /^progress: / { t = $2 + 0; if (t > w) { sum += $4; k++ } }
            /aborted|error/ { print > "/dev/stderr" }
            END { if (k) printf "%s %.1f\n", n, sum / k * p; else printf "%s 0\n", n }'
}

printf '%-28s %10s %7s\n' "shape (pgbench, 16 clients)" events/s ratio
for ((round = 1; round <= rounds; round++)); do
    for script in "$work"/*.sql; do
        name=$(basename "$script" .sql)
        if [[ -n "${SHAPES:-}" && " $SHAPES " != *" ${name%_x*} "* ]]; then continue; fi
        measure "$script"
    done
done | awk '
    { sum[$1] += $2; n[$1]++ }
    END {
        bare = sum["bare"] / n["bare"]
        for (k in sum) printf "%-28s %10.0f %6.2fx\n", k, sum[k] / n[k], bare ? sum[k] / n[k] / bare : 0
    }' | sort
