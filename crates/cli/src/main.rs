//! The `ganger` binary: every subcommand.

mod load;
mod output;
mod run;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes shared by every command.
pub(crate) mod exit {
    pub const SUCCESS: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const INVALID: u8 = 2;
    pub const CANCELLED: u8 = 130;
}

#[derive(Parser)]
#[command(
    name = "ganger",
    version,
    about = "A durable job scheduler and DAG workflow engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job from a file now, on this machine, with no server.
    Run(run::RunArgs),
    /// Check job files and report every problem with file:line:col.
    Validate(validate::ValidateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::main(args),
        Command::Validate(args) => validate::main(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::INVALID)
        }
    }
}
