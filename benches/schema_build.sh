#!/usr/bin/env bash
# What #[derive(Schema)] costs, on the fidelity corpus (tests/fidelity: 325 migration files,
# about 460 KB, four schemas), printed side by side:
#
#   1. building the catalog of the corpus (load + split + classify + parse + apply), timed
#      in a binary built like a proc macro's dependencies are (opt-level 0, no debuginfo:
#      cargo's build-override defaults), median of the runs;
#   2. the incremental build (touch src/lib.rs, cargo build) of a crate with 75 structs
#      mapped to 75 tables of the corpus: all derived, one derived (the catalog's fixed
#      cost), none derived; the crates are built alternately, median of the runs.
#
# The scratch workspace lives under target/ and shares the repository's target directory,
# so the dependencies are built once.
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

echo "writing the corpus..." >&2
rustc --edition 2024 -O -o "$work/write-corpus" "$repo/tests/fidelity/corpus.rs" 2>/dev/null
"$work/write-corpus" "$work/corpus"
files=$(find "$work/corpus" -name '*.up.sql' | wc -l)
kbytes=$(( $(cat "$work/corpus"/*/*.up.sql | wc -c) / 1024 ))

cat > "$work/Cargo.toml" <<TOML
[workspace]
members = ["catalog_time", "with_derive", "one_derive", "without_derive"]
resolver = "3"

# How cargo builds a proc macro's dependencies by default (build-override).
[profile.macro]
inherits = "dev"
opt-level = 0
debug = false
codegen-units = 256
incremental = false
TOML
cp "$repo/Cargo.lock" "$work/Cargo.lock"

mkdir -p "$work/catalog_time/src"
cat > "$work/catalog_time/Cargo.toml" <<TOML
[package]
name = "catalog_time"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
prost-db-core = { path = "$repo/prost-db-core", features = ["catalog"] }
TOML
cat > "$work/catalog_time/src/main.rs" <<'RS'
//! `catalog_time <root> <runs>`: prints the median time to build the catalog of <root>.
//! `catalog_time <root> structs <dir> <count>`: writes the lib.rs of the build crates.
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use prost_db_core::catalog::{Catalog, SqlType, TypeKind};

fn rust_type(ty: &SqlType) -> Option<String> {
    let ty = ty.storage();
    Some(match &ty.kind {
        TypeKind::Enum { .. } => "String".to_owned(),
        TypeKind::Array { element } => format!("Vec<{}>", rust_type(element)?),
        TypeKind::Base => match ty.name.as_str() {
            "int2" => "i16", "int4" => "i32", "int8" => "i64", "float4" => "f32", "float8" => "f64",
            "bool" => "bool", "text" | "varchar" | "bpchar" | "citext" => "String",
            "numeric" => "rust_decimal::Decimal", "uuid" => "uuid::Uuid",
            "date" => "chrono::NaiveDate", "time" => "chrono::NaiveTime",
            "timestamp" => "chrono::NaiveDateTime", "timestamptz" => "chrono::DateTime<chrono::Utc>",
            "json" | "jsonb" => "serde_json::Value", "bytea" => "Vec<u8>",
            "interval" => "prost_db::sqlx::postgres::types::PgInterval",
            _ => return None,
        }
        .to_owned(),
        _ => return None,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let root = Path::new(&args[1]);
    if args[2] != "structs" {
        let runs: usize = args[2].parse().unwrap();
        let mut times: Vec<f64> = (0..runs)
            .map(|_| {
                let start = Instant::now();
                let catalog = Catalog::from_root(root).unwrap();
                assert!(catalog.tables().count() > 75);
                start.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!("{:.1}", times[times.len() / 2]);
        return;
    }
    let (dir, count): (&str, usize) = (&args[3], args[4].parse().unwrap());
    let catalog = Catalog::from_root(root).unwrap();
    let tables: Vec<_> = catalog
        .tables()
        .filter(|t| t.uncertain.is_empty() && !t.columns.is_empty())
        .take(count)
        .collect();
    assert_eq!(tables.len(), count, "not enough certain tables in the corpus");
    for (crate_name, derived) in [("with_derive", count), ("one_derive", 1), ("without_derive", 0)] {
        let mut out = String::from("#![allow(dead_code, non_snake_case)]\n");
        for (i, table) in tables.iter().enumerate() {
            if i < derived {
                let _ = writeln!(out, "#[derive(prost_db::Schema)]\n#[schema(schema = \"{}\", table = \"{}\")]", table.schema, table.name);
            }
            let _ = writeln!(out, "pub struct T{i} {{");
            for column in &table.columns {
                let Some(ty) = rust_type(&column.ty) else { continue };
                let ty = if column.nullable { format!("Option<{ty}>") } else { ty };
                // Column names are the field names (the corpus has no keyword as a name).
                let _ = writeln!(out, "    pub {}: {ty},", column.name);
            }
            let _ = writeln!(out, "}}");
        }
        std::fs::write(format!("{dir}/{crate_name}/src/lib.rs"), out).unwrap();
    }
}
RS

make_crate() {
    local name="$1"
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
uuid = "1"
TOML
    ln -s "$work/corpus" "$work/$name/migrations"
}
make_crate with_derive
make_crate one_derive
make_crate without_derive

cd "$work"
echo "building the catalog timer (proc-macro profile)..." >&2
cargo build --offline -q --profile macro -p catalog_time
timer="$CARGO_TARGET_DIR/macro/catalog_time"
"$timer" "$work/corpus" structs "$work" 75
echo "warming up (first build of the three crates)..." >&2
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

catalog=()
with=()
one=()
without=()
for _ in $(seq 1 "$reps"); do
    catalog+=("$("$timer" "$work/corpus" 5)")
    with+=("$(measure with_derive)")
    one+=("$(measure one_derive)")
    without+=("$(measure without_derive)")
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m_catalog=$(median "${catalog[@]}")
m_with=$(median "${with[@]}")
m_one=$(median "${one[@]}")
m_without=$(median "${without[@]}")
added=$(echo "$m_with - $m_without" | bc)
echo "corpus: $files migration files, $kbytes KB; $reps runs each (median)"
echo "  catalog build (proc-macro profile):  ${m_catalog} ms    (runs: ${catalog[*]})   target <= 100 ms"
echo "  incremental build, 75 plain structs: ${m_without} s    (runs: ${without[*]})"
echo "  ... 1 of them derived:               ${m_one} s    (runs: ${one[*]})"
echo "  ... all 75 derived:                  ${m_with} s    (runs: ${with[*]})"
echo "  added by 75 derives: ${added} s (target <= 0.3 s), ratio $(echo "scale=2; $m_with / $m_without" | bc); per further struct: $(echo "scale=1; ($m_with - $m_one) * 1000 / 74" | bc) ms"
