//! The `ferry` binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    ferry_connectors::cli::main()
}
