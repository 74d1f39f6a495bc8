//! Node.js packages under `examples/` for interop tests: `kafkajs` and the
//! Confluent registry client, clients nobody here wrote. Each package is
//! copied to `target/node-interop/<name>` and installed there with npm on
//! first use (once per test run, and again only when its `package.json`
//! changed), so the tests need no manual step and the source tree never
//! gets a `node_modules` or a lockfile.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock, PoisonError};

/// A Node package installed for a test: run its scripts with
/// `node <script>` in `dir`, as its README tells a user to.
#[derive(Debug, Clone)]
pub struct NodeApp {
    /// The `node` to run (found on `PATH`).
    pub node: PathBuf,
    /// The installed copy: the example's files and its `node_modules`.
    pub dir: PathBuf,
}

/// The oldest Node the examples support (`engines` in their package.json).
const MIN_NODE_MAJOR: u32 = 18;

static TOOLS: OnceLock<Result<(), String>> = OnceLock::new();
static INSTALLED: Mutex<BTreeMap<String, Result<PathBuf, String>>> = Mutex::new(BTreeMap::new());

/// `examples/consumers/node`, installed.
pub fn consumer_example() -> NodeApp {
    app("examples/consumers/node")
}

/// The Node package at `example` (a folder relative to the repository
/// root, holding a `package.json`), installed on first call.
pub fn app(example: &str) -> NodeApp {
    if let Err(e) = TOOLS.get_or_init(check_tools) {
        panic!("cannot run the Node interop tests: {e}");
    }
    // Held while installing: one npm per package per test run.
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = installed
        .entry(example.to_owned())
        .or_insert_with(|| install(example))
        .clone()
        .unwrap_or_else(|e| panic!("cannot install the Node package {example}: {e}"));
    NodeApp {
        node: PathBuf::from("node"),
        dir,
    }
}

fn check_tools() -> Result<(), String> {
    let missing = |tool: &str, e: &dyn std::fmt::Display| {
        format!(
            "`{tool}` is not on PATH ({e}); install Node.js {MIN_NODE_MAJOR} or later \
             with npm (https://nodejs.org, or Debian's `nodejs` and `npm` packages)"
        )
    };
    let out = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| missing("node", &e))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let major = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if major < MIN_NODE_MAJOR {
        return Err(format!(
            "node {version} is too old; the examples need {MIN_NODE_MAJOR} or later"
        ));
    }
    Command::new("npm")
        .arg("--version")
        .output()
        .map_err(|e| missing("npm", &e))?;
    Ok(())
}

fn install(example: &str) -> Result<PathBuf, String> {
    let source = super::repo_root().join(example);
    let manifest = std::fs::read(source.join("package.json"))
        .map_err(|e| format!("{}: {e}", source.join("package.json").display()))?;
    let root = super::repo_root().join("target").join("node-interop");
    let dir = root.join(example.trim_start_matches("examples/").replace('/', "-"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;

    // Parallel test processes (and `cargo test` runs in two terminals)
    // install into the same folder: one at a time.
    let lock_path = root.join(".install.lock");
    let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;

    copy_files(&source, &dir)?;
    // The package.json the installed node_modules were made from.
    let stamp = dir
        .join("node_modules")
        .join(".ferry-installed-package.json");
    let current = std::fs::read(&stamp).ok().as_deref() == Some(&manifest[..]);
    if !current {
        let mut npm = Command::new("npm");
        // `npm ci` when the example pins its whole tree in a lockfile;
        // otherwise `npm install` of the versions package.json pins.
        if source.join("package-lock.json").exists() {
            npm.arg("ci");
        } else {
            npm.arg("install");
        }
        npm.args(["--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir);
        run(&mut npm)?;
        std::fs::write(&stamp, &manifest).map_err(|e| format!("{}: {e}", stamp.display()))?;
    }
    drop(lock);
    Ok(dir)
}

/// Copies the example's files (not folders: never its own `node_modules`).
fn copy_files(from: &Path, to: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", from.display()))?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            let target = to.join(entry.file_name());
            std::fs::copy(entry.path(), &target).map_err(|e| {
                format!(
                    "copy {} to {}: {e}",
                    entry.path().display(),
                    target.display()
                )
            })?;
        }
    }
    Ok(())
}

fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
