//! Tera rendering of the files under `templates/` (broker configs, service INI files, images).
//!
//! Templates are addressed by their path relative to the templates root, e.g. `qpidd/qpidd.conf.tera`
//! or `services/nova.conf.tera`. The whole tree is loaded so templates can `include` each other.

use std::path::{Path, PathBuf};

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

/// Loads every `*.tera` file under `dir`.
pub fn load(dir: &Path) -> Result<tera::Tera, TemplateError> {
    if !dir.is_dir() {
        return Err(TemplateError::NoDir {
            dir: dir.to_path_buf(),
        });
    }
    let glob = format!("{}/**/*.tera", dir.display());
    let mut t = tera::Tera::new(&glob).map_err(|e| TemplateError::Render {
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
}
