//! `--html`: a self-contained report. The charts are inline SVG drawn with plotters (text is SVG
//! `<text>`, laid out by the browser); no script, no stylesheet or font from the network.

use std::fmt::Write as _;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::fleet::FleetPoint;
use super::report::{number, Impl, Report, Row};

const RUST: RGBColor = RGBColor(222, 98, 28);
const PY: RGBColor = RGBColor(48, 105, 152);
const RAW: RGBColor = RGBColor(110, 110, 110);
const EACH: RGBColor = RGBColor(40, 150, 90);

fn color(who: Impl) -> RGBColor {
    match who {
        Impl::Rust => RUST,
        Impl::Python => PY,
        Impl::Raw => RAW,
    }
}

fn label(who: Impl) -> &'static str {
    match who {
        Impl::Rust => "rust driver",
        Impl::Python => "python driver",
        Impl::Raw => "raw fe2o3",
    }
}

type Res = Result<(), String>;

fn e<E: std::fmt::Display>(x: E) -> String {
    x.to_string()
}

/// Writes the HTML report to `path` (parent directories are created).
pub fn write(path: &Path, report: &Report) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, render(report))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn svg(w: u32, h: u32, draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Res) -> String {
    let mut out = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(e)
            .and_then(|_| draw(&root))
            .and_then(|_| root.present().map_err(e))
    };
    match result {
        Ok(()) => out,
        Err(why) => format!("<p class=\"err\">chart not drawn: {}</p>", esc(&why)),
    }
}

fn fmt_axis(v: f64) -> String {
    if v >= 1000.0 {
        number(v, "/s")
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn latency_cdf(report: &Report) -> String {
    svg(1100, 420, |root| {
        let all: Vec<f64> = report
            .latency_cdf
            .iter()
            .flat_map(|(_, p)| p.iter().map(|x| x.0))
            .collect();
        let lo = all.iter().copied().fold(f64::INFINITY, f64::min).max(0.001);
        let hi = all.iter().copied().fold(0.0, f64::max).max(lo * 2.0);
        let mut chart = ChartBuilder::on(root)
            .caption(
                "sequential call latency, CDF (all rounds)",
                ("sans-serif", 18),
            )
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d((lo / 1.3..hi * 1.3).log_scale(), 0.0..1.0)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("round-trip latency (ms, log scale)")
            .y_desc("fraction of calls")
            .x_label_formatter(&|v| fmt_axis(*v))
            .y_label_formatter(&|v| format!("{v:.1}"))
            .label_style(("sans-serif", 13))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(e)?;
        for (who, pts) in &report.latency_cdf {
            let c = color(*who);
            let p50 = report
                .comparison
                .iter()
                .find(|r| r.phase == "sequential" && r.label.ends_with("latency p50"))
                .and_then(|r| match who {
                    Impl::Rust => r.rust,
                    Impl::Python => r.python,
                    Impl::Raw => r.raw,
                })
                .map(|t| format!(", p50 {:.3} ms", t[0]))
                .unwrap_or_default();
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(e)?
                .label(format!("{}{p50}", label(*who)))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(e)?;
        Ok(())
    })
}

fn latency_histogram(report: &Report) -> String {
    svg(1100, 380, |root| {
        let lo = report
            .latency_histogram
            .iter()
            .flat_map(|(_, b)| b.first().map(|x| x.0))
            .fold(f64::INFINITY, f64::min)
            .max(0.001);
        let hi = report
            .latency_histogram
            .iter()
            .flat_map(|(_, b)| b.last().map(|x| x.1))
            .fold(0.0, f64::max)
            .max(lo * 2.0);
        // Fractions, so implementations with different call counts compare.
        // (from ms, to ms, fraction) per implementation.
        type Fractions = Vec<(f64, f64, f64)>;
        let series: Vec<(Impl, Fractions)> = report
            .latency_histogram
            .iter()
            .map(|(w, b)| {
                let total: u64 = b.iter().map(|x| x.2).sum::<u64>().max(1);
                (
                    *w,
                    b.iter()
                        .map(|(a, z, n)| (*a, *z, *n as f64 / total as f64))
                        .collect(),
                )
            })
            .collect();
        let top = series
            .iter()
            .flat_map(|(_, b)| b.iter().map(|x| x.2))
            .fold(0.0, f64::max)
            .max(0.01);
        let mut chart = ChartBuilder::on(root)
            .caption(
                "sequential call latency, histogram (fraction of calls per bucket)",
                ("sans-serif", 18),
            )
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d((lo / 1.1..hi * 1.1).log_scale(), 0.0..top * 1.15)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("round-trip latency (ms, log scale)")
            .y_desc("fraction")
            .x_label_formatter(&|v| fmt_axis(*v))
            .y_label_formatter(&|v| format!("{v:.2}"))
            .label_style(("sans-serif", 13))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(e)?;
        for (who, b) in &series {
            let c = color(*who);
            chart
                .draw_series(
                    b.iter().map(|(a, z, f)| {
                        Rectangle::new([(*a, 0.0), (*z, *f)], c.mix(0.45).filled())
                    }),
                )
                .map_err(e)?
                .label(label(*who))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 16, y + 5)], c.mix(0.6).filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(e)?;
        Ok(())
    })
}

/// The throughput rows (`/s`), in table order.
fn throughput_rows(report: &Report) -> Vec<&Row> {
    report
        .comparison
        .iter()
        .filter(|r| r.unit == "/s")
        .collect()
}

/// Throughput bars, Rust vs Python vs raw, with round ranges as whiskers: one SVG drawn in one pass
/// (axes, then a group of bars per workload), kept whole so the coordinates stay readable together.
fn throughput_bars(report: &Report) -> String {
    let rows = throughput_rows(report);
    let impls = [Impl::Rust, Impl::Python, Impl::Raw];
    let slots = rows.len() * 3;
    let h = (slots as u32 * 22 + 110).max(300);
    svg(1100, h, |root| {
        let vals = |r: &Row, w: Impl| match w {
            Impl::Rust => r.rust,
            Impl::Python => r.python,
            Impl::Raw => r.raw,
        };
        let max = rows
            .iter()
            .flat_map(|r| impls.iter().filter_map(|w| vals(r, *w).map(|t| t[2])))
            .fold(10.0, f64::max);
        let min = rows
            .iter()
            .flat_map(|r| impls.iter().filter_map(|w| vals(r, *w).map(|t| t[1])))
            .filter(|v| *v > 0.0)
            .fold(max, f64::min);
        let n = slots as i32;
        let names: Vec<String> = rows
            .iter()
            .flat_map(|r| {
                let short = r
                    .label
                    .replace(" (pre-settled, counted at the server)", "")
                    .replace(" (acked, counted at the listener)", "")
                    .replace(": calls/s", "")
                    .replace(": received/s", "");
                impls.map(|w| format!("{short} · {}", w.as_str()))
            })
            .collect();
        let mut chart = ChartBuilder::on(root)
            .caption(
                "throughput per second: median of the rounds, whiskers smallest to largest round (log scale)",
                ("sans-serif", 18),
            )
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(330)
            .build_cartesian_2d((min / 2.0..max * 3.0).log_scale(), (0..n - 1).into_segmented())
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(RGBColor(235, 235, 235))
            .x_desc("operations or deliveries per second")
            .x_label_formatter(&|v| fmt_axis(*v))
            .y_labels(slots)
            .label_style(("sans-serif", 13))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names
                    .get((n - 1 - *i) as usize)
                    .cloned()
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .draw()
            .map_err(e)?;
        let base = min / 2.0;
        for (ri, r) in rows.iter().enumerate() {
            for (k, w) in impls.iter().enumerate() {
                let slot = n - 1 - (ri * 3 + k) as i32;
                let Some([med, lo, hi]) = vals(r, *w) else {
                    chart
                        .draw_series(std::iter::once(Text::new(
                            "not measured".to_string(),
                            (base * 1.05, SegmentValue::CenterOf(slot)),
                            ("sans-serif", 12).into_font().color(&RAW),
                        )))
                        .map_err(e)?;
                    continue;
                };
                let mut bar = Rectangle::new(
                    [
                        (base, SegmentValue::Exact(slot)),
                        (med.max(base), SegmentValue::Exact(slot + 1)),
                    ],
                    color(*w).filled(),
                );
                bar.set_margin(3, 3, 0, 0);
                chart.draw_series(std::iter::once(bar)).map_err(e)?;
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![
                            (lo.max(base), SegmentValue::CenterOf(slot)),
                            (hi.max(base), SegmentValue::CenterOf(slot)),
                        ],
                        BLACK.stroke_width(2),
                    )))
                    .map_err(e)?;
                let mut text = number(med, "/s");
                if *w == Impl::Rust {
                    if let Some(x) = r.vs_python {
                        text.push_str(&format!("  ({:.1}x python)", x.median));
                    }
                    if let Some(x) = r.vs_raw {
                        text.push_str(&format!("  ({:.2}x raw)", x.median));
                    }
                }
                chart
                    .draw_series(std::iter::once(Text::new(
                        text,
                        (hi.max(med) * 1.08, SegmentValue::CenterOf(slot)),
                        ("sans-serif", 12).into_font().color(&BLACK),
                    )))
                    .map_err(e)?;
            }
        }
        Ok(())
    })
}

fn fleet_chart(
    area: &DrawingArea<SVGBackend, Shift>,
    points: &[FleetPoint],
    title: &str,
    unit: &str,
    value: fn(&FleetPoint) -> Option<f64>,
) -> Res {
    let xs: Vec<f64> = points.iter().map(|p| p.servers as f64).collect();
    let ys: Vec<f64> = points
        .iter()
        .filter_map(value)
        .filter(|v| *v > 0.0)
        .collect();
    if ys.is_empty() {
        return Ok(());
    }
    let x_hi = xs.iter().copied().fold(1.0, f64::max) * 1.5;
    let y_lo = ys.iter().copied().fold(f64::INFINITY, f64::min) / 1.5;
    let y_hi = ys.iter().copied().fold(0.0, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(38)
        .y_label_area_size(60)
        .build_cartesian_2d((0.7..x_hi).log_scale(), (y_lo..y_hi).log_scale())
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("RPC servers (log)")
        .y_desc(unit)
        .x_label_formatter(&|v| fmt_axis(*v))
        .y_label_formatter(&|v| fmt_axis(*v))
        .label_style(("sans-serif", 12))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(e)?;
    for (kind, c, name) in [
        ("one", RUST, "one transport"),
        ("each", EACH, "one transport per server"),
    ] {
        let pts: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.transports == kind)
            .filter_map(|p| value(p).filter(|v| *v > 0.0).map(|v| (p.servers as f64, v)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(e)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3)));
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 4, c.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(e)?;
    Ok(())
}

fn fleet_curves(points: &[FleetPoint]) -> String {
    svg(1100, 700, |root| {
        let areas = root.split_evenly((2, 2));
        fleet_chart(&areas[0], points, "time to bring the fleet up", "ms", |p| {
            Some(p.ready_ms)
        })?;
        fleet_chart(&areas[1], points, "RSS growth per server", "KiB", |p| {
            p.rss_per_server_kib
        })?;
        fleet_chart(
            &areas[2],
            points,
            "call latency to a random server, p50",
            "ms",
            |p| Some(p.call_p50_ms),
        )?;
        fleet_chart(
            &areas[3],
            points,
            "fanout to every server of a topic",
            "ms",
            |p| Some(p.fanout_ms),
        )?;
        Ok(())
    })
}

fn cell(v: Option<[f64; 3]>, unit: &str) -> String {
    match v {
        Some([m, lo, hi]) => format!(
            "{} <span class=\"r\">[{}–{}]</span>",
            number(m, unit),
            number(lo, unit),
            number(hi, unit)
        ),
        None => "–".into(),
    }
}

fn ratio(r: Option<super::report::Ratio>) -> String {
    match r {
        Some(r) => format!(
            "<b>{:.2}×</b> <span class=\"r\">[{:.2}–{:.2}]</span>",
            r.median, r.min, r.max
        ),
        None => "–".into(),
    }
}

/// The page, written top to bottom as it reads (head and style, broker and machine, the comparison
/// table, then each chart): long, but one linear template is easier to follow than fragments.
pub fn render(report: &Report) -> String {
    let b = &report.broker;
    let m = &report.machine;
    let load = |l: Option<[f64; 3]>| {
        l.map(|l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]))
            .unwrap_or("–".into())
    };
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>harness bench</title><style>\
body{{font-family:sans-serif;margin:24px;color:#222;max-width:1150px}}\
table{{border-collapse:collapse;margin:8px 0 20px}}td,th{{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right;font-size:13px}}\
td:first-child,th:first-child{{text-align:left}}th{{background:#f3f3f3}}.r{{color:#888;font-size:11px}}\
code{{background:#f3f3f3;padding:1px 4px}}dl{{display:grid;grid-template-columns:max-content auto;gap:2px 14px;font-size:14px}}\
dt{{font-weight:bold}}svg{{display:block;margin:6px 0 18px}}.err{{color:#a00}}\
</style></head><body><h1>harness bench</h1><dl>"
    );
    let mut meta = vec![
        ("date", report.date.clone()),
        ("command", format!("<code>{}</code>", esc(&report.command))),
        (
            "broker",
            esc(&format!(
                "{} {} at {} — {} {}",
                b.kind,
                b.flavour.as_deref().unwrap_or(""),
                b.url,
                b.product.as_deref().unwrap_or("unknown product"),
                b.version.as_deref().unwrap_or("unknown version")
            )),
        ),
        (
            "machine",
            esc(&format!(
                "{} cores, {}, {} {}",
                m.cores,
                m.cpu_model.as_deref().unwrap_or("unknown CPU"),
                m.os,
                m.arch
            )),
        ),
        (
            "load average",
            format!(
                "before {}, after {}",
                load(m.load_before),
                load(m.load_after)
            ),
        ),
        (
            "rounds",
            format!(
                "{} per phase and implementation, alternating; {}; {}-byte payloads",
                report.settings.rounds,
                match report.settings.count {
                    Some(n) => format!("{n} operations per round"),
                    None => format!("{} s per round", report.settings.round_seconds),
                },
                report.settings.payload_bytes
            ),
        ),
    ];
    if let Some(v) = &report.python_versions {
        meta.push(("python peer", esc(&v.to_string())));
    }
    for (k, v) in meta {
        let _ = write!(h, "<dt>{k}</dt><dd>{v}</dd>");
    }
    h.push_str("</dl><h2>Rust driver, Python driver and raw fe2o3, same broker, same run</h2>");
    h.push_str(
        "<p>Median of the rounds, [smallest–largest round]. Ratios: how many times better the Rust driver is \
         (&gt;1 better; for latency, time and memory lower is better): the ratio of the medians \
         [range of the per-round ratios].</p><table><tr><th>metric</th><th>rust driver</th><th>python driver</th>\
         <th>vs python</th><th>raw fe2o3</th><th>vs raw</th></tr>",
    );
    for r in &report.comparison {
        let _ = write!(
            h,
            "<tr><td>{} <span class=\"r\">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.label),
            esc(r.unit),
            cell(r.rust, r.unit),
            cell(r.python, r.unit),
            ratio(r.vs_python),
            cell(r.raw, r.unit),
            ratio(r.vs_raw)
        );
    }
    h.push_str("</table>");
    for n in &report.notes {
        let _ = write!(h, "<p class=\"err\">note: {}</p>", esc(n));
    }
    h.push_str("<h2>Throughput</h2>");
    h.push_str(&throughput_bars(report));
    if !report.latency_cdf.is_empty() {
        h.push_str("<h2>Sequential call latency</h2>");
        h.push_str(&latency_cdf(report));
        h.push_str(&latency_histogram(report));
    }
    h.push_str("<h2>Memory and CPU per process at the end</h2><table><tr><th>process</th><th>pid</th><th>RSS</th><th>VmHWM</th><th>CPU</th></tr>");
    for p in &report.processes {
        let mib = |k: Option<u64>| {
            k.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                .unwrap_or("–".into())
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.role),
            p.pid.map(|p| p.to_string()).unwrap_or_default(),
            mib(p.rss_kib),
            mib(p.hwm_kib),
            p.cpu_s.map(|c| format!("{c:.2} s")).unwrap_or("–".into())
        );
    }
    h.push_str("</table>");
    if !report.fleet.is_empty() {
        h.push_str("<h2>Fleet scale (Rust driver)</h2><table><tr><th>servers</th><th>topics</th><th>transports</th><th>fleet ready</th><th>RSS/server</th><th>broker links</th><th>call p50</th><th>call p99</th><th>fanout to all</th></tr>");
        for p in &report.fleet {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1} ms</td><td>{}</td><td>{}</td><td>{:.3} ms</td><td>{:.3} ms</td><td>{:.1} ms{}</td></tr>",
                p.servers,
                p.topics,
                if p.transports == "one" { 1 } else { p.servers },
                p.ready_ms,
                p.rss_per_server_kib.map(|k| format!("{k:.1} KiB")).unwrap_or("–".into()),
                p.broker_links.map(|l| l.to_string()).unwrap_or("–".into()),
                p.call_p50_ms,
                p.call_p99_ms,
                p.fanout_ms,
                if p.fanout_all_arrived { "" } else { " (not all arrived)" }
            );
        }
        h.push_str("</table><p>RSS/server: growth of the harness process's RSS while the fleet came up, per server \
            (with the embedded broker in the process it includes the broker's share). Call latency to a random \
            server: its first call attaches the sender link to that server.</p>");
        h.push_str(&fleet_curves(&report.fleet));
    }
    h.push_str("</body></html>\n");
    h
}
