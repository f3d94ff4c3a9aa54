//! Scenario 1 of `bench_k8s`: a leader's renewals back to back, beside raw conditional `PUT`s
//! and client-go's `GET` + `PUT`, in alternating blocks.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use kube::api::PostParams;
use lease_bench::Res;
use lease_bench::k8s::tally::Tally;
use lease_bench::k8s::total;
use lease_bench::report::{Align, Table};
use lease_core::Store;

use crate::BLOCKS;
use crate::setup::{
    Bench, Cost, api_err, counts, create_raw, key, measured, per_op, request, store_err, touched,
};

pub(crate) struct RenewalRow {
    label: &'static str,
    ops: u64,
    elapsed: Duration,
    cost: Cost,
}

impl RenewalRow {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

pub(crate) async fn renewals(bench: &mut Bench) -> Res<String> {
    let n = bench.args.renewals;
    let block = n.div_ceil(BLOCKS);
    let store_tally = Arc::new(Tally::default());
    let raw_tally = Arc::new(Tally::default());
    let mut store = bench.store(&store_tally)?;
    let raw = bench.raw_api(&raw_tally)?;
    let leader = "bench-leader";
    let store_key = key("renew");
    store
        .claim_lease(&store_key, &request(leader))
        .await
        .map_err(store_err("claim before the renewals"))?;
    create_raw(&raw, "raw-renew", leader).await?;
    let mut raw_lease = raw
        .get("raw-renew")
        .await
        .map_err(api_err("GET of the raw Lease"))?;
    // Warm up each path (connections, server caches) outside the measurement.
    for _ in 0..20 {
        store
            .extend_lease(&store_key, &request(leader))
            .await
            .map_err(store_err("warm-up renewal"))?;
        raw_lease = raw
            .replace(
                "raw-renew",
                &PostParams::default(),
                &touched(raw_lease, leader),
            )
            .await
            .map_err(api_err("warm-up PUT"))?;
    }

    let store_setup = store_tally.snapshot();
    let raw_setup = raw_tally.snapshot();
    let mut rows = [
        RenewalRow {
            label: "`LeaseObjectStore::extend_lease` (renewal by the holder)",
            ops: 0,
            elapsed: Duration::ZERO,
            cost: Cost::default(),
        },
        RenewalRow {
            label: "raw conditional `PUT` (`Api::replace` with the last `resourceVersion`) — baseline",
            ops: 0,
            elapsed: Duration::ZERO,
            cost: Cost::default(),
        },
        RenewalRow {
            label: "raw `GET` + conditional `PUT` per renewal (client-go's pattern, emulated)",
            ops: 0,
            elapsed: Duration::ZERO,
            cost: Cost::default(),
        },
    ];
    let mut done = 0;
    while done < n {
        let count = block.min(n - done);
        done += count;

        let ((), elapsed, cost) = measured(&bench.admin, &[&store_tally], async {
            for _ in 0..count {
                store
                    .extend_lease(&store_key, &request(leader))
                    .await
                    .map_err(store_err("renewal"))?;
            }
            Ok(())
        })
        .await?;
        rows[0].ops += count;
        rows[0].elapsed += elapsed;
        rows[0].cost.add(&cost);

        let (lease, elapsed, cost) = measured(&bench.admin, &[&raw_tally], async {
            let mut lease = raw_lease;
            for _ in 0..count {
                lease = raw
                    .replace("raw-renew", &PostParams::default(), &touched(lease, leader))
                    .await
                    .map_err(api_err("raw PUT"))?;
            }
            Ok(lease)
        })
        .await?;
        // The next block's object comes from the GET + PUT loop below.
        drop(lease);
        rows[1].ops += count;
        rows[1].elapsed += elapsed;
        rows[1].cost.add(&cost);

        let (lease, elapsed, cost) = measured(&bench.admin, &[&raw_tally], async {
            let mut lease = None;
            for _ in 0..count {
                let current = raw.get("raw-renew").await.map_err(api_err("raw GET"))?;
                lease = Some(
                    raw.replace(
                        "raw-renew",
                        &PostParams::default(),
                        &touched(current, leader),
                    )
                    .await
                    .map_err(api_err("raw PUT after GET"))?,
                );
            }
            lease.ok_or_else(|| "no renewal ran".to_owned())
        })
        .await?;
        raw_lease = lease;
        rows[2].ops += count;
        rows[2].elapsed += elapsed;
        rows[2].cost.add(&cost);
    }
    for row in &rows {
        bench.check_foreign(row.label, &row.cost);
    }

    let baseline = rows[1].rate();
    let mut out = String::new();
    writeln!(out, "### Leader renewal\n").ok();
    let mut table = Table::new(&[
        ("renewal loop", Align::Left),
        ("renewals", Align::Right),
        ("renewals/s", Align::Right),
        ("lease requests per renewal (server metrics)", Align::Left),
        ("(client count)", Align::Left),
        ("renewals/s ÷ raw `PUT`", Align::Right),
    ]);
    for row in &rows {
        table.row([
            row.label.to_owned(),
            row.ops.to_string(),
            format!("{:.0}", row.rate()),
            per_op(&row.cost.server, row.ops as f64),
            per_op(&row.cost.client, row.ops as f64),
            format!("{:.2}×", row.rate() / baseline),
        ]);
    }
    out.push_str(&table.to_string());
    // Judged on the server's count, unless another program's requests are mixed into it.
    let judged = if rows[0].cost.foreign() > 0 {
        &rows[0].cost.client
    } else {
        &rows[0].cost.server
    };
    let writes = judged.get("PUT").copied().unwrap_or(0);
    let others = total(judged) - writes;
    let met = writes == rows[0].ops && others == 0;
    writeln!(
        out,
        "\nTarget: 1 API write and 0 reads per steady-state renewal: **{}** ({writes} `PUT`s and \
         {others} other lease requests for {} renewals). Not counted: the store's claim and 20 \
         warm-up renewals before the measurement ({}); the raw loops' creation, first read and \
         warm-up ({}).",
        if met { "met" } else { "not met" },
        rows[0].ops,
        counts(&store_setup),
        counts(&raw_setup),
    )
    .ok();
    if !met {
        bench
            .notes
            .push("The renewal target (1 write, 0 reads) was not met in this run.".to_owned());
    }
    Ok(out)
}
