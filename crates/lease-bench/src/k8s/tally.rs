//! Counting the lease requests a kube client sends, by verb, with a tower layer on the client.

use std::sync::{Arc, Mutex, PoisonError};

use kube::client::{Body, ClientBuilder};
use kube::{Client, Config};
use tower::util::MapRequestLayer;

use super::Verbs;
use crate::Res;

/// Lease requests one or more clients sent, by verb, as the server's metrics name them.
#[derive(Debug, Default)]
pub struct Tally(Mutex<Verbs>);

impl Tally {
    /// Counts `request` if it is a lease request.
    pub fn record(&self, request: &http::Request<Body>) {
        let uri = request.uri();
        let Some((_, rest)) = uri.path().split_once("/leases") else {
            return;
        };
        let collection = rest.is_empty() || rest == "/";
        let watching = uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
        let verb = match (request.method().as_str(), collection) {
            ("GET", true) if watching => "WATCH",
            ("GET", true) => "LIST",
            (other, _) => other,
        };
        let mut verbs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = verbs.entry(verb.to_owned()).or_default();
        *count = count.saturating_add(1);
    }

    /// The counts so far.
    #[must_use]
    pub fn snapshot(&self) -> Verbs {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The sum of the counts of `tallies` so far.
#[must_use]
pub fn sum(tallies: &[&Tally]) -> Verbs {
    let mut all = Verbs::new();
    for tally in tallies {
        super::add(&mut all, &tally.snapshot());
    }
    all
}

/// A new client (its own connections) for `config` whose lease requests `tally` counts.
///
/// # Errors
///
/// A configuration kube cannot build a client from.
pub fn counted_client(config: &Config, tally: &Arc<Tally>) -> Res<Client> {
    let tally = Arc::clone(tally);
    let layer = MapRequestLayer::new(move |request: http::Request<Body>| {
        tally.record(&request);
        request
    });
    Ok(ClientBuilder::try_from(config.clone())
        .map_err(|e| format!("cannot build a client: {e}"))?
        .with_layer(&layer)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str) -> http::Request<Body> {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap()
    }

    #[test]
    fn lease_requests_are_counted_by_the_servers_verbs() {
        let tally = Tally::default();
        let leases = "/apis/coordination.k8s.io/v1/namespaces/n/leases";
        tally.record(&request("GET", leases));
        tally.record(&request("GET", &format!("{leases}?watch=true&rv=1")));
        tally.record(&request("GET", &format!("{leases}/a")));
        tally.record(&request("PUT", &format!("{leases}/a")));
        tally.record(&request("GET", "/api/v1/namespaces/n/configmaps"));
        let counted: Vec<(String, u64)> = tally.snapshot().into_iter().collect();
        let expected =
            [("GET", 1), ("LIST", 1), ("PUT", 1), ("WATCH", 1)].map(|(v, n)| (v.to_owned(), n));
        assert_eq!(counted, expected);
        assert_eq!(sum(&[&tally, &tally]).get("PUT"), Some(&2));
    }
}
