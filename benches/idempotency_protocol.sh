#!/usr/bin/env bash
# The idempotent transaction's shapes at the protocol level, with pgbench's C client and
# prepared statements, against the bare transaction: what each shape costs on the server,
# and what pipelining (which sqlx 0.9 cannot do) would buy. Same body as
# `cargo bench --bench idempotency`: one UPDATE of a product's stock, 16 clients, each on
# its own 62 products (so that lock waits do not blur the comparison).
#
#   bash benches/idempotency_protocol.sh [seconds per run, default 8] [rounds, default 3]
#
# Needs pgbench and a PostgreSQL server (PGHOST/PGPORT/PGUSER, default 127.0.0.1:5432,
# postgres). Works in a scratch database that it drops at the end. Prints the mean
# events per second of each shape over the rounds, and its ratio to the bare one (a script
# named `..._xN` handles N events per pgbench transaction). Through the bench's delay proxy:
#   BENCH_PROXY_SERVE=6543 cargo bench --bench idempotency &  PGPORT=6543 bash benches/idempotency_protocol.sh
set -euo pipefail

seconds="${1:-8}"
rounds="${2:-3}"
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
db="prost_bench_protocol_$$"
work="$(mktemp -d)"
trap 'psql -qX -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null; rm -rf "$work"' EXIT

psql -qX -d postgres -c "CREATE DATABASE $db"
repo="$(cd "$(dirname "$0")/.." && pwd)"
# The idempotency table exactly as the framework creates it: its DDL, read from the source,
# in the database's public schema.
ddl=$(sed -n '/^pub(crate) const STEP_2_IDEMPOTENCY_RECORDS: &str = r#"$/,/^"#;$/p' \
    "$repo/prost-db/src/framework.rs" | sed '1d;$d; s/{schema}\.//g')
[[ "$ddl" == *"CREATE TABLE"* ]] || { echo "idempotency DDL not found in framework.rs" >&2; exit 1; }
psql -qX -v ON_ERROR_STOP=1 -d "$db" <<SQL
CREATE TABLE products (id BIGINT PRIMARY KEY, stock BIGINT NOT NULL);
INSERT INTO products SELECT g, 1000000000 FROM generate_series(1, 1000) g;
$ddl
SQL

update='UPDATE products SET stock = stock - 1 WHERE id = :p;'
own='\set p :client_id * 62 + random(1, 62)'
claim="INSERT INTO idempotency_records (event_id, service_name, action, payload_hash)
  SELECT gen_random_uuid()::text, 'catalog', 'reserve_stock', sha256('x'::bytea)
  FROM (SELECT set_config('lock_timeout', '30000', true)) AS t
  ON CONFLICT (event_id, service_name, action) DO NOTHING;"
record="INSERT INTO idempotency_records (event_id, service_name, action, payload_hash, result)
  VALUES (gen_random_uuid()::text, 'catalog', 'reserve_stock', sha256('x'::bytea), 'null')
  ON CONFLICT (event_id, service_name, action) DO NOTHING;"

# One file per shape; each line of a shape is one round trip unless pipelined. The
# handler's BEGIN also carries `SET LOCAL lock_timeout` in the same query string, which
# pgbench's prepared mode cannot send as one message; the claim's set_config stands for it.
printf '%s\n' "$own" 'BEGIN;' "$update" 'COMMIT;' >"$work/1_bare.sql"
printf '%s\n' "$own" 'BEGIN ISOLATION LEVEL READ COMMITTED;' "$claim" \
    "$update" 'COMMIT;' >"$work/2_claim_first.sql"
printf '%s\n' "$own" 'BEGIN ISOLATION LEVEL READ COMMITTED;' "$update" \
    "$record" 'COMMIT;' >"$work/3_record_last.sql"
printf '%s\n' "$own" '\startpipeline' \
    'BEGIN ISOLATION LEVEL READ COMMITTED;' "$claim" '\endpipeline' "$update" 'COMMIT;' \
    >"$work/4_claim_first_pipelined.sql"
printf '%s\n' "$own" 'BEGIN ISOLATION LEVEL READ COMMITTED;' "$update" \
    '\startpipeline' "$record" 'COMMIT;' '\endpipeline' >"$work/5_record_last_pipelined.sql"
# Chained: the connection stays in a transaction; each event is the claim, the body and
# `COMMIT AND CHAIN` (16 events per script, the first BEGIN amortized over them).
{
    echo 'BEGIN ISOLATION LEVEL READ COMMITTED;'
    for ((i = 1; i <= 16; i++)); do
        printf '%s\n' "$own" "$claim" "$update"
        if ((i < 16)); then echo 'COMMIT AND CHAIN;'; else echo 'COMMIT;'; fi
    done
} >"$work/6_chained_x16.sql"
# Batch of 32: one claim for all keys, one UPDATE each, one COMMIT.
{
    echo 'BEGIN ISOLATION LEVEL READ COMMITTED;'
    echo "INSERT INTO idempotency_records (event_id, service_name, action, payload_hash) SELECT gen_random_uuid()::text, 'catalog', 'batch', sha256('x'::bytea) FROM generate_series(1, 32) ORDER BY 1 ON CONFLICT (event_id, service_name, action) DO NOTHING RETURNING event_id;"
    for ((i = 1; i <= 32; i++)); do printf '%s\n' "$own" "$update"; done
    echo 'COMMIT;'
} >"$work/7_batch_x32.sql"

printf '%-28s %10s %7s\n' "shape (pgbench, 16 clients)" events/s ratio
for ((round = 1; round <= rounds; round++)); do
    for script in "$work"/*.sql; do
        tps=$(pgbench -n -M prepared -c 16 -j 2 -T "$seconds" -f "$script" "$db" 2>&1 |
            sed -n 's/^tps = \([0-9.]*\).*/\1/p')
        name=$(basename "$script" .sql)
        per=1
        [[ "$name" =~ _x([0-9]+)$ ]] && per="${BASH_REMATCH[1]}"
        echo "$name $(awk -v t="$tps" -v p="$per" 'BEGIN { print t * p }')"
    done
done | awk '
    { sum[$1] += $2; n[$1]++ }
    END {
        bare = sum["1_bare"] / n["1_bare"]
        for (k in sum) printf "%-28s %10.0f %6.2fx\n", k, sum[k] / n[k], sum[k] / n[k] / bare
    }' | sort
