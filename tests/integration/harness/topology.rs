//! Distributed Redis topologies on loopback: [`RedisCluster`] (three masters, optionally
//! each with a replica) and [`RedisSentinel`] (a master, a replica and one or more
//! sentinels that can fail over).
//!
//! Every node is a [`RedisServer`] (its own port, temp dir, log, kill on drop); each
//! sentinel is one more `redis-server --sentinel` process with a config file in its own
//! temp dir. Constructors wait until the topology is usable (cluster state `ok` and every
//! replica in sync; every sentinel knows the master and its replica), so tests start from
//! a known state.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::eventually::assert_eventually;
use super::ports::free_port;
use super::redis::RedisServer;

/// Three cluster-enabled masters sharing the 16384 slots, and their replicas if asked.
pub(crate) struct RedisCluster {
    /// Every node, in the order given to `--cluster create` (which makes the first three
    /// the masters); roles change on failover: see [`RedisCluster::masters`].
    pub(crate) nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three masters, joins them with `redis-cli --cluster create` and waits until
    /// every node reports `cluster_state:ok`.
    ///
    /// # Panics
    /// If the cluster does not form within 20 s.
    pub(crate) fn start() -> Self {
        Self::start_with(0, 2000, &[])
    }

    /// Three masters with `replicas` replicas each (`--cluster-replicas`), the given
    /// `cluster-node-timeout` (how long a master may be unreachable before its replica
    /// takes over) and `extra` arguments for every node (e.g.
    /// `["--cluster-require-full-coverage", "no"]`). Waits until every node reports
    /// `cluster_state:ok` and every replica is in sync with its master.
    ///
    /// # Panics
    /// If the cluster does not form within 30 s.
    pub(crate) fn start_with(replicas: usize, node_timeout_ms: u64, extra: &[&str]) -> Self {
        let timeout = node_timeout_ms.to_string();
        let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
            .map(|_| {
                let mut args = vec![
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    &timeout,
                ];
                args.extend_from_slice(extra);
                RedisServer::start_with(&args)
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
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
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
            Duration::from_secs(30),
            "the cluster did not reach cluster_state:ok"
        );
        assert_eventually!(
            cluster.masters().len() == 3
                && cluster.nodes.iter().all(|n| {
                    let info = n.cli(&["INFO", "replication"]);
                    info.contains("role:master") || info.contains("master_link_status:up")
                }),
            Duration::from_secs(30),
            "the cluster's replicas did not sync"
        );
        cluster
    }

    /// The indexes (in [`RedisCluster::nodes`]) of the nodes that are masters now.
    pub(crate) fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.is_master(i))
            .collect()
    }

    /// Whether node `i` answers and says it is a master.
    pub(crate) fn is_master(&self, i: usize) -> bool {
        role(&self.nodes[i]).as_deref() == Some("master")
    }

    /// The index of the replica of master `i`, if it has one.
    pub(crate) fn replica_of(&self, i: usize) -> Option<usize> {
        let port = self.nodes[i].port().to_string();
        (0..self.nodes.len()).find(|&j| {
            j != i && {
                let info = self.nodes[j].cli(&["INFO", "replication"]);
                info.contains("role:slave") && info.contains(&format!("master_port:{port}"))
            }
        })
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

    /// `redis-cli -c` (follows MOVED redirects) against the first master that answers.
    ///
    /// # Panics
    /// If redis-cli cannot run or exits non-zero.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let port = self
            .masters()
            .first()
            .map_or_else(|| self.nodes[0].port(), |&i| self.nodes[i].port());
        let out = Command::new("redis-cli")
            .args(["-c", "-p", &port.to_string()])
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

    /// The index of the master that owns `key` (by asking each master whether it has it).
    pub(crate) fn owner_of(&self, key: &str) -> usize {
        self.masters()
            .into_iter()
            .find(|&i| self.nodes[i].cli(&["EXISTS", key]) == "1")
            .unwrap_or_else(|| panic!("no master holds {key}"))
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

/// The first line of `ROLE` (`master`, `slave`), or `None` when the node does not answer.
fn role(node: &RedisServer) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &node.port().to_string(), "ROLE"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status
        .success()
        .then(|| text.lines().next().map(|l| l.trim().to_owned()))
        .flatten()
}

/// A master, one replica of it, and sentinels monitoring them as `mymaster` (down after
/// 1 s), so that stopping the master fails over to the replica. [`RedisSentinel::start`]
/// has one sentinel (quorum 1); [`RedisSentinel::start_with`] any number.
pub(crate) struct RedisSentinel {
    /// The initial master.
    pub(crate) master: RedisServer,
    /// Its replica, promoted on failover.
    pub(crate) replica: RedisServer,
    sentinels: Vec<Sentinel>,
    quorum: usize,
    /// The sentinels' own password (`requirepass`), when they have one.
    password: Option<String>,
}

/// One `redis-server --sentinel` process.
struct Sentinel {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

/// The service name the sentinels monitor.
pub(crate) const SENTINEL_SERVICE: &str = "mymaster";

impl RedisSentinel {
    /// Starts a master, its replica and one sentinel (quorum 1), and waits until the
    /// sentinel sees the replica.
    ///
    /// # Panics
    /// If the topology does not form within 20 s.
    pub(crate) fn start() -> Self {
        Self::start_with(1, 1)
    }

    /// Like [`RedisSentinel::start`], but the sentinel requires `password` (its own, not
    /// the servers'), and [`RedisSentinel::url`] passes it as `sentinelPassword`.
    ///
    /// # Panics
    /// If the topology does not form within 20 s.
    pub(crate) fn start_with_password(password: &str) -> Self {
        Self::form(1, 1, Some(password.to_owned()))
    }

    /// Starts a master, its replica and `sentinels` sentinels agreeing with `quorum`, and
    /// waits until every sentinel sees the replica and the other sentinels.
    ///
    /// # Panics
    /// If the topology does not form within 20 s.
    pub(crate) fn start_with(sentinels: usize, quorum: usize) -> Self {
        Self::form(sentinels, quorum, None)
    }

    fn form(sentinels: usize, quorum: usize, password: Option<String>) -> Self {
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
        let mut s = RedisSentinel {
            master,
            replica,
            sentinels: Vec::new(),
            quorum,
            password,
        };
        for _ in 0..sentinels {
            s.add_sentinel();
        }
        let others = sentinels.saturating_sub(1);
        assert_eventually!(
            others == 0
                || (0..s.sentinels.len()).all(|i| {
                    s.cli_of(i, &["SENTINEL", "SENTINELS", SENTINEL_SERVICE])
                        .is_some_and(|r| r.matches("127.0.0.1").count() >= others)
                }),
            Duration::from_secs(20),
            "the sentinels did not discover each other:\n{}",
            s.sentinel_log()
        );
        s
    }

    fn add_sentinel(&mut self) {
        let dir = tempfile::Builder::new()
            .prefix("sg-sentinel")
            .tempdir()
            .expect("temp dir");
        let mut sentinel = Sentinel {
            child: None,
            port: 0,
            dir,
        };
        for _ in 0..5 {
            sentinel.port = free_port();
            sentinel.spawn(self.master.port(), self.quorum, self.password.as_deref());
            let ready = super::eventually::poll(
                || {
                    cli_at(
                        sentinel.port,
                        self.password.as_deref(),
                        &["SENTINEL", "REPLICAS", SENTINEL_SERVICE],
                    )
                    .is_some_and(|r| r.contains(&self.replica.port().to_string()))
                },
                Duration::from_secs(20),
            );
            if ready.is_ok() {
                self.sentinels.push(sentinel);
                return;
            }
            sentinel.kill();
        }
        panic!("a sentinel did not come up:\n{}", sentinel.log());
    }

    /// fred's sentinel URL: `redis-sentinel://127.0.0.1:SENTINEL/0?sentinelServiceName=…`,
    /// with `&node=127.0.0.1:PORT` for every other sentinel and `&sentinelPassword=…` when
    /// the sentinels have a password.
    pub(crate) fn url(&self) -> String {
        let mut url = format!(
            "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName={SENTINEL_SERVICE}",
            self.sentinels[0].port
        );
        for s in &self.sentinels[1..] {
            url.push_str(&format!("&node=127.0.0.1:{}", s.port));
        }
        if let Some(password) = &self.password {
            url.push_str(&format!("&sentinelPassword={password}"));
        }
        url
    }

    /// The port of the master as the first sentinel that answers sees it.
    pub(crate) fn master_port(&self) -> Option<u16> {
        let reply =
            self.sentinel_cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE])?;
        reply.lines().nth(1)?.trim().parse().ok()
    }

    /// Sends a command to the first sentinel that answers; `None` when none does.
    pub(crate) fn sentinel_cli(&self, args: &[&str]) -> Option<String> {
        (0..self.sentinels.len()).find_map(|i| self.cli_of(i, args))
    }

    fn cli_of(&self, i: usize, args: &[&str]) -> Option<String> {
        cli_at(self.sentinels[i].port, self.password.as_deref(), args)
    }

    /// Every sentinel's log so far.
    pub(crate) fn sentinel_log(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("--- sentinel {} ---\n{}", s.port, s.log()))
            .collect()
    }
}

/// `redis-cli -p port [--pass password] ARGS`; `None` when it fails or answers an error
/// or nothing.
fn cli_at(port: u16, password: Option<&str>, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(
            password
                .map(|p| ["--no-auth-warning", "--pass", p])
                .iter()
                .flatten(),
        )
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.starts_with("ERR") && !text.is_empty()).then_some(text)
}

impl Sentinel {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sentinel.log")).unwrap_or_default()
    }

    fn spawn(&mut self, master: u16, quorum: usize, password: Option<&str>) {
        let conf = self.dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {master} {quorum}\n\
                 sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n\
                 sentinel failover-timeout {SENTINEL_SERVICE} 10000\n\
                 sentinel parallel-syncs {SENTINEL_SERVICE} 1\n{auth}",
                port = self.port,
                dir = self.dir.path().display(),
                auth = password.map_or(String::new(), |p| format!("requirepass {p}\n")),
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
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        for s in &mut self.sentinels {
            s.kill();
        }
        if std::thread::panicking() {
            eprintln!("----- sentinel logs -----\n{}", self.sentinel_log());
        }
    }
}
