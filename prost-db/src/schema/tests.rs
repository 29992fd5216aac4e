//! Unit tests of the comparison with the live catalog.

use super::check::{LiveRow, compare};
use super::*;

const PRODUCTS: TableDescription = TableDescription {
    schema: "catalog",
    name: "products",
    columns: &[
        ColumnDescription {
            name: "id",
            sql_type: Some("int8"),
            nullable: Some(false),
        },
        ColumnDescription {
            name: "name",
            sql_type: Some("varchar"),
            nullable: Some(false),
        },
        ColumnDescription {
            name: "gone",
            sql_type: Some("text"),
            nullable: Some(true),
        },
        ColumnDescription {
            name: "free",
            sql_type: None,
            nullable: None,
        },
    ],
};
const MISSING: TableDescription = TableDescription {
    schema: "catalog",
    name: "nope",
    columns: &[],
};

fn row(column: &str, ty: &str, not_null: bool) -> LiveRow {
    (
        1,
        Some(column.into()),
        Some(ty.into()),
        Some(not_null),
        true,
    )
}

#[test]
fn the_derive_knows_every_marker_and_no_other() {
    let names: Vec<&str> = pg::NAMES
        .iter()
        .map(|n| n.trim_start_matches("r#"))
        .collect();
    assert_eq!(names, prost_db_core::sql_types::MARKED);
}

#[test]
fn reports_every_difference() {
    let rows = vec![
        row("id", "int4", false),
        row("name", "varchar", true),
        row("free", "whatever", true),
        (2, None, None, None, false),
    ];
    let differences = compare(&[&PRODUCTS, &MISSING], &rows);
    let text: Vec<String> = differences.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "column `id` of `catalog.products` is `int4`, the code expects `int8`",
            "column `id` of `catalog.products` is NULL, the code expects NOT NULL",
            "column `gone` of `catalog.products` does not exist",
            "table `catalog.nope` does not exist",
        ]
    );
}
