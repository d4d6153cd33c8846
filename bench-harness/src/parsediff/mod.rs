//! `sluice-bench parse-diff`: Sluice's parser next to rsyslog's and syslog-ng's, field by field.
//!
//! Every corpus line goes once, as an octet-counted frame on one TCP connection on 127.0.0.1,
//! to each system in turn, each line followed by a sentinel message; each system writes what it
//! parsed as one JSON object per line (Sluice its JSON encoding, the peers a template naming the
//! same fields), so outputs pair with lines even where a system drops or splits one. Then, per
//! line and field: where rsyslog and syslog-ng agree, does Sluice?
//!
//! The peers run with `TZ=UTC` (a BSD timestamp is local time to them, UTC to Sluice), no DNS,
//! and rsyslog without control-character escaping; see [`fields`] for the normalization.

pub mod corpus;
pub mod fields;
pub mod report;

use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::compare::{free_port, stop};
use crate::peers::{self, System};
use corpus::Entry;
use fields::{Context, Fields};

pub struct DiffArgs {
    pub corpus: Vec<PathBuf>,
    pub sluice: PathBuf,
    pub work_dir: PathBuf,
    pub peers_dir: PathBuf,
    /// How long to wait for a system's output of the whole corpus.
    pub timeout: Duration,
}

/// One system's reading of every line (`None`: nothing came out for that line).
pub type Readings = Vec<Option<Fields>>;

/// Runs the corpus through the three systems.
pub fn run(args: &DiffArgs) -> Result<(Vec<Entry>, [Readings; 3]), String> {
    let entries = corpus::load(&args.corpus)?;
    let _ = std::fs::remove_dir_all(&args.work_dir);
    let mut readings = Vec::new();
    for system in [System::Sluice, System::Rsyslog, System::SyslogNg] {
        eprintln!(
            "parse-diff: {} lines through {}",
            entries.len(),
            system.name()
        );
        readings.push(run_system(system, &entries, args)?);
    }
    let readings: [Readings; 3] = readings.try_into().map_err(|_| "three systems")?;
    Ok((entries, readings))
}

fn run_system(system: System, entries: &[Entry], args: &DiffArgs) -> Result<Readings, String> {
    let dir = args.work_dir.join(system.slug());
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let port = free_port()?;
    let out = dir.join("out.json");
    let config = dir.join("config");
    let text = match system {
        System::Sluice => sluice_config(&dir, port, &out)?,
        System::Rsyslog => rsyslog_config(&dir, port, &out),
        System::SyslogNg => syslog_ng_config(port, &out),
    };
    std::fs::write(&config, text).map_err(|e| format!("writing {}: {e}", config.display()))?;
    let mut command = peers::launch(system, &config, &dir, &args.sluice, &args.peers_dir)?;
    command
        .env("TZ", "UTC")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).map_err(|e| e.to_string())?);
    let child = command
        .spawn()
        .map_err(|e| format!("starting {}: {e}", system.name()))?;
    let _server = Server(child); // Stopped when this returns, whatever `feed` did.
    let cx = Context {
        run_started_us: now_us(),
        sender_address: "127.0.0.1",
    };
    feed(system, entries, port, &out, &cx, args.timeout)
}

/// The frame sent after every corpus line: a plain RFC 5424 message every system reads the same
/// way, so the outputs between two sentinels are the previous line's (none if it was dropped),
/// and a system that emits a frame only once the next one arrives still emits it.
fn sentinel(n: usize) -> Vec<u8> {
    let msg = format!("<13>1 2000-01-01T00:00:00Z {SENTINEL_HOST} {SENTINEL_APP} - - - {n}");
    format!("{} {msg}", msg.len()).into_bytes()
}

const SENTINEL_HOST: &str = "parse-diff-sentinel";
const SENTINEL_APP: &str = "sentinel";

/// Sends every line, each followed by a sentinel, then reads the outputs back.
fn feed(
    system: System,
    entries: &[Entry],
    port: u16,
    out: &Path,
    cx: &Context,
    timeout: Duration,
) -> Result<Readings, String> {
    let mut stream = connect(port, system)?;
    let mut batch = Vec::new();
    for (n, entry) in entries.iter().enumerate() {
        batch.extend_from_slice(format!("{} ", entry.bytes.len()).as_bytes());
        batch.extend_from_slice(&entry.bytes);
        batch.extend_from_slice(&sentinel(n));
    }
    // One more, so that a system that emits a frame only when the next arrives emits the last.
    batch.extend_from_slice(&sentinel(entries.len()));
    stream
        .write_all(&batch)
        .map_err(|e| format!("sending to {}: {e}", system.name()))?;
    let lines = wait_for_sentinels(out, entries.len(), timeout);
    let mut readings = vec![None; entries.len()];
    let mut current: Vec<Fields> = Vec::new();
    let mut n = 0;
    for line in &lines {
        let fields = parse_output(system, line, cx);
        if fields.hostname.as_deref() == Some(SENTINEL_HOST)
            && fields.appname.as_deref() == Some(SENTINEL_APP)
        {
            if let Some(slot) = readings.get_mut(n) {
                *slot = current.drain(..).next();
            }
            current.clear();
            n += 1;
        } else {
            current.push(fields);
        }
    }
    if n < entries.len() {
        eprintln!(
            "parse-diff: {} emitted {n} of {} sentinels in {timeout:?}",
            system.name(),
            entries.len()
        );
    }
    Ok(readings)
}

fn parse_output(system: System, line: &str, cx: &Context) -> Fields {
    let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(
        |_| serde_json::json!({ "message": format!("(output is not JSON: {line})") }),
    );
    match system {
        System::Sluice => fields::from_sluice(&value, cx),
        _ => fields::from_peer(&value, cx),
    }
}

/// The complete lines of `out` once it holds `want` sentinels, or whatever it holds at the
/// timeout.
fn wait_for_sentinels(out: &Path, want: usize, timeout: Duration) -> Vec<String> {
    let started = Instant::now();
    loop {
        let bytes = std::fs::read(out).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        let sentinels = complete.matches(SENTINEL_HOST).count();
        if sentinels >= want || started.elapsed() > timeout {
            return complete.lines().map(str::to_string).collect();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn connect(port: u16, system: System) -> Result<TcpStream, String> {
    let started = Instant::now();
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return Ok(s),
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => return Err(format!("{} does not listen on {port}: {e}", system.name())),
        }
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A started server, ended by its PID (SIGTERM, then SIGKILL) when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // A few hundred events: every system exits within milliseconds of SIGTERM.
        let _ = stop(&mut self.0, Duration::from_secs(10));
    }
}

fn sluice_config(dir: &Path, port: u16, out: &Path) -> Result<String, String> {
    Ok(format!(
        "data_dir = \"{data}\"\nstatus_interval = \"0s\"\n[api]\naddress = \"127.0.0.1:{api}\"\n\
         [sources.tcp]\ntype = \"syslog\"\nmode = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n\
         [sinks.out]\ntype = \"file\"\npath = \"{out}\"\nencoding = \"json\"\n",
        data = dir.join("data").display(),
        api = free_port()?,
        out = out.display(),
    ))
}

/// rsyslog: every parsed property as JSON (`option.jsonf`), timestamps in RFC 3339.
fn rsyslog_config(dir: &Path, port: u16, out: &Path) -> String {
    let property = |out_name: &str, name: &str, extra: &str| {
        format!("  property(outname=\"{out_name}\" name=\"{name}\" format=\"jsonf\"{extra})\n")
    };
    let mut template =
        String::from("template(name=\"diff\" type=\"list\" option.jsonf=\"on\") {\n");
    for (out_name, name) in [
        ("pri", "pri"),
        ("hostname", "hostname"),
        ("appname", "app-name"),
        ("procid", "procid"),
        ("msgid", "msgid"),
        ("sd", "structured-data"),
        ("message", "msg"),
    ] {
        template.push_str(&property(out_name, name, ""));
    }
    template.push_str(&property(
        "timestamp",
        "timereported",
        " dateFormat=\"rfc3339\"",
    ));
    template.push_str("}\n");
    format!(
        "global(workDirectory=\"{dir}\" net.enableDNS=\"off\" \
         parser.escapeControlCharactersOnReceive=\"off\")\n\
         module(load=\"imptcp\")\n\
         input(type=\"imptcp\" port=\"{port}\" address=\"127.0.0.1\")\n{template}\
         action(type=\"omfile\" file=\"{out}\" template=\"diff\")\n",
        dir = dir.display(),
        out = out.display(),
    )
}

/// syslog-ng: its `syslog()` source (octet-counted frames; RFC 5424, falling back to BSD), the
/// parsed macros as JSON, the hostname as sent (`keep_hostname`), microsecond timestamps.
fn syslog_ng_config(port: u16, out: &Path) -> String {
    let pairs = [
        ("pri", "${PRI}"),
        ("timestamp", "${ISODATE}"),
        ("hostname", "${HOST}"),
        ("appname", "${PROGRAM}"),
        ("procid", "${PID}"),
        ("msgid", "${MSGID}"),
        ("sd", "${SDATA}"),
        ("message", "${MESSAGE}"),
    ]
    .map(|(k, v)| format!("--pair {k}={v}"))
    .join(" ");
    format!(
        "@version: 3.38\n\
         options {{ flush_lines(0); stats_freq(0); use_dns(no); keep_hostname(yes); \
         frac_digits(6); }};\n\
         source s {{ syslog(ip(\"127.0.0.1\") port({port}) transport(\"tcp\")); }};\n\
         destination d {{ file(\"{out}\" template(\"$(format-json {pairs})\\n\")); }};\n\
         log {{ source(s); destination(d); }};\n",
        out = out.display(),
    )
}
