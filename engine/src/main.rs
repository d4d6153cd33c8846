//! `sluice`: the command-line entry point.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use engine::config::ConfigFiles;
use engine::{Config, EngineError};

/// Exit code for an invalid configuration (EX_CONFIG, as Vector's `validate` uses).
const EXIT_CONFIG: u8 = 78;
/// Exit code of `validate` when the config is valid but the host is not ready for it
/// (EX_UNAVAILABLE): data_dir not writable, a port not bindable, locked memory too low.
const EXIT_ENVIRONMENT: u8 = 69;
const EXIT_FAILURE: u8 = 1;

#[derive(Parser)]
#[command(
    name = "sluice",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SLUICE_COMMIT"), ")"),
    about = "Thread-per-core durable syslog aggregator"
)]
struct Cli {
    /// The format of Sluice's own log lines (on stderr).
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for journald/Vector/Loki pipelines).
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run Sluice (on the embedded default config unless --config or --config-dir is given).
    Run {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Check config files and the host: exit 0 if both are fine, 78 (with key and line) if
    /// the config is invalid, 69 if the host is not ready for it (each problem printed).
    Validate {
        /// The config files (merged, as `run --config` repeated would).
        files: Vec<PathBuf>,
        /// Also every `*.toml` in this directory.
        #[arg(long)]
        config_dir: Option<PathBuf>,
        /// Check the file only: not data_dir, ports or locked memory (e.g. before a reload,
        /// while Sluice holds the ports).
        #[arg(long)]
        no_environment: bool,
    },
    /// Print the embedded default config.
    DefaultConfig,
    /// Print the effective config: every file merged, defaults filled in, `${VAR}` taken from
    /// the environment (`api.token` is not shown).
    Config {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Ask a running Sluice to re-read its config file (POST /reload on its admin API, with
    /// the token from `api.token` or `data_dir/api.token`); `--status` shows the last
    /// reload's progress instead.
    Reload {
        /// The config the running Sluice was started with (default: the embedded default).
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        status: bool,
    },
    /// Check this host for Sluice: CPUs, NUMA, io_uring, limits, network sysctls, the disk
    /// under data_dir (a few seconds of writes); prints a verdict per item, a recommended config
    /// and sysctl lines. Exit 0 unless an item FAILs (69).
    Tune {
        /// Take data_dir from this config (default: the embedded default's).
        #[command(flatten)]
        config: ConfigArgs,
        /// Measure this directory's disk instead of the config's data_dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Seconds per disk measurement (two measurements).
        #[arg(long, default_value_t = 2.0)]
        probe_seconds: f64,
        /// The ingest → durable latency the recommended fsync interval aims for.
        #[arg(long, default_value = "10ms")]
        target_latency: humantime::Duration,
    },
    /// Look into a data directory's write-ahead logs (read-only).
    #[command(subcommand)]
    Wal(WalCommand),
    /// The outputs' dead-letter queues: events a destination rejected for good, with its
    /// reason (`data_dir/dlq/SINK`).
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Print the metrics reference (Markdown; `docs/metrics.md` is this output).
    MetricsReference,
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

/// Where the config comes from: files (repeatable, merged) and a directory.
#[derive(clap::Args, Clone, Default)]
struct ConfigArgs {
    /// A config file; repeat to merge several (a key or a name defined twice is an error).
    #[arg(long, short)]
    config: Vec<PathBuf>,
    /// Every `*.toml` in this directory too, in name order.
    #[arg(long)]
    config_dir: Option<PathBuf>,
}

impl ConfigArgs {
    fn files(&self) -> ConfigFiles {
        ConfigFiles {
            files: self.config.clone(),
            dir: self.config_dir.clone(),
        }
    }
}

#[derive(Subcommand)]
enum WalCommand {
    /// Per shard: segments, sizes, record counts, damage, cursors and lag per output.
    Inspect { data_dir: PathBuf },
    /// Check every record and cursor: exit 0 if clean, 65 if damaged (each place printed).
    Verify { data_dir: PathBuf },
    /// Print one shard's records, oldest first (or from record id ID, as `inspect` shows).
    Dump {
        data_dir: PathBuf,
        #[arg(long)]
        shard: usize,
        #[arg(long, value_name = "ID")]
        from: Option<u64>,
        #[arg(long, value_enum, default_value = "json")]
        encoding: DumpEncoding,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Per queue: events, bytes, files, oldest and newest.
    List(DlqArgs),
    /// Every dead-lettered event as a JSON line, with the destination's reason.
    Show(DlqArgs),
    /// Send the events again to their output as the config now describes it; confirmed ones
    /// leave the queue, rejected ones stay with the new reason.
    Replay(DlqArgs),
    /// Delete the queued events.
    Drop(DlqArgs),
}

#[derive(clap::Args)]
struct DlqArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Only this sink's queue (default: every queue under data_dir).
    #[arg(long)]
    sink: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DumpEncoding {
    Json,
    Raw,
}

/// Exit code of `wal verify` when it found damage (EX_DATAERR).
const EXIT_DAMAGED: u8 = 65;

fn wal_command(command: WalCommand) -> Result<ExitCode, engine::tools::ToolError> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let code = match command {
        WalCommand::Inspect { data_dir } => {
            engine::tools::inspect(&data_dir, &mut out)?;
            ExitCode::SUCCESS
        }
        WalCommand::Verify { data_dir } => match engine::tools::verify(&data_dir, &mut out)? {
            engine::tools::Verdict::Clean => ExitCode::SUCCESS,
            engine::tools::Verdict::Damaged => ExitCode::from(EXIT_DAMAGED),
        },
        WalCommand::Dump {
            data_dir,
            shard,
            from,
            encoding,
        } => {
            let encoding = match encoding {
                DumpEncoding::Json => engine::config::Encoding::Json,
                DumpEncoding::Raw => engine::config::Encoding::Raw,
            };
            engine::tools::dump(&data_dir, shard, from, encoding, &mut out)?;
            ExitCode::SUCCESS
        }
    };
    use std::io::Write as _;
    out.flush().map_err(engine::tools::ToolError::Write)?;
    Ok(code)
}

fn dlq_command(command: DlqCommand) -> ExitCode {
    use engine::tools::dlq;
    let (DlqCommand::List(args)
    | DlqCommand::Show(args)
    | DlqCommand::Replay(args)
    | DlqCommand::Drop(args)) = &command;
    let config = match load(&args.config.files()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let sink = args.sink.as_deref();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = match command {
        DlqCommand::List(_) => dlq::list(&config, sink, &mut out),
        DlqCommand::Show(_) => dlq::show(&config, sink, &mut out),
        DlqCommand::Replay(_) => dlq::replay(&config, sink).map(|r| {
            let _ = writeln!(
                out,
                "replayed: {} delivered, {} rejected again (still queued)",
                r.delivered, r.rejected_again
            );
        }),
        DlqCommand::Drop(_) => dlq::drop_letters(&config, sink).map(|n| {
            let _ = writeln!(out, "dropped {n} events");
        }),
    };
    use std::io::Write as _;
    let _ = out.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e.to_string());
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Sluice's own logs: stderr, `RUST_LOG` filter (default `info`), text or JSON lines.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let _ = LOG_FORMAT.set(format);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Run { config } => run(&config),
        Command::Validate {
            files,
            config_dir,
            no_environment,
        } => validate(
            ConfigFiles {
                files,
                dir: config_dir,
            },
            no_environment,
        ),
        Command::Config { config } => match load(&config.files()) {
            Ok(config) => {
                print!("{}", engine::config::show::render(&config));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Tune {
            config,
            data_dir,
            probe_seconds,
            target_latency,
        } => tune(&config, data_dir, probe_seconds, *target_latency),
        Command::Reload { config, status } => reload_command(&config.files(), status),
        Command::DefaultConfig => {
            print!("{}", engine::config::DEFAULT_CONFIG);
            ExitCode::SUCCESS
        }
        Command::Wal(command) => wal_command(command).unwrap_or_else(|e| {
            report(&e.to_string());
            ExitCode::from(EXIT_FAILURE)
        }),
        Command::Dlq(command) => dlq_command(command),
        Command::MetricsReference => {
            print!("{}", engine::metrics::prometheus::reference());
            ExitCode::SUCCESS
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "sluice", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => man_page(),
    }
}

/// `sluice run`.
fn run(config: &ConfigArgs) -> ExitCode {
    let config = match load(&config.files()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match engine::runtime::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// `sluice tune`: the host report for the config's data_dir (or `data_dir`).
fn tune(
    config: &ConfigArgs,
    data_dir: Option<PathBuf>,
    probe_seconds: f64,
    target_latency: std::time::Duration,
) -> ExitCode {
    let config = match load(&config.files()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let dir = data_dir.unwrap_or(config.data_dir);
    let probe = std::time::Duration::from_secs_f64(probe_seconds.clamp(0.01, 60.0));
    let report = tuning::report::build(&dir, probe, target_latency);
    print!("{}", report.render());
    match report.worst() {
        tuning::report::Verdict::Fail => ExitCode::from(EXIT_ENVIRONMENT),
        _ => ExitCode::SUCCESS,
    }
}

fn man_page() -> ExitCode {
    use clap::CommandFactory;
    let man = clap_mangen::Man::new(Cli::command());
    match man.render(&mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e.to_string());
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `sluice reload`: POST /reload (or GET it with `--status`) on the running Sluice's API.
fn reload_command(files: &ConfigFiles, status: bool) -> ExitCode {
    let config = match load(files) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let method = if status { "GET" } else { "POST" };
    match engine::admin::client::request(&config, method, "/reload") {
        Ok((200 | 202, body)) => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Ok((code, body)) => {
            print!("{body}");
            report(&format!("the API answered {code}"));
            ExitCode::from(EXIT_FAILURE)
        }
        Err(e) => {
            report(&e.to_string());
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The config from `files` (the embedded default when none); an error is printed and becomes
/// the exit code.
fn load(files: &ConfigFiles) -> Result<Config, ExitCode> {
    files.load().map_err(|e| fail(&EngineError::Config(e)))
}

/// `sluice validate`: the files, then (unless `skip_environment`) the host.
fn validate(files: ConfigFiles, skip_environment: bool) -> ExitCode {
    if files.is_embedded() {
        report("validate: name a config file (or --config-dir)");
        return ExitCode::from(EXIT_FAILURE);
    }
    let config = match load(&files) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for warning in &config.warnings {
        report(&format!("warning: {warning}"));
    }
    let name = match files.single_file() {
        Some(file) => file.display().to_string(),
        None => "the config".to_string(),
    };
    validate_environment(&name, &config, skip_environment)
}

fn validate_environment(file: &str, config: &Config, skip: bool) -> ExitCode {
    let problems = if skip {
        Vec::new()
    } else {
        engine::tools::preflight::check_environment(config)
    };
    if problems.is_empty() {
        println!("{file}: valid");
        return ExitCode::SUCCESS;
    }
    for p in &problems {
        report(&format!("{file}: {}: {}", p.check, p.message));
    }
    ExitCode::from(EXIT_ENVIRONMENT)
}

/// The log format chosen on the command line (errors are written in it too).
static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Reports a fatal error: a plain `sluice: …` line, or a JSON log line with `--log-format json`.
fn report(message: &str) {
    match LOG_FORMAT.get() {
        Some(LogFormat::Json) => tracing::error!("{message}"),
        _ => eprintln!("sluice: {message}"),
    }
}

fn fail(error: &EngineError) -> ExitCode {
    report(&error.to_string());
    match error {
        EngineError::Config(_) => ExitCode::from(EXIT_CONFIG),
        _ => ExitCode::from(EXIT_FAILURE),
    }
}
