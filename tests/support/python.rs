//! Python's `confluent-kafka` (librdkafka's official Python binding) for
//! interop tests: a client nobody here wrote. Installed from PyPI into a
//! virtualenv under `target/` on first use, so the tests need no manual step.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// Python packages the interop tests use.
/// `[avro]` brings the Schema Registry client, AvroSerializer and AvroDeserializer.
const PACKAGES: &[&str] = &["confluent-kafka[avro]==2.16.1"];

static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
static INSTALL: Mutex<()> = Mutex::new(());

/// The virtualenv's `python`, created and provisioned on first call.
pub fn python() -> PathBuf {
    let _guard = INSTALL.lock();
    PYTHON
        .get_or_init(provision)
        .clone()
        .unwrap_or_else(|e| panic!("cannot provision Python for interop tests: {e}"))
}

fn provision() -> Result<PathBuf, String> {
    let venv = super::repo_root().join("target").join("py-interop");
    let py = venv.join("bin").join("python");
    if !py.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    let have = Command::new(&py)
        .args([
            "-c",
            "import confluent_kafka, fastavro, confluent_kafka.schema_registry.avro",
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have {
        run(Command::new(&py)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PACKAGES))?;
    }
    Ok(py)
}

fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs a Python script with the virtualenv's interpreter; panics with its
/// output unless it exits 0. Returns stdout.
pub fn run_script(script: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python script failed ({})\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
