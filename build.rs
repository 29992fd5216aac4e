//! Rebuild the shop when a migration is added, edited or removed: `#[derive(Schema)]`
//! checks structs against the migrations, and rustc cannot see new files by itself.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
