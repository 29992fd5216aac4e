//! Unit tests of machines, table names and the statements built from them.

use super::sql::Statements;
use super::*;

static ORDER: SagaMachine = SagaMachine {
    saga_type: "order",
    initial: "reserving",
    transitions: &[
        ("reserving", "confirmed"),
        ("reserving", "compensating"),
        ("compensating", "cancelled"),
    ],
    terminal: &["confirmed", "cancelled"],
};

#[test]
fn the_order_machine_is_valid_and_lists_its_statuses() {
    ORDER.validate().unwrap();
    assert_eq!(
        ORDER.statuses(),
        ["reserving", "confirmed", "compensating", "cancelled"]
    );
    assert!(ORDER.allows("compensating", "compensating"));
    assert!(!ORDER.allows("cancelled", "cancelled"));
    assert!(!ORDER.allows("compensating", "confirmed"));
    assert!(!ORDER.allows("nowhere", "nowhere"));
}

#[test]
fn machines_that_cannot_finish_are_refused() {
    let leaves_terminal = SagaMachine {
        saga_type: "t",
        initial: "a",
        transitions: &[("a", "b"), ("b", "a")],
        terminal: &["b"],
    };
    let e = leaves_terminal.validate().unwrap_err().to_string();
    assert!(e.contains("leaves a terminal status"), "{e}");

    let starts_terminal = SagaMachine {
        saga_type: "t",
        initial: "b",
        transitions: &[],
        terminal: &["b"],
    };
    let e = starts_terminal.validate().unwrap_err().to_string();
    assert!(e.contains("initial status \"b\" is terminal"), "{e}");

    let no_end = SagaMachine {
        saga_type: "t",
        initial: "a",
        transitions: &[("a", "b")],
        terminal: &[],
    };
    assert!(no_end.validate().is_err());

    // A loop with no way out.
    let cycle = SagaMachine {
        saga_type: "t",
        initial: "a",
        transitions: &[("a", "done"), ("a", "b"), ("b", "c"), ("c", "b")],
        terminal: &["done"],
    };
    let e = cycle.validate().unwrap_err().to_string();
    assert!(e.contains("[\"b\", \"c\"]"), "{e}");
}

#[test]
fn statements_quote_every_name_and_copy_links() {
    let tables = SagaTables::new("orders").unwrap().link("order_id").unwrap();
    let sql = Statements::new(&tables);
    assert!(
        sql.insert_linked
            .contains("INSERT INTO \"orders\".\"saga_states\"")
    );
    assert!(sql.insert_linked.contains(", r.\"order_id\""));
    assert!(sql.register.contains(", s.\"order_id\""));
    assert!(
        sql.update
            .contains("WHERE correlation_id = $1 AND version = $2")
    );
    assert!(sql.lock_expired.contains("FOR UPDATE SKIP LOCKED"));
    assert!(!sql.insert.contains("order_id"));
}

#[test]
fn bad_names_are_refused_before_any_sql() {
    assert!(SagaTables::new("orders\"; DROP SCHEMA x; --").is_err());
    assert!(SagaTables::new("orders").unwrap().link("order id").is_err());
}

#[test]
fn compensation_statuses_round_trip() {
    for status in [
        CompensationStatus::Pending,
        CompensationStatus::Requested,
        CompensationStatus::Completed,
        CompensationStatus::Discarded,
    ] {
        assert_eq!(status.as_str().parse::<CompensationStatus>(), Ok(status));
    }
    assert!("done".parse::<CompensationStatus>().is_err());
}
