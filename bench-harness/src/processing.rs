//! `sluice-bench processing`: what a processing chain costs. The same load goes to Sluice with
//! no transforms (the plain path: raw and JSON output) and with the issue's typical chain
//! (severity filter + every built-in redaction + JSON parse of the message, JSON output), one
//! after another, in rounds; the table gives events/s, CPU ns per event and the chain's share
//! of the plain path's throughput (the median over the rounds).
//!
//! Both cores, durable (the default WAL settings: fsync 2 ms; file fdatasync). Nothing else runs during a run: no
//! tailer reads the output while it is written (the harness polls Sluice's own
//! `sluice_output_events_sent_total` every 20 ms and counts the file's lines afterwards).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::compare::{free_port, process_cpu_seconds, scrape, stop, wait_for_counter};
use crate::firehose::{self, Firehose, Format, Framing};

pub struct ProcessingArgs {
    pub sluice: PathBuf,
    pub count: u64,
    pub connections: usize,
    pub size: usize,
    pub rounds: usize,
    pub work_dir: PathBuf,
    /// Another build (before a change) whose plain path runs in the same rounds.
    pub baseline: Option<PathBuf>,
}

/// The set-ups compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// The plain path of the `baseline` build.
    BaselineRaw,
    PlainRaw,
    /// Filter + every built-in redaction, raw output (the same bytes out as the plain path).
    ChainRaw,
    PlainJson,
    Chain,
}

impl Setup {
    pub const ALL: [Setup; 5] = [
        Setup::BaselineRaw,
        Setup::PlainRaw,
        Setup::ChainRaw,
        Setup::PlainJson,
        Setup::Chain,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Setup::BaselineRaw => "plain path, raw output (the baseline build)",
            Setup::PlainRaw => "plain path, raw output",
            Setup::ChainRaw => "filter + 7 redactions, raw output",
            Setup::PlainJson => "plain path, JSON output",
            Setup::Chain => "filter + 7 redactions + parse_json, JSON output",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Setup::BaselineRaw => "baseline-raw",
            Setup::PlainRaw => "plain-raw",
            Setup::ChainRaw => "chain-raw",
            Setup::PlainJson => "plain-json",
            Setup::Chain => "chain",
        }
    }
}

/// The typical chain of issue 13 (everything passes the filter: the load is at warning).
pub const CHAIN: &str = r#"
[transforms.important]
type = "filter"
inputs = ["tcp"]
condition = 'severity >= warning'

[transforms.scrub]
type = "redact"
inputs = ["important"]
builtins = ["credit_card", "ssn", "email", "ipv4", "ipv6", "secret_values", "bearer_token"]

[transforms.fields]
type = "parse_json"
inputs = ["scrub"]
"#;

fn config(setup: Setup, dir: &Path, port: u16, api: SocketAddr) -> String {
    let without_parse = CHAIN.split("[transforms.fields]").next().unwrap_or(CHAIN);
    let (encoding, inputs, chain) = match setup {
        Setup::PlainRaw | Setup::BaselineRaw => ("raw", "", ""),
        Setup::ChainRaw => ("raw", "inputs = [\"scrub\"]\n", without_parse),
        Setup::PlainJson => ("json", "", ""),
        Setup::Chain => ("json", "inputs = [\"fields\"]\n", CHAIN),
    };
    format!(
        "data_dir = \"{data}\"\nstatus_interval = \"0s\"\n[api]\naddress = \"{api}\"\n\
         [sources.tcp]\ntype = \"syslog\"\nmode = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n{chain}\n\
         [sinks.file]\ntype = \"file\"\n{inputs}path = \"{out}\"\nencoding = \"{encoding}\"\nrotate_size = \"100GB\"\nfsync = \"always\"\n",
        data = dir.join("data").display(),
        out = dir.join("out.log").display(),
    )
}

/// One run's result.
#[derive(Clone, Debug)]
pub struct Run {
    pub setup: Setup,
    pub round: usize,
    pub events: u64,
    pub events_per_sec: f64,
    pub cpu_ns_per_event: f64,
}

pub fn run(args: &ProcessingArgs) -> Result<Vec<Run>, String> {
    let _ = std::fs::remove_dir_all(&args.work_dir);
    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        for setup in Setup::ALL {
            if setup == Setup::BaselineRaw && args.baseline.is_none() {
                continue;
            }
            let run = run_one(setup, round, args)?;
            eprintln!(
                "round {round}: {}: {:.0} events/s, {:.0} CPU ns/event",
                setup.name(),
                run.events_per_sec,
                run.cpu_ns_per_event
            );
            runs.push(run);
        }
    }
    Ok(runs)
}

fn run_one(setup: Setup, round: usize, args: &ProcessingArgs) -> Result<Run, String> {
    let dir = args.work_dir.join(format!("{}-{round}", setup.slug()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let port = free_port()?;
    let api: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let text = config(setup, &dir, port, api);
    std::fs::write(dir.join("config"), &text).map_err(|e| e.to_string())?;
    let binary = match (setup, &args.baseline) {
        (Setup::BaselineRaw, Some(b)) => b,
        _ => &args.sluice,
    };
    let mut child = start(binary, &dir)?;
    let result = measure(&mut child, port, api, args, setup, round);
    let _ = stop(&mut child, Duration::from_secs(60));
    let lines = count_lines(&dir.join("out.log"));
    let _ = std::fs::remove_dir_all(dir.join("data"));
    let _ = std::fs::remove_file(dir.join("out.log"));
    let run = result?;
    if lines != run.events {
        return Err(format!(
            "{}: {} events sent, {lines} lines written",
            setup.name(),
            run.events
        ));
    }
    Ok(run)
}

/// Starts `sluice run --config DIR/config`, its log in `DIR/server.log`.
pub(crate) fn start(sluice: &Path, dir: &Path) -> Result<Child, String> {
    let log = std::fs::File::create(dir.join("server.log")).map_err(|e| e.to_string())?;
    Command::new(sluice)
        .arg("run")
        .arg("--config")
        .arg(dir.join("config"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("start {}: {e}", sluice.display()))
}

fn measure(
    child: &mut Child,
    port: u16,
    api: SocketAddr,
    args: &ProcessingArgs,
    setup: Setup,
    round: usize,
) -> Result<Run, String> {
    wait_ready(child, port, api)?;
    let firehose = Firehose {
        address: ([127, 0, 0, 1], port).into(),
        connections: args.connections,
        count: args.count,
        size: args.size,
        framing: Framing::Newline,
        format: Format::Rfc5424JsonBody,
        ..Firehose::default()
    };
    let load = timed_load(child, api, &firehose, "sluice_output_events_sent_total")?;
    Ok(Run {
        setup,
        round,
        events: load.events,
        events_per_sec: load.events_per_sec(),
        cpu_ns_per_event: load.cpu_ns_per_event(),
    })
}

/// Waits until Sluice's source and admin API answer (the API answers before the shards
/// listen); an error if it exits or takes over 30 s.
pub(crate) fn wait_ready(child: &mut Child, port: u16, api: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() || scrape(api).is_err() {
        if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            return Err("Sluice did not start (see server.log)".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A load sent and waited for: events, wall seconds, Sluice's CPU seconds.
pub(crate) struct Load {
    pub events: u64,
    pub seconds: f64,
    pub cpu_seconds: f64,
}

impl Load {
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.seconds
    }
    pub fn cpu_ns_per_event(&self) -> f64 {
        self.cpu_seconds * 1e9 / self.events as f64
    }
}

/// Sends `firehose` and waits until Sluice's counter `metric` reaches what was sent (polled
/// every 20 ms; an error when it stalls for 60 s).
pub(crate) fn timed_load(
    child: &Child,
    api: SocketAddr,
    firehose: &Firehose,
    metric: &str,
) -> Result<Load, String> {
    let pid = child.id();
    let cpu_before = process_cpu_seconds(pid);
    let started = Instant::now();
    let total = firehose::run(firehose)?.sent;
    wait_for_counter(api, metric, total, Duration::from_millis(20))?;
    Ok(Load {
        events: total,
        seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: process_cpu_seconds(pid) - cpu_before,
    })
}

fn count_lines(path: &Path) -> u64 {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count() as u64)
}

/// A markdown list line: the median of each round's ratio (`ratio(round)`), and the rounds.
pub(crate) fn ratio_line(
    what: &str,
    rounds: usize,
    ratio: impl Fn(usize) -> Option<f64>,
) -> String {
    let r: Vec<f64> = (1..=rounds).filter_map(ratio).collect();
    let list = r
        .iter()
        .map(|x| format!("{:.0}%", x * 100.0))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "\n- {what}: **{:.0}%** (rounds: {list})",
        median(r.clone()) * 100.0
    )
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// The ratio lines under the table: (set-up, against set-up, what it says); a line whose
/// set-ups did not both run is left out.
const RATIOS: [(Setup, Setup, &str); 4] = [
    (
        Setup::PlainRaw,
        Setup::BaselineRaw,
        "the plain path (raw output) / the baseline build's",
    ),
    (
        Setup::Chain,
        Setup::PlainJson,
        "the typical chain (JSON output) / the plain path (JSON output)",
    ),
    (
        Setup::ChainRaw,
        Setup::PlainRaw,
        "filter + redactions (raw output) / the plain path (raw output)",
    ),
    (
        Setup::Chain,
        Setup::PlainRaw,
        "the typical chain (JSON output) / the plain path (raw output)",
    ),
];

/// The markdown table: per set-up that ran the median events/s and CPU ns/event, then each
/// line of [`RATIOS`] (every round's ratio and their median).
pub fn table(runs: &[Run], args: &ProcessingArgs) -> String {
    let mut t = format!(
        "{} events of {} bytes (RFC 5424, severity warning, a JSON object as the message) over {} connections, both cores, durable (WAL fsync 2 ms, the default; file fdatasync), {} rounds; medians.\n\n\
         | set-up | events/s | CPU ns/event |\n|---|---|---|\n",
        args.count, args.size, args.connections, args.rounds
    );
    // A set-up that did not run (the baseline build when none was given) gets no row.
    let ran = |s: Setup| runs.iter().any(|r| r.setup == s);
    for setup in Setup::ALL.into_iter().filter(|&s| ran(s)) {
        let of =
            |f: fn(&Run) -> f64| median(runs.iter().filter(|r| r.setup == setup).map(f).collect());
        t.push_str(&format!(
            "| {} | {:.0} | {:.0} |\n",
            setup.name(),
            of(|r| r.events_per_sec),
            of(|r| r.cpu_ns_per_event)
        ));
    }
    for (chain, base, what) in RATIOS {
        if !ran(chain) || !ran(base) {
            continue;
        }
        let rate = |s: Setup, round: usize| {
            runs.iter()
                .find(|r| r.setup == s && r.round == round)
                .map(|r| r.events_per_sec)
        };
        t.push_str(&ratio_line(what, args.rounds, |round| {
            Some(rate(chain, round)? / rate(base, round)?)
        }));
    }
    t.push('\n');
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_config_is_the_issues_chain() {
        let text = config(
            Setup::Chain,
            Path::new("/tmp/x"),
            1,
            ([127, 0, 0, 1], 2).into(),
        );
        for needle in [
            "type = \"filter\"",
            "type = \"redact\"",
            "\"bearer_token\"",
            "type = \"parse_json\"",
            "inputs = [\"fields\"]",
            "fsync = \"always\"",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        assert!(!config(
            Setup::PlainJson,
            Path::new("/tmp/x"),
            1,
            ([127, 0, 0, 1], 2).into()
        )
        .contains("transforms"));
    }

    fn runs_of(setups: &[Setup], rounds: usize) -> Vec<Run> {
        let mut runs = Vec::new();
        for round in 1..=rounds {
            for (i, &setup) in setups.iter().enumerate() {
                runs.push(Run {
                    setup,
                    round,
                    events: 1000,
                    events_per_sec: 1000.0 * (i + round) as f64,
                    cpu_ns_per_event: 500.0,
                });
            }
        }
        runs
    }

    fn args(baseline: Option<PathBuf>) -> ProcessingArgs {
        ProcessingArgs {
            sluice: "sluice".into(),
            count: 1000,
            connections: 4,
            size: 250,
            rounds: 2,
            work_dir: "/tmp/x".into(),
            baseline,
        }
    }

    #[test]
    fn without_a_baseline_build_the_table_has_no_baseline_row_or_ratio() {
        let setups = [
            Setup::PlainRaw,
            Setup::ChainRaw,
            Setup::PlainJson,
            Setup::Chain,
        ];
        let t = table(&runs_of(&setups, 2), &args(None));
        assert!(!t.contains("baseline"), "{t}");
        assert_eq!(t.matches("\n- ").count(), 3, "{t}");
        // Chain (index 3) / plain JSON (index 2): round 1 4000/3000, round 2 5000/4000; the
        // median of two is the higher.
        assert!(
            t.contains(
                "(JSON output) / the plain path (JSON output): **133%** (rounds: 133%, 125%)"
            ),
            "{t}"
        );
    }

    #[test]
    fn with_a_baseline_build_its_row_and_ratio_are_in_the_table() {
        let t = table(&runs_of(&Setup::ALL, 2), &args(Some("old-sluice".into())));
        assert!(
            t.contains("| plain path, raw output (the baseline build) | 2000 | 500 |"),
            "{t}"
        );
        assert!(t.contains("the baseline build's: **"), "{t}");
        assert_eq!(t.matches("\n- ").count(), 4, "{t}");
    }
}
