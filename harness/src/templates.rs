//! Tera rendering of the files under `templates/` (broker configs, service INI files, images).
//!
//! Templates are addressed by their path relative to the templates root, e.g. `qpidd/qpidd.conf.tera`
//! or `services/nova.conf.tera`. The whole tree is loaded so templates can `include` each other.

use std::path::{Path, PathBuf};

use crate::scenario::{limits, read};

/// Errors from loading or rendering templates.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The templates directory does not exist.
    #[error("templates directory {} does not exist", dir.display())]
    NoDir {
        /// The directory looked at.
        dir: PathBuf,
    },
    /// No template of that name.
    #[error("no template '{name}' under {} (available: {available})", dir.display())]
    NotFound {
        /// Requested name.
        name: String,
        /// Templates root.
        dir: PathBuf,
        /// Available names, comma separated.
        available: String,
    },
    /// The directory holds too much to be a templates directory (`--templates /`), or a template is
    /// not a regular file or too large.
    #[error("templates directory {}: {why}", dir.display())]
    Unusable {
        /// The directory.
        dir: PathBuf,
        /// Why.
        why: String,
    },
    /// Tera failed to parse or render.
    #[error("template '{name}': {message}")]
    Render {
        /// Template name (or the directory when loading failed).
        name: String,
        /// Tera's error chain, one cause per line.
        message: String,
    },
}

fn chain(e: &tera::Error) -> String {
    let mut out = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// Every `*.tera` file under `dir` as (name, text): symlinked directories are not entered, at most
/// [`limits::MAX_DIR_DEPTH`] levels and [`limits::MAX_TEMPLATE_ENTRIES`] entries are looked at, and each
/// template must be a regular file of at most [`limits::MAX_TEMPLATE_BYTES`].
fn collect(dir: &Path) -> Result<Vec<(String, String)>, TemplateError> {
    let unusable = |why: String| TemplateError::Unusable {
        dir: dir.to_path_buf(),
        why,
    };
    let mut out = Vec::new();
    let mut seen = 0usize;
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|e| unusable(format!("{}: {e}", d.display())))?;
        for e in rd.flatten() {
            seen += 1;
            if seen > limits::MAX_TEMPLATE_ENTRIES {
                return Err(unusable(format!(
                    "more than {} entries; is it the templates directory?",
                    limits::MAX_TEMPLATE_ENTRIES
                )));
            }
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if depth + 1 >= limits::MAX_DIR_DEPTH {
                    return Err(unusable(format!(
                        "deeper than {} levels; is it the templates directory?",
                        limits::MAX_DIR_DEPTH
                    )));
                }
                stack.push((p, depth + 1));
            } else if p.extension().is_some_and(|x| x == "tera") {
                let rel = p.strip_prefix(dir).unwrap_or(&p);
                let name = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                let text = read::read_text(&p, limits::MAX_TEMPLATE_BYTES)
                    .map_err(|e| unusable(format!("template {name}: {e}")))?;
                out.push((name, text));
            }
        }
    }
    Ok(out)
}

/// Loads every `*.tera` file under `dir` (bounded, see [`collect`]).
pub fn load(dir: &Path) -> Result<tera::Tera, TemplateError> {
    if !dir.is_dir() {
        return Err(TemplateError::NoDir {
            dir: dir.to_path_buf(),
        });
    }
    let files = collect(dir)?;
    let mut t = tera::Tera::default();
    t.add_raw_templates(files)
        .map_err(|e| TemplateError::Render {
            name: dir.display().to_string(),
            message: chain(&e),
        })?;
    t.autoescape_on(Vec::new());
    Ok(t)
}

/// Names of every template under `dir`, sorted.
pub fn list(dir: &Path) -> Result<Vec<String>, TemplateError> {
    let t = load(dir)?;
    let mut names: Vec<String> = t.get_template_names().map(str::to_string).collect();
    names.sort();
    Ok(names)
}

/// Renders template `name` (relative to `dir`, e.g. `qpidd/qpidd.conf.tera`) with `context`.
pub fn render(dir: &Path, name: &str, context: &tera::Context) -> Result<String, TemplateError> {
    let t = load(dir)?;
    render_with(&t, dir, name, context)
}

/// Renders `name` with an already loaded set of templates.
pub fn render_with(
    t: &tera::Tera,
    dir: &Path,
    name: &str,
    context: &tera::Context,
) -> Result<String, TemplateError> {
    if !t.get_template_names().any(|n| n == name) {
        let mut names: Vec<&str> = t.get_template_names().collect();
        names.sort();
        return Err(TemplateError::NotFound {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            available: names.join(", "),
        });
    }
    t.render(name, context).map_err(|e| TemplateError::Render {
        name: name.to_string(),
        message: chain(&e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_reports_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("svc")).expect("mkdir");
        std::fs::write(dir.path().join("svc/a.conf.tera"), "host={{ host }}\n").expect("write");
        let mut ctx = tera::Context::new();
        ctx.insert("host", "h1");
        assert_eq!(
            render(dir.path(), "svc/a.conf.tera", &ctx).expect("renders"),
            "host=h1\n"
        );
        let err = render(dir.path(), "svc/b.conf.tera", &ctx).expect_err("missing");
        assert!(err.to_string().contains("svc/a.conf.tera"), "{err}");
        let err = render(dir.path(), "svc/a.conf.tera", &tera::Context::new())
            .expect_err("undefined var");
        assert!(err.to_string().contains("host"), "{err}");
    }

    #[test]
    fn refuses_huge_directories_and_fifos() {
        let err = list(Path::new("/")).expect_err("the root is no templates directory");
        assert!(
            err.to_string().contains("is it the templates directory"),
            "{err}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("x.tera");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let err = list(dir.path()).expect_err("a FIFO is not a template");
            assert!(err.to_string().contains("FIFO"), "{err}");
        }
    }
}
