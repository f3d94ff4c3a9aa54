//! Reading a kube-apiserver's own request counters from `/metrics`: the Kubernetes benchmarks
//! count lease requests on the server with it, beside their clients' own counts.

use std::collections::BTreeMap;

use kube::Client;

use super::Verbs;
use crate::Res;

/// What the server's `/metrics` says about lease requests.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// `apiserver_request_total{resource="leases",subresource=""}` summed over codes, by verb.
    pub requests: Verbs,
    /// `apiserver_longrunning_gauge{resource="leases",verb="WATCH"}`: watches open now.
    pub open_watches: i64,
}

/// The labels and value of one sample line `name{a="x",b="y"} value`, if it is `name`'s.
fn sample<'a>(line: &'a str, name: &str) -> Option<(BTreeMap<&'a str, &'a str>, f64)> {
    let rest = line.strip_prefix(name)?.strip_prefix('{')?;
    let (labels, value) = rest.rsplit_once('}')?;
    let value = value.split_whitespace().next()?.parse::<f64>().ok()?;
    let mut map = BTreeMap::new();
    // Label values here never contain `",`, so splitting on it is exact.
    for pair in labels.split("\",") {
        let (key, value) = pair.split_once("=\"")?;
        map.insert(key.trim(), value.trim_end_matches('"'));
    }
    Some((map, value))
}

/// The lease figures of a `/metrics` text.
fn parse_metrics(text: &str) -> Metrics {
    let mut metrics = Metrics::default();
    for line in text.lines() {
        if let Some((labels, value)) = sample(line, "apiserver_request_total") {
            if labels.get("resource") == Some(&"leases")
                && labels.get("subresource").is_none_or(|s| s.is_empty())
                && let Some(verb) = labels.get("verb")
            {
                // Counters are whole numbers, printed as floats.
                *metrics.requests.entry((*verb).to_owned()).or_default() += value.round() as u64;
            }
        } else if let Some((labels, value)) = sample(line, "apiserver_longrunning_gauge")
            && labels.get("resource") == Some(&"leases")
            && labels.get("verb") == Some(&"WATCH")
        {
            metrics.open_watches += value.round() as i64;
        }
    }
    metrics
}

/// Reads the server's metrics (a `GET /metrics`, not a lease request).
///
/// # Errors
///
/// The server did not answer, or its metrics have no request counters.
pub async fn scrape(admin: &Client) -> Res<Metrics> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let text = admin
        .request_text(request)
        .await
        .map_err(|e| format!("cannot read the server's /metrics: {e}"))?;
    let metrics = parse_metrics(&text);
    if !text.contains("apiserver_request_total") {
        return Err("the server's /metrics has no apiserver_request_total".to_owned());
    }
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_requests_are_summed_over_codes_by_verb() {
        let text = "\
# HELP apiserver_request_total Counter of apiserver requests
apiserver_request_total{code=\"200\",resource=\"leases\",subresource=\"\",verb=\"PUT\"} 3
apiserver_request_total{code=\"409\",resource=\"leases\",subresource=\"\",verb=\"PUT\"} 2
apiserver_request_total{code=\"200\",resource=\"configmaps\",subresource=\"\",verb=\"GET\"} 9
apiserver_longrunning_gauge{resource=\"leases\",verb=\"WATCH\"} 4
";
        let metrics = parse_metrics(text);
        assert_eq!(metrics.requests.get("PUT"), Some(&5));
        assert_eq!(metrics.requests.get("GET"), None);
        assert_eq!(metrics.open_watches, 4);
    }
}
