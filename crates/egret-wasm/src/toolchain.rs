//! `egret handler build`: turns a handler written in JavaScript, TypeScript or Python into a
//! component for the handler world, by running the language's component toolchain
//! (componentize-js with esbuild, componentize-py) on the SDK of `handlers-wasm/sdk-js` /
//! `handlers-wasm/sdk-py` and the WIT, all embedded in this crate so an installed egret needs
//! no checkout.
//!
//! It installs nothing: a missing toolchain is an error naming the package and the command
//! that installs it. Everything generated (bundle, bindings, entry point) lives in a temporary
//! directory removed afterwards; the toolchain's own caches stay where the toolchain keeps
//! them (npm's in `~/.npm`, pip's in `~/.cache/pip`).
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The WIT the components are built against (the newest world).
const WIT: &str = include_str!("../../../handlers-wasm/wit/handler.wit");
const SDK_JS: &str = include_str!("../../../handlers-wasm/sdk-js/egret-handler.js");
const BUILD_JS: &str = include_str!("../../../handlers-wasm/sdk-js/build.mjs");
const SDK_PY: &str = include_str!("../../../handlers-wasm/sdk-py/egret_handler.py");

/// The npm packages of the JavaScript/TypeScript toolchain, at the versions egret is tested
/// with.
pub const JS_PACKAGES: &[&str] = &["@bytecodealliance/componentize-js@0.23.0", "esbuild@0.25.0"];
/// The PyPI package of the Python toolchain, at the version egret is tested with.
pub const PY_PACKAGE: &str = "componentize-py==0.25.1";

/// The file name the Python handler is built under (its own name need not be an identifier).
const PY_USER_MODULE_FILE: &str = "egret_user_handler.py";

/// The handler's language, from its file name.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Language {
    /// `.js` / `.mjs`.
    JavaScript,
    /// `.ts` / `.mts`: types stripped by esbuild before componentize-js.
    TypeScript,
    /// `.py`.
    Python,
}

impl Language {
    /// The language of `path`, by extension.
    pub fn of(path: &Path) -> Result<Language, BuildError> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("js" | "mjs") => Ok(Language::JavaScript),
            Some("ts" | "mts") => Ok(Language::TypeScript),
            Some("py") => Ok(Language::Python),
            _ => Err(BuildError::UnknownLanguage(path.to_path_buf())),
        }
    }

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Language::JavaScript => "JavaScript",
            Language::TypeScript => "TypeScript",
            Language::Python => "Python",
        }
    }
}

/// Why a build failed. Every message names the file or the missing tool and the fix.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Not a file `egret handler build` knows.
    #[error(
        "{}: unknown handler language: expected a .js, .mjs, .ts, .mts or .py file \
         (a Rust handler is built with `cargo build --release --target wasm32-wasip2`)",
        .0.display()
    )]
    UnknownLanguage(PathBuf),
    /// The source cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A program or package of the toolchain is not installed.
    #[error("missing {what}; install with: {install}")]
    Missing {
        /// The program or package.
        what: String,
        /// The command that installs it.
        install: String,
    },
    /// The toolchain ran and refused the handler (syntax error, missing `handle`, ...).
    #[error("{} failed to build {}:\n{output}", tool, path.display())]
    Toolchain {
        /// Which tool.
        tool: &'static str,
        /// The handler source.
        path: PathBuf,
        /// What the tool printed (trimmed).
        output: String,
    },
    /// Local I/O (temporary directory, output file).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// Where the toolchain lives.
#[derive(Clone, Debug)]
pub struct Toolchain {
    /// The npm prefix holding `node_modules/@bytecodealliance/componentize-js` and `esbuild`.
    pub js_prefix: PathBuf,
    /// The `node` program.
    pub node: OsString,
    /// The `componentize-py` program.
    pub componentize_py: OsString,
}

impl Toolchain {
    /// The toolchain from the environment: `EGRET_TOOLCHAIN_DIR` (else
    /// `$XDG_CACHE_HOME/egret/toolchain`, else `$HOME/.cache/egret/toolchain`) for the npm
    /// packages; `node` and `componentize-py` from `PATH`.
    pub fn from_env() -> Toolchain {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let js_prefix = default_prefix(
            var("EGRET_TOOLCHAIN_DIR"),
            var("XDG_CACHE_HOME"),
            var("HOME"),
        );
        Toolchain {
            js_prefix,
            node: "node".into(),
            componentize_py: "componentize-py".into(),
        }
    }

    /// The command that installs the npm packages into this prefix.
    pub fn npm_install_command(&self) -> String {
        format!(
            "npm install --prefix {} {}",
            shell_quote(&self.js_prefix.display().to_string()),
            JS_PACKAGES.join(" ")
        )
    }
}

fn default_prefix(
    explicit: Option<OsString>,
    xdg_cache: Option<OsString>,
    home: Option<OsString>,
) -> PathBuf {
    if let Some(d) = explicit {
        return d.into();
    }
    let cache = match (xdg_cache, home) {
        (Some(x), _) => PathBuf::from(x),
        (None, Some(h)) => PathBuf::from(h).join(".cache"),
        (None, None) => std::env::temp_dir(),
    };
    cache.join("egret").join("toolchain")
}

fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-~+=:@".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The npm packages (by directory under `node_modules`) missing from `prefix`.
fn missing_js_packages(prefix: &Path) -> Vec<&'static str> {
    JS_PACKAGES
        .iter()
        .map(|spec| spec.rsplit_once('@').map_or(*spec, |(name, _)| name))
        .filter(|name| {
            !prefix
                .join("node_modules")
                .join(name)
                .join("package.json")
                .is_file()
        })
        .collect()
}

/// What a build produced.
#[derive(Debug)]
pub struct Built {
    /// The language the source was taken for.
    pub language: Language,
    /// The component.
    pub component: Vec<u8>,
}

/// Builds the handler at `source` into a component (not yet written anywhere).
pub fn build(source: &Path, toolchain: &Toolchain) -> Result<Built, BuildError> {
    let language = Language::of(source)?;
    let source = std::fs::canonicalize(source).map_err(|e| BuildError::Read {
        path: source.to_path_buf(),
        source: e,
    })?;
    std::fs::metadata(&source)
        .and_then(|m| {
            if m.is_file() {
                Ok(())
            } else {
                Err(std::io::Error::other("not a file"))
            }
        })
        .map_err(|e| BuildError::Read {
            path: source.clone(),
            source: e,
        })?;
    let work = tempfile::Builder::new()
        .prefix("egret-handler-build-")
        .tempdir()
        .map_err(|e| io("cannot create a temporary directory", e))?;
    let out = work.path().join("out.wasm");
    match language {
        Language::JavaScript | Language::TypeScript => {
            build_js(&source, toolchain, work.path(), &out)?
        }
        Language::Python => build_py(&source, toolchain, work.path(), &out)?,
    }
    let component = std::fs::read(&out).map_err(|e| io("cannot read the built component", e))?;
    Ok(Built {
        language,
        component,
    })
}

fn io(what: &str, source: std::io::Error) -> BuildError {
    BuildError::Io {
        what: what.to_owned(),
        source,
    }
}

fn write(path: &Path, text: &str) -> Result<(), BuildError> {
    std::fs::write(path, text).map_err(|e| io(&format!("cannot write {}", path.display()), e))
}

/// Runs `cmd`; its combined output becomes the error when it fails. A program that is not
/// there is `missing`.
fn run(
    mut cmd: Command,
    tool: &'static str,
    source: &Path,
    missing: impl FnOnce() -> BuildError,
) -> Result<(), BuildError> {
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
        Err(e) => return Err(io(&format!("cannot run {tool}"), e)),
    };
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    // The Python toolchain sees the handler under a fixed module name: name the user's file.
    let text = text.replace(PY_USER_MODULE_FILE, &source.display().to_string());
    Err(BuildError::Toolchain {
        tool,
        path: source.to_path_buf(),
        output: tidy_output(&text),
    })
}

/// Keeps a tool's output readable: trimmed, at most the last 60 lines.
fn tidy_output(text: &str) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    let skip = lines.len().saturating_sub(60);
    lines[skip..].join("\n")
}

fn build_js(source: &Path, tc: &Toolchain, work: &Path, out: &Path) -> Result<(), BuildError> {
    let missing = missing_js_packages(&tc.js_prefix);
    if !missing.is_empty() {
        return Err(BuildError::Missing {
            what: format!(
                "the npm package{} {} (looked in {})",
                if missing.len() > 1 { "s" } else { "" },
                missing.join(", "),
                tc.js_prefix.join("node_modules").display()
            ),
            install: format!(
                "{}   (or set EGRET_TOOLCHAIN_DIR to the npm prefix that has them)",
                tc.npm_install_command()
            ),
        });
    }
    // Bare imports of the driver resolve through this link to the toolchain's packages.
    #[cfg(unix)]
    std::os::unix::fs::symlink(tc.js_prefix.join("node_modules"), work.join("node_modules"))
        .map_err(|e| io("cannot link the toolchain's node_modules", e))?;
    let (sdk, wit, driver) = (
        work.join("egret-handler.js"),
        work.join("handler.wit"),
        work.join("build.mjs"),
    );
    write(&sdk, SDK_JS)?;
    write(&wit, WIT)?;
    write(&driver, BUILD_JS)?;
    let mut cmd = Command::new(&tc.node);
    cmd.arg(&driver)
        .arg(source)
        .arg(&sdk)
        .arg(&wit)
        .arg(work)
        .arg(out)
        .current_dir(work);
    run(cmd, "componentize-js", source, || BuildError::Missing {
        what: format!("node ({})", tc.node.to_string_lossy()),
        install: "apt-get install nodejs npm   (Node.js 18 or newer)".into(),
    })
}

fn build_py(source: &Path, tc: &Toolchain, work: &Path, out: &Path) -> Result<(), BuildError> {
    let missing = || BuildError::Missing {
        what: format!(
            "{} (PyPI package {PY_PACKAGE})",
            tc.componentize_py.to_string_lossy()
        ),
        install: format!("python3 -m pip install {PY_PACKAGE}"),
    };
    let wit = work.join("handler.wit");
    write(&wit, WIT)?;
    let app = work.join("app");
    std::fs::create_dir(&app).map_err(|e| io("cannot create the app directory", e))?;
    let mut bindings = Command::new(&tc.componentize_py);
    bindings
        .arg("-d")
        .arg(&wit)
        .args(["-w", "handler", "bindings"])
        .arg(&app)
        .env("RUST_BACKTRACE", "0");
    run(bindings, "componentize-py", source, missing)?;
    write(&app.join("egret_handler.py"), SDK_PY)?;
    // A fixed module name: the handler's file name need not be a Python identifier
    // (get-only.py); its directory is on the path too, for its own imports.
    let user_code = std::fs::read_to_string(source).map_err(|e| BuildError::Read {
        path: source.to_path_buf(),
        source: e,
    })?;
    write(&app.join(PY_USER_MODULE_FILE), &user_code)?;
    write(
        &app.join("egret_app.py"),
        "import wit_world\nimport egret_handler\nimport egret_user_handler\n\n\n\
         class WitWorld(egret_handler._exports(egret_user_handler), wit_world.WitWorld):\n    pass\n",
    )?;
    let mut cmd = Command::new(&tc.componentize_py);
    cmd.arg("-d")
        .arg(&wit)
        .args(["-w", "handler", "componentize", "-p"])
        .arg(&app);
    if let Some(dir) = source.parent() {
        cmd.arg("-p").arg(dir);
    }
    // componentize-py's own Rust backtrace would bury the Python error.
    cmd.arg("egret_app")
        .arg("-o")
        .arg(out)
        .current_dir(work)
        .env("RUST_BACKTRACE", "0");
    run(cmd, "componentize-py", source, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_by_extension() {
        assert_eq!(
            Language::of(Path::new("a/get-only.ts")).unwrap(),
            Language::TypeScript
        );
        assert_eq!(
            Language::of(Path::new("x.mjs")).unwrap(),
            Language::JavaScript
        );
        assert_eq!(
            Language::of(Path::new("get_only.py")).unwrap(),
            Language::Python
        );
        let e = Language::of(Path::new("lib.rs")).unwrap_err().to_string();
        assert!(e.contains("lib.rs") && e.contains("wasm32-wasip2"), "{e}");
        assert!(Language::of(Path::new("noext")).is_err());
    }

    #[test]
    fn prefix_order() {
        let p = default_prefix(Some("/opt/tc".into()), Some("/x".into()), Some("/h".into()));
        assert_eq!(p, PathBuf::from("/opt/tc"));
        let p = default_prefix(None, Some("/x".into()), Some("/h".into()));
        assert_eq!(p, PathBuf::from("/x/egret/toolchain"));
        let p = default_prefix(None, None, Some("/h".into()));
        assert_eq!(p, PathBuf::from("/h/.cache/egret/toolchain"));
    }

    #[test]
    fn missing_packages_name_the_install_command() {
        let dir = tempfile::tempdir().unwrap();
        let tc = Toolchain {
            js_prefix: dir.path().join("has space"),
            node: "node".into(),
            componentize_py: "componentize-py".into(),
        };
        let src = dir.path().join("h.js");
        std::fs::write(&src, "export function handle() {}").unwrap();
        let e = build(&src, &tc).unwrap_err().to_string();
        assert!(
            e.contains("@bytecodealliance/componentize-js, esbuild"),
            "{e}"
        );
        assert!(
            e.contains("npm install --prefix '") && e.contains("componentize-js@0.23.0"),
            "{e}"
        );
        // One package present: only the other is named.
        let esb = tc.js_prefix.join("node_modules/esbuild");
        std::fs::create_dir_all(&esb).unwrap();
        std::fs::write(esb.join("package.json"), "{}").unwrap();
        assert_eq!(
            missing_js_packages(&tc.js_prefix),
            ["@bytecodealliance/componentize-js"]
        );
    }

    #[test]
    fn missing_componentize_py_names_pip() {
        let dir = tempfile::tempdir().unwrap();
        let tc = Toolchain {
            js_prefix: dir.path().into(),
            node: "node".into(),
            componentize_py: dir.path().join("no-such-componentize-py").into(),
        };
        let src = dir.path().join("h.py");
        std::fs::write(&src, "def handle(req, ctx): pass\n").unwrap();
        let e = build(&src, &tc).unwrap_err().to_string();
        assert!(
            e.contains("python3 -m pip install componentize-py==0.25.1"),
            "{e}"
        );
    }

    #[test]
    fn output_keeps_the_tail() {
        let long: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let t = tidy_output(&long);
        assert!(t.starts_with("line 40") && t.ends_with("line 99"), "{t}");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/root/.cache/egret"), "/root/.cache/egret");
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}
