#!/usr/bin/env bash
# Build time added by #[derive(Schema)]: 50 derived structs checked against 100 migration
# files, against the same crate with the same structs and no derives. Both crates live in
# one scratch workspace under target/ and share the repository's target directory (so the
# dependencies are already built); each measurement is an incremental `cargo build` after
# touching src/lib.rs, alternating the crates. A third crate derives only 1 of the 50
# structs, to separate the once-per-crate catalog parse from the per-struct cost. Prints the
# medians and the ratio.
#
#   bash benches/schema_build.sh [repetitions, default 5]
set -euo pipefail

reps="${1:-5}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$repo/target/schema-bench"
export CARGO_TARGET_DIR="$repo/target"
# The repository's .cargo/config.toml points the derive at migrations/shop; the variable
# from the environment wins, relative to each crate's manifest directory.
export PROST_DB_MIGRATIONS=migrations
rm -rf "$work"
mkdir -p "$work"

cat > "$work/Cargo.toml" <<TOML
[workspace]
members = ["with_derive", "one_derive", "without_derive"]
resolver = "3"
TOML
cp "$repo/Cargo.lock" "$work/Cargo.lock"

# 100 migrations over 4 schemas: 50 CREATE TABLE, 50 ALTER TABLE ... ADD COLUMN.
make_migrations() {
    local root="$1"
    for i in $(seq 1 50); do
        local schema="s$(( i % 4 ))"
        mkdir -p "$root/$schema"
        printf -v v1 '%04d' "$i"
        printf -v v2 '%04d' "$(( i + 100 ))"
        cat > "$root/$schema/${v1}_create_t$i.up.sql" <<SQL
CREATE TABLE t$i (
    id BIGSERIAL PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    note TEXT,
    price NUMERIC(10, 2) NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_t${i}_name ON t$i (name);
SQL
        cat > "$root/$schema/${v2}_extend_t$i.up.sql" <<SQL
ALTER TABLE t$i ADD COLUMN payload JSONB NOT NULL DEFAULT '{}';
ALTER TABLE t$i ALTER COLUMN note SET NOT NULL;
SQL
    done
}

make_crate() {
    local name="$1" derive="$2"
    mkdir -p "$work/$name/src"
    cat > "$work/$name/Cargo.toml" <<TOML
[package]
name = "$name"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
prost-db = { path = "$repo/prost-db" }
chrono = { version = "0.4", default-features = false }
rust_decimal = { version = "1", default-features = false }
serde_json = "1"
TOML
    make_migrations "$work/$name/migrations"
    {
        echo "#![allow(dead_code)]"
        for i in $(seq 1 50); do
            if [ "$derive" = yes ] || { [ "$derive" = one ] && [ "$i" = 1 ]; }; then
                echo "#[derive(prost_db::Schema)]"
                echo "#[schema(schema = \"s$(( i % 4 ))\", table = \"t$i\")]"
            fi
            cat <<RS
pub struct T$i {
    pub id: i64,
    pub name: String,
    pub note: String,
    pub price: rust_decimal::Decimal,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub payload: serde_json::Value,
}
RS
        done
    } > "$work/$name/src/lib.rs"
}

make_crate with_derive yes
make_crate one_derive one
make_crate without_derive no

cd "$work"
echo "warming up (first build of both crates)..." >&2
cargo build --offline -q -p with_derive -p one_derive -p without_derive

now() { date +%s.%N; }
measure() {
    touch "$work/$1/src/lib.rs"
    local start end
    start=$(now)
    cargo build --offline -q -p "$1"
    end=$(now)
    echo "$end - $start" | bc
}

with=()
one=()
without=()
for _ in $(seq 1 "$reps"); do
    with+=("$(measure with_derive)")
    one+=("$(measure one_derive)")
    without+=("$(measure without_derive)")
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m_with=$(median "${with[@]}")
m_one=$(median "${one[@]}")
m_without=$(median "${without[@]}")
echo "incremental build, 50 structs, 100 migration files, $reps runs each (median):"
echo "  without derives: ${m_without}s   (runs: ${without[*]})"
echo "  one derive:      ${m_one}s   (runs: ${one[*]})   (the catalog parse + one struct)"
echo "  50 derives:      ${m_with}s   (runs: ${with[*]})"
echo "  added by the derives: $(echo "$m_with - $m_without" | bc)s, ratio $(echo "scale=2; $m_with / $m_without" | bc)"
