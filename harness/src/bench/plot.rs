//! `--plot`: an SVG with the call latency CDF and the throughputs next to the Python baseline.
//!
//! Plotters is built without font libraries: text is emitted as SVG `<text>` and laid out by the viewer.

use std::path::Path;

use plotters::prelude::*;

use super::measure::Measurements;
use super::report::{number, PYTHON, RAW_FE2O3};

const RUST: RGBColor = RGBColor(222, 98, 28);
const PY: RGBColor = RGBColor(48, 105, 152);
const GREY: RGBColor = RGBColor(110, 110, 110);

/// Errors from drawing (plotters' errors are stringly, so they are kept as text).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlotError(String);

fn err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError(e.to_string())
}

/// Draws `m` into an SVG at `path` (parent directories are created). `title` goes on top.
pub fn write_svg(path: &Path, title: &str, m: &Measurements) -> Result<(), PlotError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled(title, ("sans-serif", 20).into_font())
        .map_err(err)?;
    let (left, right) = root.split_horizontally(560);
    latency_cdf(&left, m)?;
    throughput_bars(&right, m)?;
    root.present().map_err(err)?;
    Ok(())
}

fn latency_cdf<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    m: &Measurements,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let pts = super::stats::cdf(&m.samples, 400);
    let lo = pts.first().map(|p| p.0).unwrap_or(0.1).max(0.001);
    let hi = pts.last().map(|p| p.0).unwrap_or(1.0);
    let x_lo = (lo / 1.5).min(RAW_FE2O3.request_reply_p50_ms / 1.5);
    let x_hi = (hi * 1.5).max(PYTHON.call_p50_ms * 1.5);
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "sequential call latency, CDF of {} calls",
                m.sequential.calls
            ),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), 0.0..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("round-trip latency (ms, log scale)")
        .y_desc("fraction of calls")
        .x_label_formatter(&|v| {
            if *v < 1.0 {
                format!("{v:.2}")
            } else {
                format!("{v:.0}")
            }
        })
        .y_label_formatter(&|v| format!("{v:.1}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(pts.iter().copied(), RUST.stroke_width(2)))
        .map_err(err)?
        .label(format!(
            "rust driver  p50 {:.3} ms, p99 {:.3} ms",
            m.sequential.latency.p50_ms, m.sequential.latency.p99_ms
        ))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RUST.stroke_width(2)));
    let marker =
        |x: f64, color: RGBColor| LineSeries::new(vec![(x, 0.0), (x, 1.0)], color.stroke_width(2));
    chart
        .draw_series(marker(PYTHON.call_p50_ms, PY))
        .map_err(err)?
        .label(format!(
            "python driver p50 {} ms (brief)",
            PYTHON.call_p50_ms
        ))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], PY.stroke_width(2)));
    chart
        .draw_series(marker(RAW_FE2O3.request_reply_p50_ms, GREY))
        .map_err(err)?
        .label(format!(
            "raw fe2o3 p50 {} ms (brief)",
            RAW_FE2O3.request_reply_p50_ms
        ))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], GREY.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    Ok(())
}

fn throughput_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    m: &Measurements,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let concurrent_python = (m.concurrent.callers == PYTHON.concurrent_callers)
        .then_some(PYTHON.concurrent_calls_per_s);
    let groups: [(String, f64, Option<f64>); 4] = [
        (
            "sequential calls".into(),
            m.sequential.calls_per_s,
            Some(PYTHON.sequential_calls_per_s),
        ),
        (
            format!("{} callers", m.concurrent.callers),
            m.concurrent.calls_per_s,
            concurrent_python,
        ),
        (
            "casts".into(),
            m.casts.received_per_s,
            Some(PYTHON.casts_per_s),
        ),
        (
            "notifications".into(),
            m.notifications.received_per_s,
            Some(PYTHON.notifications_per_s),
        ),
    ];
    let max = groups
        .iter()
        .map(|g| g.1.max(g.2.unwrap_or(0.0)))
        .fold(1.0, f64::max);
    // Two bars per group: slot 2i is rust, 2i+1 python; read top to bottom.
    let n = (groups.len() * 2) as i32;
    let labels: Vec<String> = groups
        .iter()
        .flat_map(|g| [format!("{} (rust)", g.0), format!("{} (python)", g.0)])
        .collect();
    let mut chart = ChartBuilder::on(area)
        .caption("throughput, messages per second", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(170)
        .build_cartesian_2d(0.0..max * 1.45, (0..n - 1).into_segmented())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE.mix(0.0))
        .x_desc("per second (received)")
        .x_label_formatter(&|v| number(*v, "/s"))
        .y_labels(n as usize)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => {
                // Slot 0 is at the bottom; show the first group on top.
                let idx = (n - 1 - *i) as usize;
                labels.get(idx).cloned().unwrap_or_default()
            }
            _ => String::new(),
        })
        .draw()
        .map_err(err)?;
    let mut bars = Vec::new();
    let mut texts = Vec::new();
    for (gi, (_, rust, python)) in groups.iter().enumerate() {
        for (k, (value, color)) in [(Some(*rust), RUST), (*python, PY)].into_iter().enumerate() {
            let slot = n - 1 - (gi * 2 + k) as i32;
            let Some(v) = value else {
                texts.push(Text::new(
                    "no baseline".to_string(),
                    (max * 0.01, SegmentValue::CenterOf(slot)),
                    ("sans-serif", 12).into_font().color(&GREY),
                ));
                continue;
            };
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(slot)),
                    (v, SegmentValue::Exact(slot + 1)),
                ],
                color.filled(),
            );
            bar.set_margin(3, 3, 0, 0);
            bars.push(bar);
            let mut label = number(v, "/s");
            if k == 0 {
                if let Some(p) = python.filter(|p| *p > 0.0) {
                    label = format!("{label}  ({:.1}x python)", v / p);
                }
            }
            texts.push(Text::new(
                label,
                (v + max * 0.01, SegmentValue::CenterOf(slot)),
                ("sans-serif", 12).into_font().color(&BLACK),
            ));
        }
    }
    chart.draw_series(bars).map_err(err)?;
    chart.draw_series(texts).map_err(err)?;
    Ok(())
}
