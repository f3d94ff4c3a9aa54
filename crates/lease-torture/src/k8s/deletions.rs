//! The deletion phase of the Kubernetes scenario: Lease objects deleted under their holders.

use std::time::Duration;

use super::{MODEL, NAMESPACE, Run, say};
use crate::{now, secs};

/// Lease objects deleted under their leader in the deletion phase.
pub const DELETIONS: u32 = 4;

/// Three candidates contend for one lease while its Lease object is deleted under the leader
/// [`DELETIONS`] times, each at a random moment of a renewal period. Returns, for each
/// deletion, the time to the next leader (s). The checker (over every lease of the run) finds
/// any overlap of terms or any generation that does not increase with terms.
pub(super) fn deletion_phase(run: &mut Run, id: &str) -> Result<Vec<f64>, String> {
    use kube::api::{Api, ApiResource, DeleteParams, DynamicObject};

    let lease = format!("deleted-{id}");
    let stop = run.args.dir.join("stop-deleted");
    let t0 = now();
    for i in 0..3 {
        run.spawn(&format!("deleted-{i}"), &lease, None, &stop)?;
    }
    say(&format!(
        "deletions: 3 candidates on {lease}, its Lease deleted {DELETIONS} times under the leader"
    ));
    let mut after = t0;
    let mut took = Vec::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let client = runtime
        .block_on(kube::Client::try_default())
        .map_err(|e| format!("cannot build a client: {e}"))?;
    let resource = ApiResource {
        group: "coordination.k8s.io".to_owned(),
        version: "v1".to_owned(),
        api_version: "coordination.k8s.io/v1".to_owned(),
        kind: "Lease".to_owned(),
        plural: "leases".to_owned(),
    };
    let leases: Api<DynamicObject> = Api::namespaced_with(client, &run.args.namespace, &resource);
    let object =
        lease_store_k8s::naming::object_name(&lease_core::Key::new(NAMESPACE, MODEL, &*lease));
    let retry = u64::try_from(run.args.timing.retry_period.as_millis()).unwrap_or(500);
    for n in 0..DELETIONS {
        let Some(leader) = run.wait_for_lead(&lease, after, Duration::from_secs(30), |_| true)?
        else {
            run.problems.push(format!(
                "deletions on {lease}: nobody led within 30 s (before deletion {n})"
            ));
            break;
        };
        if n > 0 {
            took.push(secs(leader.start.saturating_sub(after)));
        }
        // Somewhere within a renewal period or two of the leader's term.
        std::thread::sleep(Duration::from_millis(fastrand::u64(retry..=3 * retry)));
        let deleted_at = now();
        match runtime.block_on(leases.delete(&object, &DeleteParams::default())) {
            Ok(_) => {}
            // Between a deletion and the next claim there is no object: that is fine.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(format!("cannot delete Lease {object}: {e}")),
        }
        say(&format!(
            "deleted the Lease {object} under {}",
            leader.holder
        ));
        after = deleted_at;
    }
    match run.wait_for_lead(&lease, after, Duration::from_secs(30), |_| true)? {
        Some(t) => took.push(secs(t.start.saturating_sub(after))),
        None => run.problems.push(format!(
            "deletions on {lease}: nobody led again after the last deletion"
        )),
    }
    std::thread::sleep(run.args.quiet);
    run.reap_crashed();
    run.stop_all(&stop)?;
    say(&format!(
        "deletions: leader again {} after each deletion",
        took.iter()
            .map(|s| format!("{s:.2} s"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(took)
}
