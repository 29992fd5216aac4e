#![deny(warnings)]
#![allow(dead_code)]

// Generated code must use absolute paths only.
struct Result;
struct Ok;
struct Err;
struct Option;
struct Some;
struct None;
struct Box;
struct Vec;
struct String;
mod core {}
mod std {}
mod prost_db {}

#[derive(::prost_db::Schema)]
#[schema(schema = "catalog", table = "categories")]
struct Category {
    id: i64,
    name: ::std::string::String,
    description: ::core::option::Option<::std::string::String>,
}

fn main() {}
