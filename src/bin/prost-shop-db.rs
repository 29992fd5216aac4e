//! The shop's `prost-db` command line: the same CLI, built as a binary of this package so
//! integration tests can run it as separate processes.

fn main() -> std::process::ExitCode {
    prost_db::migrate::cli::main()
}
