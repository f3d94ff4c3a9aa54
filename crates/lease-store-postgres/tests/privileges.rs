//! The least privileges the crate documentation lists for running the store are enough: a role
//! with exactly those grants (on a schema another role created) claims, extends, revokes, pins,
//! reads, applies a batch, purges and sees changes; and it was never granted `DELETE` on
//! `generation`.

mod common;

use std::time::Duration;

use lease_core::{Key, Op, Request, Store};
use lease_store_postgres::PostgresStore;

use common::{SchemaGuard, admin, fresh_schema, store, url};

#[tokio::test]
#[ignore = "needs a Postgres server: cargo xtask pg up; eval \"$(cargo xtask pg env)\""]
async fn the_documented_least_privileges_run_the_store() {
    let owner_url = url();
    let schema = fresh_schema("priv");
    let _guard = SchemaGuard {
        url: owner_url.clone(),
        schema: schema.clone(),
    };
    // The owner creates the schema (first start).
    drop(store(&owner_url, &schema).await);
    let client = admin(&owner_url).await;
    let role = format!("{schema}_runner");
    let secret = "run-only-pw";
    client
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{secret}';
             GRANT USAGE ON SCHEMA {schema} TO {role};
             GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.lease, {schema}.pin TO {role};
             GRANT SELECT, INSERT, UPDATE ON {schema}.generation TO {role};
             GRANT SELECT ON {schema}.meta TO {role};"
        ))
        .await
        .expect("granting the documented privileges");
    let (prefix, rest) = owner_url.split_once("://").expect("a URL");
    let (_, host) = rest.split_once('@').expect("a URL with a user");
    let runner_url = format!("{prefix}://{role}:{secret}@{host}");

    let result = async {
        let mut s = PostgresStore::builder(&runner_url)
            .schema(&schema)
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let key = Key::new("priv", "model", "one");
        let other = Key::new("priv", "model", "two");
        let long = Request::new("runner", Duration::from_secs(300));
        let e = |e: lease_core::Error| e.to_string();
        s.claim_lease(&key, &long).await.map_err(e)?;
        s.extend_lease(&key, &long).await.map_err(e)?;
        s.pin_lease(&key, "entity").await.map_err(e)?;
        s.pinned().await.map_err(e)?;
        s.unpin_lease(&key, "entity").await.map_err(e)?;
        s.leases(std::slice::from_ref(&key)).await.map_err(e)?;
        s.lease_group("priv", "model").await.map_err(e)?;
        for outcome in s
            .apply(vec![
                Op::Claim {
                    key: other.clone(),
                    request: long.clone(),
                },
                Op::Revoke {
                    key: key.clone(),
                    holder: "runner".to_owned(),
                },
            ])
            .await
        {
            outcome.map_err(e)?;
        }
        s.poll_changes().await.map_err(e)?;
        // Nothing has expired, but the server checks the DELETE privilege all the same.
        s.purge_expired(10).await.map_err(e)?;
        Ok::<(), String>(())
    }
    .await;
    let _ = client
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}"))
        .await;
    if let Err(message) = result {
        panic!("a store with the documented least privileges failed: {message}");
    }
}
