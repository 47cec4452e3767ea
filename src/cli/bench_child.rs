//! A `trailkeep serve` child process for the benchmarks (`bench e2e`,
//! `bench postgres`): this binary started again with `--config FILE serve`
//! on port 0, its port learnt from its "trailkeep serving" log line, its
//! log kept in a file, and the process stopped on every way out (a
//! graceful stop when asked, `SIGKILL` and a reap when dropped, errors and
//! panics included).
//!
//! Not a supervisor: nothing is restarted, and a child that exits is an
//! error for the caller to report.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a child may take to print its "trailkeep serving" line
/// (PostgreSQL migrations run before it).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a start or a stop is checked on.
const POLL: Duration = Duration::from_millis(20);

/// What to start.
pub(super) struct ServeSpec<'a> {
    /// The config file (`--config`).
    pub config: &'a Path,
    /// The data directory (`--data-dir`).
    pub data_dir: &'a Path,
    /// Where the child's stderr (its log) goes.
    pub log: &'a Path,
    /// Extra environment variables.
    pub env: &'a [(&'a str, &'a str)],
}

/// A child process, killed (`SIGKILL`) and reaped when dropped: on every
/// path out of a run, errors and panics included.
pub(super) struct KillOnDrop(pub(super) std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `serve` child: killed and reaped when dropped.
pub(super) struct ServeChild {
    child: KillOnDrop,
    log: PathBuf,
    /// `http://127.0.0.1:PORT`, from its "trailkeep serving" line.
    pub url: String,
}

impl ServeChild {
    /// Starts `serve` as `spec` says and returns once it serves.
    ///
    /// # Errors
    /// The binary cannot be started, the child exits before it serves
    /// (with its log's last lines), or it does not serve within a minute.
    pub(super) async fn start(spec: &ServeSpec<'_>) -> anyhow::Result<Self> {
        let exe =
            std::env::current_exe().map_err(|e| anyhow::anyhow!("this binary's path: {e}"))?;
        let mut cmd = std::process::Command::new(&exe);
        // The child runs on its config file alone, whatever this process
        // was started with (TRAILKEEP_STORE, TRAILKEEP_JSON, …).
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TRAILKEEP_") {
                cmd.env_remove(k);
            }
        }
        let log = std::fs::File::create(spec.log)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", spec.log.display()))?;
        let child = cmd
            .arg("--data-dir")
            .arg(spec.data_dir)
            .arg("--config")
            .arg(spec.config)
            .args(["serve", "--listen", "127.0.0.1:0"])
            // The "serving" line is at info; everything else only when it
            // matters.
            .env("RUST_LOG", "warn,trailkeep::server=info")
            .env("NO_COLOR", "1")
            .envs(spec.env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {} serve: {e}", exe.display()))?;
        let mut me = Self {
            child: KillOnDrop(child),
            log: spec.log.to_owned(),
            url: String::new(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            me.check()?;
            let text = std::fs::read_to_string(&me.log).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .filter(|l| l.contains("trailkeep serving"))
                .find_map(serving_addr)
            {
                me.url = format!("http://{addr}");
                return Ok(me);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "trailkeep serve did not start serving within {} s; its log ({}):\n{}",
                START_TIMEOUT.as_secs(),
                me.log.display(),
                log_tail(&me.log)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The child's process id.
    pub(super) fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Returns an error (with its log's last lines) if the child exited.
    ///
    /// # Errors
    /// The child is no longer running.
    pub(super) fn check(&mut self) -> anyhow::Result<()> {
        match self.child.0.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => anyhow::bail!(
                "trailkeep serve (pid {}) exited ({status}); its log ({}):\n{}",
                self.child.0.id(),
                self.log.display(),
                log_tail(&self.log)
            ),
            Err(e) => anyhow::bail!("trailkeep serve (pid {}): {e}", self.child.0.id()),
        }
    }

    /// Stops the child as an operator would (`SIGTERM`: in-flight requests
    /// finish, leases are released), `SIGKILL` after `grace`.
    pub(super) async fn stop(mut self, grace: Duration) {
        #[cfg(unix)]
        if let Some(pid) = i32::try_from(self.child.0.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !matches!(self.child.0.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        // Dropping `self.child` kills and reaps.
    }
}

/// The address in a "trailkeep serving … listen=127.0.0.1:PORT …" line.
fn serving_addr(line: &str) -> Option<&str> {
    let at = line.find("listen=")? + "listen=".len();
    let addr = line[at..].split_whitespace().next()?;
    let (_, port) = addr.rsplit_once(':')?;
    (port.parse::<u16>().ok()? != 0).then_some(addr)
}

/// The last lines of a child's log, for an error.
pub(super) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_addr_reads_the_listen_field() {
        let line = "2026-12-03T05:00:00.000000Z  INFO trailkeep::server: trailkeep serving listen=127.0.0.1:40123 tls=false data_dir=/tmp/x";
        assert_eq!(serving_addr(line), Some("127.0.0.1:40123"));
        assert_eq!(serving_addr("trailkeep serving listen=127.0.0.1:0"), None);
        assert_eq!(serving_addr("trailkeep serving"), None);
    }
}
