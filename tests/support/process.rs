//! The `ferry` binary as a child process.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `ferry` with its stdout and stderr collected in the background.
pub struct FerryProcess {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

/// The outcome of a `ferry` command run to completion.
#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl FerryProcess {
    /// Starts `bin args...` in `cwd` with extra `env`.
    pub fn spawn(bin: &Path, args: &[&str], cwd: &Path, env: &[(&str, String)]) -> Self {
        Self::spawn_with_stdin(bin, args, cwd, env, None)
    }

    /// Like [`spawn`](Self::spawn), writing `stdin` to the child's standard
    /// input and closing it.
    pub fn spawn_with_stdin(
        bin: &Path,
        args: &[&str],
        cwd: &Path,
        env: &[(&str, String)],
        stdin: Option<&str>,
    ) -> Self {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .current_dir(cwd)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            let text = text.to_owned();
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = pipe.write_all(text.as_bytes());
            });
        }
        let stdout = collect(child.stdout.take());
        let stderr = collect(child.stderr.take());
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// Runs to completion (at most `timeout`) and returns code and output.
    pub fn run(
        bin: &Path,
        args: &[&str],
        cwd: &Path,
        env: &[(&str, String)],
        timeout: Duration,
    ) -> Finished {
        Self::run_with_stdin(bin, args, cwd, env, None, timeout)
    }

    /// [`run`](Self::run) with `stdin` fed to the child.
    pub fn run_with_stdin(
        bin: &Path,
        args: &[&str],
        cwd: &Path,
        env: &[(&str, String)],
        stdin: Option<&str>,
        timeout: Duration,
    ) -> Finished {
        let mut p = Self::spawn_with_stdin(bin, args, cwd, env, stdin);
        let status = p.wait(timeout);
        p.finished(status)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until stdout contains `needle`; panics with the output if the
    /// process exits first or `timeout` passes.
    pub fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.stdout().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "ferry exited ({status}) before printing {needle:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "ferry did not print {needle:?} within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
    }

    /// Sends a signal by name (`INT`, `TERM`, `KILL`).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{name} {} failed", self.pid());
    }

    /// Waits for exit; kills the process and panics after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "ferry did not exit within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGINT and waits for a clean exit; returns the exit code.
    pub fn interrupt(&mut self, timeout: Duration) -> Option<i32> {
        self.signal("INT");
        self.wait(timeout).code()
    }

    fn finished(&self, status: ExitStatus) -> Finished {
        Finished {
            code: status.code(),
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for FerryProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn collect<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    if let Some(pipe) = pipe {
        let sink = buf.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
    }
    buf
}
