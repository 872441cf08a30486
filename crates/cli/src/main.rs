//! The `ganger` binary: every subcommand.

mod agent_cmd;
mod client;
mod config;
mod load;
mod output;
mod run;
mod server_cmd;
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
    #[command(flatten)]
    Client(client::ClientCommand),
    /// Serve the HTTP API and run jobs (by default with an in-process agent).
    Server(server_cmd::ServerArgs),
    /// Manage API tokens, on the server's machine.
    Token(server_cmd::TokenArgs),
    /// Run tasks for a server on this machine (connects out over HTTP).
    Agent(agent_cmd::AgentArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::main(args),
        Command::Validate(args) => validate::main(&args),
        Command::Client(command) => client::main(command),
        Command::Server(args) => server_cmd::main(args),
        Command::Token(args) => server_cmd::token_main(args),
        Command::Agent(args) => agent_cmd::main(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::INVALID)
        }
    }
}
