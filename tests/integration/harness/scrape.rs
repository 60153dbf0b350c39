//! Reading one sample from a gateway's `/metrics` (Prometheus text format), for tests
//! that observe behaviour through counters.

use super::gateway::Gateway;
use super::raw;

/// The admin listener's `/metrics` text.
///
/// # Panics
/// If it cannot be fetched or is not 200.
pub(crate) fn metrics(gw: &Gateway) -> String {
    let resp = raw::get(gw.admin_addr(), "/metrics", &[]).expect("GET /metrics");
    assert_eq!(resp.status, 200, "GET /metrics");
    String::from_utf8_lossy(&resp.body).into_owned()
}

/// The value of the sample `name{labels}` in `text` (labels in any order, all of them
/// given), `None` when there is no such sample.
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let mut found: Vec<(&str, &str)> = label_text
                .split(',')
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k, v.trim_matches('"')))
                })
                .collect();
            let mut wanted = labels.to_vec();
            found.sort_unstable();
            wanted.sort_unstable();
            (found == wanted).then(|| value.parse().ok()).flatten()
        })
}

/// [`sample`] of the gateway's current metrics, 0 when absent.
pub(crate) fn value(gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(&metrics(gw), name, labels).unwrap_or(0.0)
}

#[test]
fn samples_are_found_by_name_and_labels() {
    let text = "# HELP x_total X.\n# TYPE x_total counter\nx_total{result=\"ok\"} 3\nx_total{result=\"error\"} 1\ny 2.5\nz{a=\"1\",b=\"2\"} 7\n";
    assert_eq!(sample(text, "x_total", &[("result", "ok")]), Some(3.0));
    assert_eq!(sample(text, "x_total", &[("result", "error")]), Some(1.0));
    assert_eq!(sample(text, "x_total", &[]), None);
    assert_eq!(sample(text, "y", &[]), Some(2.5));
    assert_eq!(sample(text, "z", &[("b", "2"), ("a", "1")]), Some(7.0));
    assert_eq!(sample(text, "z", &[("a", "1")]), None);
}
