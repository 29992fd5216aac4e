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
# Each is shown as wall-clock time and as CPU time (user + system, of cargo and rustc; of
# the thread, for the catalog). On a machine shared with other builds the wall-clock times
# vary several-fold between runs; the CPU times are the steadier comparison.
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
        // The thread's time on a CPU, from the scheduler (Linux), in ms.
        let cpu = || -> f64 {
            std::fs::read_to_string("/proc/thread-self/schedstat")
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
                .map_or(f64::NAN, |ns| ns / 1e6)
        };
        let mut wall: Vec<f64> = Vec::new();
        let mut on_cpu: Vec<f64> = Vec::new();
        for _ in 0..runs {
            let (start, start_cpu) = (Instant::now(), cpu());
            let catalog = Catalog::from_root(root).unwrap();
            assert!(catalog.tables().count() > 75);
            wall.push(start.elapsed().as_secs_f64() * 1000.0);
            on_cpu.push(cpu() - start_cpu);
        }
        wall.sort_by(f64::total_cmp);
        on_cpu.sort_by(f64::total_cmp);
        println!("{:.1} {:.1}", wall[runs / 2], on_cpu[runs / 2]);
        return;
    }
    let (dir, count): (&str, usize) = (&args[3], args[4].parse().unwrap());
    let catalog = Catalog::from_root(root).unwrap();
    // Tables the catalog is sure of first; then uncertain ones (their derives warn).
    let mut tables: Vec<_> = catalog.tables().filter(|t| !t.columns.is_empty()).collect();
    tables.sort_by_key(|t| !t.uncertain.is_empty());
    tables.truncate(count);
    assert_eq!(tables.len(), count, "not enough tables in the corpus");
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
    : > "$work/$name/src/lib.rs" # written by catalog_time below
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

# "wall cpu" of an incremental build of crate $1, in seconds.
measure() {
    touch "$work/$1/src/lib.rs"
    local TIMEFORMAT='%R %U %S' times
    times=$({ time cargo build --offline -q -p "$1" 2>/dev/null; } 2>&1)
    echo "$times" | awk '{printf "%.3f %.3f\n", $1, $2 + $3}'
}

declare -A wall cpu
for _ in $(seq 1 "$reps"); do
    read -r w c < <("$timer" "$work/corpus" 5)
    wall[catalog]+=" $w"; cpu[catalog]+=" $c"
    for crate in with_derive one_derive without_derive; do
        read -r w c < <(measure "$crate")
        wall[$crate]+=" $w"; cpu[$crate]+=" $c"
    done
done

median() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
row() { printf '  %-38s %10s %10s    (wall runs:%s)\n' "$1" "$(median "${wall[$2]}")" "$(median "${cpu[$2]}")" "${wall[$2]}"; }
echo "corpus: $files migration files, $kbytes KB; $reps runs each, medians"
printf '  %-38s %10s %10s\n' "" "wall" "cpu"
row "catalog build, ms (proc-macro profile)" catalog
row "75 plain structs, s" without_derive
row "... 1 of them derived, s" one_derive
row "... all 75 derived, s" with_derive
for kind in wall cpu; do
    declare -n times=$kind
    with=$(median "${times[with_derive]}"); one=$(median "${times[one_derive]}"); without=$(median "${times[without_derive]}")
    echo "  $kind: added by 75 derives $(echo "$with - $without" | bc) s (target <= 0.3 s), ratio $(echo "scale=2; $with / $without" | bc), first derive (catalog + includes) $(echo "$one - $without" | bc) s, each further struct $(echo "scale=1; ($with - $one) * 1000 / 74" | bc) ms"
done
echo "  targets: catalog <= 100 ms; 75 derives <= 0.3 s over plain structs"
