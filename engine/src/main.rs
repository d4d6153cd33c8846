//! `sluice`: the command-line entry point.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use engine::{Config, EngineError};

/// Exit code for an invalid configuration (EX_CONFIG, as Vector's `validate` uses).
const EXIT_CONFIG: u8 = 78;
const EXIT_FAILURE: u8 = 1;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Thread-per-core durable syslog aggregator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run Sluice (on the embedded default config unless --config is given).
    Run {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a config file: exit 0 if valid, 78 with the key and line if not.
    Validate { file: PathBuf },
    /// Print the embedded default config.
    DefaultConfig,
}

fn main() -> ExitCode {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            let loaded = match &config {
                Some(path) => Config::load(path),
                None => Config::embedded_default(),
            };
            let config = match loaded {
                Ok(c) => c,
                Err(e) => return fail(&EngineError::Config(e)),
            };
            match engine::runtime::run(&config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Command::Validate { file } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: valid", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(&EngineError::Config(e)),
        },
        Command::DefaultConfig => {
            print!("{}", engine::config::DEFAULT_CONFIG);
            ExitCode::SUCCESS
        }
    }
}

fn fail(error: &EngineError) -> ExitCode {
    eprintln!("sluice: {error}");
    match error {
        EngineError::Config(_) => ExitCode::from(EXIT_CONFIG),
        _ => ExitCode::from(EXIT_FAILURE),
    }
}
