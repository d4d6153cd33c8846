//! PNG plots of a comparison run (plotters, bitmap backend): events/s per system, scenario and
//! set-up, one panel per core placement; and latency percentiles at fixed offered loads.
//!
//! Text needs a TrueType font: DejaVu Sans from Debian's `fonts-dejavu-core` (the path can be
//! overridden with `SLUICE_BENCH_FONT`). Without it the plots fail with that message; the
//! tables do not depend on them.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::compare::{Cores, Row};
use crate::peers::System;

const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers the font once per process (plotters keeps a `'static` reference to it).
fn font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let path = std::env::var("SLUICE_BENCH_FONT").unwrap_or_else(|_| DEFAULT_FONT.into());
            let bytes = std::fs::read(&path).map_err(|e| {
                format!("font {path}: {e} (apt-get install fonts-dejavu-core, or set SLUICE_BENCH_FONT)")
            })?;
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("font {path}: not a TrueType font"))
        })
        .clone()
}

fn color(system: System) -> RGBColor {
    match system {
        System::Sluice => RGBColor(0x1f, 0x77, 0xb4),
        System::Rsyslog => RGBColor(0xd6, 0x27, 0x28),
        System::SyslogNg => RGBColor(0x2c, 0xa0, 0x2c),
    }
}

fn label(r: &Row) -> String {
    format!(
        "{} {} — {}",
        r.system().name(),
        r.variant.scenario.name(),
        r.variant.setup
    )
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// How values map to bar lengths.
#[derive(Clone, Copy)]
enum Scale {
    /// Events/s, labelled in millions.
    Millions,
    /// Milliseconds on a log10 axis from 0.1 ms (latencies span four decades).
    LogMillis,
}

impl Scale {
    fn position(self, value: f64) -> f64 {
        match self {
            Scale::Millions => value,
            Scale::LogMillis => value.max(0.1).log10(),
        }
    }

    fn axis(self, max: f64) -> std::ops::Range<f64> {
        match self {
            Scale::Millions => 0.0..max.max(1.0) * 1.1,
            Scale::LogMillis => -1.0..(max.max(1.0).log10() + 0.3),
        }
    }

    fn label(self, at: f64) -> String {
        match self {
            Scale::Millions => format!("{:.1}M", at / 1e6),
            Scale::LogMillis => {
                let ms = 10f64.powf(at);
                if ms < 1.0 {
                    format!("{ms:.1}")
                } else {
                    format!("{ms:.0}")
                }
            }
        }
    }
}

/// One horizontal bar per entry (label, value, colour), the first entry on top.
fn bars(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    x_desc: &str,
    scale: Scale,
    entries: &[(String, f64, RGBColor)],
) -> Result<(), String> {
    let n = entries.len().max(1) as i32;
    let max = entries.iter().map(|e| e.1).fold(0.0f64, f64::max);
    let axis = scale.axis(max);
    let left = axis.start;
    // Segment i (from the bottom) shows entry n - 1 - i.
    let entry_at = |segment: i32| entries.get((n - 1 - segment) as usize);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(560)
        .build_cartesian_2d(axis, (0..n).into_segmented())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(entries.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => entry_at(*i).map_or(String::new(), |e| e.0.clone()),
            _ => String::new(),
        })
        .x_label_formatter(&|v| scale.label(*v))
        .x_desc(x_desc)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    chart
        .draw_series((0..n).filter_map(|i| {
            let (_, value, c) = entry_at(i)?;
            let mut bar = Rectangle::new(
                [
                    (left, SegmentValue::Exact(i)),
                    (scale.position(*value), SegmentValue::Exact(i + 1)),
                ],
                c.filled(),
            );
            bar.set_margin(3, 3, 0, 0);
            Some(bar)
        }))
        .map_err(err)?;
    Ok(())
}

/// Events/s of every full-speed run, one panel per core placement.
pub fn throughput_png(rows: &[Row], path: &Path) -> Result<(), String> {
    font()?;
    let placements = [Cores::Both, Cores::Split];
    let per_panel = placements
        .iter()
        .map(|c| {
            rows.iter()
                .filter(|r| r.offered_rate.is_none() && r.cores == *c)
                .count()
        })
        .max()
        .unwrap_or(0);
    let height = (120 + 34 * per_panel as u32) * 2;
    let root = BitMapBackend::new(path, (1500, height.max(300))).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((2, 1));
    for (area, cores) in panels.iter().zip(placements) {
        let entries: Vec<(String, f64, RGBColor)> = rows
            .iter()
            .filter(|r| r.offered_rate.is_none() && r.cores == cores)
            .map(|r| (label(r), r.events_per_sec, color(r.system())))
            .collect();
        bars(
            area,
            &format!("events/s end to end, cores: {}", cores.name()),
            "events/s",
            Scale::Millions,
            &entries,
        )?;
    }
    root.present().map_err(err)
}

/// p50 / p99 / p99.9 end to end (and Sluice's own ingest → durable p99) of the fixed-load runs.
pub fn latency_png(rows: &[Row], path: &Path) -> Result<(), String> {
    font()?;
    let mut entries = Vec::new();
    for r in rows.iter().filter(|r| r.offered_rate.is_some()) {
        let who = format!("{} @{}/s", label(r), r.offered_rate.unwrap_or(0));
        let c = color(r.system());
        let ms = |us: u64| us as f64 / 1000.0;
        entries.push((format!("{who} p50"), ms(r.latency.p50), c));
        entries.push((format!("{who} p99"), ms(r.latency.p99), c));
        entries.push((format!("{who} p99.9"), ms(r.latency.p999), c));
        if let Some(d) = r.ingest_durable.filter(|d| d.p99 != u64::MAX) {
            entries.push((format!("{who} ingest→durable p99 (≤)"), ms(d.p99), c));
        }
    }
    let height = 120 + 30 * entries.len() as u32;
    let root = BitMapBackend::new(path, (1500, height.max(300))).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    bars(
        &root,
        "latency at a fixed offered load (send → out; Sluice's own ingest → durable)",
        "milliseconds (log scale)",
        Scale::LogMillis,
        &entries,
    )?;
    root.present().map_err(err)
}

/// Ingest → durable percentiles (ms, log scale) against offered load (millions of events/s):
/// one line per percentile.
pub fn latency_curve_png(points: &[crate::latency::Point], path: &Path) -> Result<(), String> {
    font()?;
    let root = BitMapBackend::new(path, (1200, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let max_rate = points.iter().map(|p| p.offered).max().unwrap_or(1) as f64 / 1e6;
    let ms = |us: u64| (us.min(10_000_000) as f64 / 1000.0).max(0.1);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Sluice ingest → durable latency against offered load (2 shards, WAL fsync 2 ms)",
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max_rate * 1.05, (0.1f64..3000f64).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("offered load, millions of events/s")
        .y_desc("milliseconds (bucket upper bound, log scale)")
        .draw()
        .map_err(err)?;
    type Pick = fn(&crate::latency::Point) -> u64;
    let series: [(&str, Pick, RGBColor); 4] = [
        ("p50", |p| p.durable.p50, RGBColor(0x2c, 0xa0, 0x2c)),
        ("p90", |p| p.p90_us, RGBColor(0x1f, 0x77, 0xb4)),
        ("p99", |p| p.durable.p99, RGBColor(0xff, 0x7f, 0x0e)),
        ("p99.9", |p| p.durable.p999, RGBColor(0xd6, 0x27, 0x28)),
    ];
    for (name, pick, color) in series {
        let line: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.offered as f64 / 1e6, ms(pick(p))))
            .collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(3)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        chart
            .draw_series(
                line.into_iter()
                    .map(|xy| Circle::new(xy, 4, color.filled())),
            )
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: usize, cores: Cores, rate: Option<u64>, eps: f64) -> Row {
        Row::sample(v, cores, rate, eps, 0)
    }

    /// Reads a PNG's width and height from its IHDR chunk.
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG signature");
        let be = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        (be(16), be(20))
    }

    #[test]
    fn plots_are_pngs_sized_by_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let rows = vec![
            row(0, Cores::Both, None, 1.2e6),
            row(2, Cores::Both, None, 5.0e5),
            row(0, Cores::Split, None, 8.0e5),
            row(6, Cores::Both, Some(1_000_000), 1.0e6),
            row(9, Cores::Both, Some(100_000), 1.0e5),
        ];
        let throughput = dir.path().join("throughput.png");
        let latency = dir.path().join("latency.png");
        throughput_png(&rows, &throughput).unwrap();
        latency_png(&rows, &latency).unwrap();
        let (w, h) = png_size(&std::fs::read(&throughput).unwrap());
        assert_eq!((w, h), (1500, 2 * (120 + 34 * 2)));
        // Two fixed-load rows: 3 percentiles each, plus 2 ingest → durable bars.
        let (w, h) = png_size(&std::fs::read(&latency).unwrap());
        assert_eq!((w, h), (1500, 120 + 30 * 8));
        // The bars are there, in each system's colour, longer for the faster system.
        let img = image::open(&throughput).unwrap().to_rgb8();
        let count = |c: RGBColor| img.pixels().filter(|p| p.0 == [c.0, c.1, c.2]).count();
        let (sluice, rsyslog) = (count(color(System::Sluice)), count(color(System::Rsyslog)));
        assert!(rsyslog > 0, "the rsyslog bar is drawn");
        assert!(
            sluice > 2 * rsyslog,
            "two Sluice bars, each longer: {sluice} vs {rsyslog}"
        );
    }
}
