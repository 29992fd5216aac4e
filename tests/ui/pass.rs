//! The cases that must compile, one module per file of `handler/pass` and `schema/pass`:
//! one test binary for all of them, so each case costs a module, not a link. Each file is
//! also a complete program (its `main` is never called here); `every_pass_case_is_compiled`
//! in `ui.rs` checks that this list names every file.

#[path = "handler/pass/generic-handler.rs"]
mod handler_generic_handler;
#[path = "handler/pass/key-and-fingerprint.rs"]
mod handler_key_and_fingerprint;
#[path = "handler/pass/method-in-impl.rs"]
mod handler_method_in_impl;
#[path = "handler/pass/renamed-crate.rs"]
mod handler_renamed_crate;
#[path = "handler/pass/shadowed-prelude.rs"]
mod handler_shadowed_prelude;
#[path = "schema/pass/custom-type.rs"]
mod schema_custom_type;
#[path = "schema/pass/dotted-table.rs"]
mod schema_dotted_table;
#[path = "schema/pass/enum-checked.rs"]
mod schema_enum_checked;
#[path = "schema/pass/lifetime-generic.rs"]
mod schema_lifetime_generic;
#[path = "schema/pass/renamed-column.rs"]
mod schema_renamed_column;
#[path = "schema/pass/shadowed-prelude.rs"]
mod schema_shadowed_prelude;
#[path = "schema/pass/skipped-field.rs"]
mod schema_skipped_field;
#[path = "schema/pass/sqlx-rename-all.rs"]
mod schema_sqlx_rename_all;
#[path = "schema/pass/unchecked-struct.rs"]
mod schema_unchecked_struct;
#[path = "schema/pass/unchecked-type.rs"]
mod schema_unchecked_type;

fn main() {}
