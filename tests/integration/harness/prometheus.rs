//! [`PrometheusServer`]: a real `prometheus` (Debian's package) on a free loopback port,
//! with its own temp dir for config and TSDB, killed on drop.
//!
//! It scrapes the given targets every second under `job="sessiongate"`, may load rule
//! files, and is ready when `/-/ready` answers 200. [`PrometheusServer::query`] runs an
//! instant query through the HTTP API.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::eventually::pause;
use super::ports::free_port;

/// A running Prometheus server.
pub(crate) struct PrometheusServer {
    port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl PrometheusServer {
    /// Starts Prometheus scraping `targets` (`host:port`, path `/metrics`) every second
    /// under `job="sessiongate"`, with `rule_files` loaded, and waits until it is ready.
    ///
    /// # Panics
    /// If `prometheus` is missing or does not become ready within 30 s (with its log).
    pub(crate) fn start(targets: &[String], rule_files: &[&Path]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sg-prometheus")
            .tempdir()
            .expect("temp dir");
        let rules: Vec<String> = rule_files
            .iter()
            .map(|p| format!("  - {:?}\n", p.display().to_string()))
            .collect();
        let targets: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{}\
             scrape_configs:\n  - job_name: sessiongate\n    static_configs:\n      - targets: [{}]\n",
            if rules.is_empty() {
                "  []\n".to_owned()
            } else {
                rules.concat()
            },
            targets.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write config");
        let mut server = PrometheusServer {
            port: 0,
            child: None,
            dir,
        };
        let mut last = String::new();
        for _ in 0..3 {
            server.port = free_port();
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(log) => {
                    last = log;
                    server.kill();
                }
            }
        }
        panic!("could not start prometheus:\n{last}");
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.path().join("prometheus.log"))
            .map_err(|e| e.to_string())?;
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run prometheus (apt-get install prometheus): {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let http = super::client();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("prometheus exited with {status}:\n{}", self.log()));
            }
            if http
                .get(self.url("/-/ready"))
                .send()
                .is_ok_and(|r| r.status() == 200)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("prometheus not ready in 30 s:\n{}", self.log()));
            }
            pause(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Runs an instant query and returns `data.result` (a vector of samples).
    ///
    /// # Panics
    /// If the API does not answer with `status: success`.
    pub(crate) fn query(&self, promql: &str) -> Vec<Value> {
        let resp: Value = super::client()
            .get(self.url("/api/v1/query"))
            .query(&[("query", promql)])
            .send()
            .unwrap_or_else(|e| panic!("query {promql}: {e}"))
            .json()
            .unwrap_or_else(|e| panic!("query {promql}: not JSON: {e}"));
        assert_eq!(resp["status"], "success", "query {promql}: {resp}");
        resp["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// `GET path` on the HTTP API, as JSON.
    ///
    /// # Panics
    /// If it does not answer JSON.
    pub(crate) fn api(&self, path: &str) -> Value {
        super::client()
            .get(self.url(path))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .json()
            .unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
    }

    /// The server's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("----- prometheus log -----\n{}", self.log());
        }
    }
}
