//! Distributed Redis topologies on loopback: [`RedisCluster`] (three masters) and
//! [`RedisSentinel`] (a master, a replica and a sentinel that can fail over).
//!
//! Every node is a [`RedisServer`] (its own port, temp dir, log, kill on drop); the
//! sentinel is one more `redis-server --sentinel` process with a config file in its own
//! temp dir. Constructors wait until the topology is usable (cluster state `ok`; the
//! sentinel knows the master and its replica), so tests start from a known state.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::eventually::assert_eventually;
use super::ports::free_port;
use super::redis::RedisServer;

/// Three cluster-enabled masters sharing the 16384 slots, no replicas.
pub(crate) struct RedisCluster {
    /// The masters.
    pub(crate) nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three masters, joins them with `redis-cli --cluster create` and waits until
    /// every node reports `cluster_state:ok`.
    ///
    /// # Panics
    /// If the cluster does not form within 20 s.
    pub(crate) fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        assert_eventually!(
            cluster
                .nodes
                .iter()
                .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")),
            Duration::from_secs(20),
            "the cluster did not reach cluster_state:ok"
        );
        cluster
    }

    /// fred's cluster URL: `redis-cluster://first?node=second&node=third`.
    pub(crate) fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port());
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{}", n.port()));
        }
        url
    }

    /// `redis-cli -c` (follows MOVED redirects) against the first node.
    ///
    /// # Panics
    /// If redis-cli cannot run or exits non-zero.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-c", "-p", &self.nodes[0].port().to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli -c");
        assert!(
            out.status.success(),
            "redis-cli -c {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The index of the master that owns `key` (by asking each node whether it has it).
    pub(crate) fn owner_of(&self, key: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.cli(&["EXISTS", key]) == "1")
            .unwrap_or_else(|| panic!("no node holds {key}"))
    }

    /// `SET key json EX ttl`, routed to the owning master.
    pub(crate) fn set_session(&self, key: &str, json: &str, ttl_secs: u64) {
        let reply = self.cli(&["SET", key, json, "EX", &ttl_secs.to_string()]);
        assert_eq!(reply, "OK", "SET {key} failed");
    }

    /// `DEL key`, routed to the owning master.
    pub(crate) fn del(&self, key: &str) {
        self.cli(&["DEL", key]);
    }
}

/// A master, one replica of it, and one sentinel monitoring them as `mymaster`
/// (quorum 1, down after 1 s), so that stopping the master fails over to the replica.
pub(crate) struct RedisSentinel {
    /// The initial master.
    pub(crate) master: RedisServer,
    /// Its replica, promoted on failover.
    pub(crate) replica: RedisServer,
    sentinel: Option<Child>,
    sentinel_port: u16,
    dir: TempDir,
}

/// The service name the sentinel monitors.
pub(crate) const SENTINEL_SERVICE: &str = "mymaster";

impl RedisSentinel {
    /// Starts the three processes and waits until the sentinel sees the replica.
    ///
    /// # Panics
    /// If the topology does not form within 20 s.
    pub(crate) fn start() -> Self {
        let master = RedisServer::start();
        let replica =
            RedisServer::start_with(&["--replicaof", "127.0.0.1", &master.port().to_string()]);
        assert_eventually!(
            replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up"),
            Duration::from_secs(20),
            "the replica did not connect to its master"
        );
        let dir = tempfile::Builder::new()
            .prefix("sg-sentinel")
            .tempdir()
            .expect("temp dir");
        let mut s = RedisSentinel {
            master,
            replica,
            sentinel: None,
            sentinel_port: 0,
            dir,
        };
        for _ in 0..5 {
            s.sentinel_port = free_port();
            s.spawn_sentinel();
            let ready = super::eventually::poll(
                || {
                    s.sentinel_cli(&["SENTINEL", "REPLICAS", SENTINEL_SERVICE])
                        .is_some_and(|r| r.contains(&s.replica.port().to_string()))
                },
                Duration::from_secs(20),
            );
            if ready.is_ok() {
                return s;
            }
            s.kill_sentinel();
        }
        panic!("the sentinel did not come up:\n{}", s.sentinel_log());
    }

    /// fred's sentinel URL: `redis-sentinel://127.0.0.1:SENTINEL/0?sentinelServiceName=…`.
    pub(crate) fn url(&self) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName={SENTINEL_SERVICE}",
            self.sentinel_port
        )
    }

    /// The port of the master as the sentinel currently sees it.
    pub(crate) fn master_port(&self) -> Option<u16> {
        let reply =
            self.sentinel_cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE])?;
        reply.lines().nth(1)?.trim().parse().ok()
    }

    /// Sends a command to the sentinel; `None` when it does not answer.
    pub(crate) fn sentinel_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.sentinel_port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !text.starts_with("ERR") && !text.is_empty()).then_some(text)
    }

    /// The sentinel's log so far.
    pub(crate) fn sentinel_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sentinel.log")).unwrap_or_default()
    }

    fn spawn_sentinel(&mut self) {
        let conf = self.dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {master} 1\n\
                 sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n\
                 sentinel failover-timeout {SENTINEL_SERVICE} 10000\n\
                 sentinel parallel-syncs {SENTINEL_SERVICE} 1\n",
                port = self.sentinel_port,
                dir = self.dir.path().display(),
                master = self.master.port(),
            ),
        )
        .expect("write sentinel.conf");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("sentinel.log"))
            .expect("open sentinel log");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn redis-server --sentinel");
        self.sentinel = Some(child);
    }

    fn kill_sentinel(&mut self) {
        if let Some(mut child) = self.sentinel.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        self.kill_sentinel();
        if std::thread::panicking() {
            eprintln!(
                "----- sentinel log (port {}) -----\n{}",
                self.sentinel_port,
                self.sentinel_log()
            );
        }
    }
}
