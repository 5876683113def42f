//! The `callgate` command line.

use std::process::ExitCode;

/// Entry point of the `callgate` binary.
pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
