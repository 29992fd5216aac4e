//! The `prost-db` command line; see [`prost_db::migrate::cli`].

fn main() -> std::process::ExitCode {
    prost_db::migrate::cli::main()
}
