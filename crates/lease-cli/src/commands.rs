//! The one-shot commands: `claim`, `extend`, `revoke`, `pin`, `unpin`, `wait`, `show`, `list`
//! and `check`. All but `wait` call the store directly; `wait` uses the manager's
//! `wait_until_expired`; `check` reads the SQLite file without opening a store.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use lease_core::{Facades as _, Info, Key, Request, Store, Timestamp};
use serde::Serialize;

use crate::backend::{self, StoreSpec};
use crate::cli::{
    CheckArgs, ClaimArgs, ExtendArgs, ListArgs, PinArgs, RevokeArgs, ShowArgs, WaitArgs,
};
use crate::error::{CliError, EXIT_OK};
use crate::human::{default_holder, format_duration};

/// A lease as `show --json` and `list --json` print it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LeaseRow {
    namespace: String,
    model: String,
    lease: String,
    /// Empty when nobody holds it (a pin waiting for the next claimant).
    holder: String,
    held: bool,
    /// Human form: `14.2s`, `2m`; `pinned` for a pinned lease past its expiry.
    expires_in: String,
    /// Milliseconds until expiry (0 once past it).
    expires_in_ms: u64,
    /// The expiry on the store's clock (CLOCK_BOOTTIME), in nanoseconds.
    expiry_ns: u64,
    generation: u64,
    pinned: bool,
    pins: Vec<String>,
    metadata: Option<serde_json::Value>,
}

impl LeaseRow {
    fn new(key: &Key, info: Option<&Info>, pins: &[String], now: Timestamp) -> Self {
        let (holder, expiry, generation, pinned, metadata) = match info {
            Some(i) => (
                i.holder.clone(),
                i.expiry,
                i.generation.get(),
                i.pinned || !pins.is_empty(),
                i.metadata.clone(),
            ),
            None => (String::new(), Timestamp::ZERO, 0, !pins.is_empty(), None),
        };
        let left = expiry.saturating_duration_since(now);
        let expires_in = if info.is_none() {
            "-".to_owned()
        } else if pinned && left.is_zero() {
            "pinned".to_owned()
        } else {
            format_duration(left)
        };
        LeaseRow {
            namespace: key.namespace.clone(),
            model: key.model.clone(),
            lease: key.lease.clone(),
            held: info.is_some(),
            holder,
            expires_in,
            expires_in_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
            expiry_ns: expiry.as_nanos(),
            generation,
            pinned,
            pins: pins.to_vec(),
            metadata,
        }
    }
}

/// Writes to stdout; a closed pipe (`lease list | head -1`) ends the command quietly.
pub(crate) fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(i32::from(EXIT_OK));
    }
}

fn json_line(value: &impl Serialize) -> String {
    // Serialising our own rows cannot fail; an empty object would be a visible bug.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    text
}

fn one_line(verb: &str, key: &Key, info: &Info, now: Timestamp) -> String {
    format!(
        "{verb} {key}: holder {}, generation {}, expires in {}\n",
        info.holder,
        info.generation,
        format_duration(info.expiry.saturating_duration_since(now))
    )
}

/// Describes who holds `key` now, for a refusal.
async fn holder_note(store: &mut dyn Store, key: &Key) -> String {
    let now = backend::clock().now();
    match store.leases(std::slice::from_ref(key)).await {
        Ok(map) => match map.get(key) {
            Some(info) => format!(
                "held by {} (generation {}, expires in {})",
                info.holder,
                info.generation,
                format_duration(info.expiry.saturating_duration_since(now))
            ),
            None => "not held".to_owned(),
        },
        Err(_) => "held by someone else".to_owned(),
    }
}

async fn current(store: &mut dyn Store, key: &Key) -> Result<Option<Info>, CliError> {
    let mut map = store
        .leases(std::slice::from_ref(key))
        .await
        .map_err(|e| CliError::lease(&format!("reading lease {key}"), &e))?;
    Ok(map.remove(key))
}

/// `lease claim`.
pub(crate) async fn claim(spec: &StoreSpec, args: ClaimArgs) -> Result<u8, CliError> {
    let key = args.lease.key();
    let holder = args
        .holder
        .unwrap_or_else(|| default_holder(std::process::id()));
    let mut request = Request::new(holder, args.ttl);
    request.metadata = args.metadata;
    let mut store = backend::open(spec).await?;
    let result = match store.claim_lease(&key, &request).await {
        Err(e) if e.is_invalid() => {
            // Invalid: this holder already holds it (or the store changed under us); extend.
            match current(store.as_mut(), &key).await? {
                Some(info) if info.holder == request.holder => store
                    .extend_lease(&key, &request)
                    .await
                    .map(|info| ("extended", info)),
                _ => Err(e),
            }
        }
        other => other.map(|info| ("claimed", info)),
    };
    match result {
        Ok((verb, info)) => {
            print_info(verb, &key, &info, args.json, store.as_mut()).await;
            Ok(EXIT_OK)
        }
        Err(e) if e.is_held() || e.is_invalid() => Err(CliError::held(format!(
            "cannot claim lease {key} for {}: {}",
            request.holder,
            holder_note(store.as_mut(), &key).await
        ))),
        Err(e) => Err(CliError::lease(&format!("claiming lease {key}"), &e)),
    }
}

async fn print_info(verb: &str, key: &Key, info: &Info, json: bool, store: &mut dyn Store) {
    let now = backend::clock().now();
    if json {
        let pins = store
            .pinned()
            .await
            .ok()
            .and_then(|mut p| p.remove(key))
            .unwrap_or_default();
        out(&json_line(&LeaseRow::new(key, Some(info), &pins, now)));
    } else {
        out(&one_line(verb, key, info, now));
    }
}

/// `lease extend`.
pub(crate) async fn extend(spec: &StoreSpec, args: ExtendArgs) -> Result<u8, CliError> {
    let key = args.lease.key();
    let request = Request::new(args.holder, args.ttl);
    let mut store = backend::open(spec).await?;
    match store.extend_lease(&key, &request).await {
        Ok(info) => {
            print_info("extended", &key, &info, args.json, store.as_mut()).await;
            Ok(EXIT_OK)
        }
        Err(e) if e.is_invalid() || e.is_not_held() || e.is_held() => Err(CliError::held(format!(
            "cannot extend lease {key}: not held by {} ({})",
            request.holder,
            holder_note(store.as_mut(), &key).await
        ))),
        Err(e) => Err(CliError::lease(&format!("extending lease {key}"), &e)),
    }
}

/// `lease revoke`.
pub(crate) async fn revoke(spec: &StoreSpec, args: RevokeArgs) -> Result<u8, CliError> {
    let key = args.lease.key();
    let mut store = backend::open(spec).await?;
    match store.revoke_lease(&key, &args.holder).await {
        Ok(()) => {
            out(&format!("revoked {key} (was held by {})\n", args.holder));
            Ok(EXIT_OK)
        }
        Err(e) if e.is_invalid() || e.is_not_held() || e.is_held() => Err(CliError::held(format!(
            "cannot revoke lease {key}: not held by {} ({})",
            args.holder,
            holder_note(store.as_mut(), &key).await
        ))),
        Err(e) => Err(CliError::lease(&format!("revoking lease {key}"), &e)),
    }
}

/// `lease pin` (`pin = true`) and `lease unpin`.
pub(crate) async fn pin(spec: &StoreSpec, args: PinArgs, pin: bool) -> Result<u8, CliError> {
    let key = args.lease.key();
    let mut store = backend::open(spec).await?;
    let (verb, result) = if pin {
        ("pinned", store.pin_lease(&key, &args.entity).await)
    } else {
        ("unpinned", store.unpin_lease(&key, &args.entity).await)
    };
    result.map_err(|e| CliError::lease(&format!("{verb} lease {key}"), &e))?;
    out(&format!("{verb} {key} for {}\n", args.entity));
    Ok(EXIT_OK)
}

/// `lease wait`: through the manager's `wait_until_expired`.
pub(crate) async fn wait(spec: &StoreSpec, args: WaitArgs) -> Result<u8, CliError> {
    let key = args.lease.key();
    let store = backend::open(spec).await?;
    let manager = backend::start_manager(store, None)?;
    let claimer = manager
        .claimer(&key.namespace, &key.model)
        .map_err(|e| CliError::lease("", &e))?;
    let cancel = lease_core::CancellationToken::new();
    let waiting = claimer.wait_until_expired(&key.lease, &cancel);
    let result = match args.timeout {
        Some(limit) => tokio::time::timeout(limit, waiting).await.ok(),
        None => Some(waiting.await),
    };
    manager.stop().await;
    match result {
        Some(Ok(())) => {
            out(&format!("{key} is free\n"));
            Ok(EXIT_OK)
        }
        Some(Err(e)) => Err(CliError::lease(&format!("waiting for lease {key}"), &e)),
        None => {
            let mut store = backend::open(spec).await?;
            Err(CliError::held(format!(
                "lease {key} still held after {}: {}",
                format_duration(args.timeout.unwrap_or_default()),
                holder_note(store.as_mut(), &key).await
            )))
        }
    }
}

/// `lease show`.
pub(crate) async fn show(spec: &StoreSpec, args: ShowArgs) -> Result<u8, CliError> {
    let key = args.lease.key();
    let mut store = backend::open(spec).await?;
    let info = current(store.as_mut(), &key).await?;
    let pins = store
        .pinned()
        .await
        .map_err(|e| CliError::lease("reading pins", &e))?
        .remove(&key)
        .unwrap_or_default();
    let row = LeaseRow::new(&key, info.as_ref(), &pins, backend::clock().now());
    if args.json {
        out(&json_line(&row));
        return Ok(EXIT_OK);
    }
    let mut text = format!("lease       {key}\n");
    if row.held {
        text.push_str(&format!("holder      {}\n", row.holder));
        text.push_str(&format!("expires in  {}\n", row.expires_in));
        text.push_str(&format!("generation  {}\n", row.generation));
    } else {
        text.push_str("holder      - (not held)\n");
    }
    let pins = if row.pins.is_empty() {
        "-".to_owned()
    } else {
        row.pins.join(",")
    };
    text.push_str(&format!("pins        {pins}\n"));
    if let Some(metadata) = &row.metadata {
        text.push_str(&format!("metadata    {metadata}\n"));
    }
    out(&text);
    Ok(EXIT_OK)
}

async fn rows(store: &mut dyn Store, args: &ListArgs) -> Result<Vec<LeaseRow>, CliError> {
    let leases = store
        .leases(&[])
        .await
        .map_err(|e| CliError::lease("listing leases", &e))?;
    let pinned = store
        .pinned()
        .await
        .map_err(|e| CliError::lease("listing pins", &e))?;
    let now = backend::clock().now();
    let mut keys: BTreeMap<&Key, ()> = leases.keys().map(|k| (k, ())).collect();
    keys.extend(pinned.keys().map(|k| (k, ())));
    Ok(keys
        .into_keys()
        .filter(|k| args.namespace.as_ref().is_none_or(|n| *n == k.namespace))
        .filter(|k| args.model.as_ref().is_none_or(|m| *m == k.model))
        .map(|k| {
            let pins = pinned.get(k).map(Vec::as_slice).unwrap_or_default();
            LeaseRow::new(k, leases.get(k), pins, now)
        })
        .collect())
}

/// The aligned table of `rows`.
pub(crate) fn table(rows: &[LeaseRow]) -> String {
    let header = [
        "NAMESPACE",
        "MODEL",
        "LEASE",
        "HOLDER",
        "EXPIRES IN",
        "GENERATION",
        "PINS",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.namespace.clone(),
                r.model.clone(),
                r.lease.clone(),
                if r.held { r.holder.clone() } else { "-".into() },
                r.expires_in.clone(),
                if r.held {
                    r.generation.to_string()
                } else {
                    "-".into()
                },
                if r.pins.is_empty() {
                    "-".into()
                } else {
                    r.pins.join(",")
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(crate::human::cell_width(cell));
        }
    }
    let mut text = String::new();
    let mut line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                crate::human::push_cell(&mut l, cell, 0);
            } else {
                crate::human::push_cell(&mut l, cell, w);
                l.push_str("  ");
            }
        }
        text.push_str(l.trim_end());
        text.push('\n');
    };
    line(&header.map(str::to_owned));
    for row in &cells {
        line(row);
    }
    text
}

/// `lease list`.
pub(crate) async fn list(spec: &StoreSpec, args: ListArgs) -> Result<u8, CliError> {
    let mut store = backend::open(spec).await?;
    if args.json {
        let rows = rows(store.as_mut(), &args).await?;
        out(&json_line(&rows));
        return Ok(EXIT_OK);
    }
    if !args.watch {
        let rows = rows(store.as_mut(), &args).await?;
        if rows.is_empty() {
            // Say where we looked: an empty list from the wrong database is the usual surprise.
            out(&format!("no leases in {spec}\n"));
        } else {
            out(&table(&rows));
        }
        return Ok(EXIT_OK);
    }
    let tty = std::io::stdout().is_terminal();
    let mut drawn_lines = 0usize;
    loop {
        let rows = rows(store.as_mut(), &args).await?;
        let body = table(&rows);
        let mut frame = String::new();
        if tty && drawn_lines > 0 {
            // Back to the top of the previous frame, then clear to the end of the screen.
            frame.push_str(&format!("\x1b[{drawn_lines}A\x1b[J"));
        } else if !tty && drawn_lines > 0 {
            frame.push('\n');
        }
        frame.push_str(&body);
        drawn_lines = body.lines().count();
        out(&frame);
        tokio::time::sleep(args.interval).await;
    }
}

/// `lease check`: the full integrity check of the SQLite database, read-only.
pub(crate) fn check(spec: &StoreSpec, args: &CheckArgs) -> Result<u8, CliError> {
    let path = backend::sqlite_path(spec, false)?;
    let report = lease_store_sqlite::check_file(path)?;
    if args.json {
        out(&json_line(&serde_json::json!({
            "path": report.path,
            "ok": true,
            "schema_version": report.schema_version,
            "lease_rows": report.lease_rows,
            "pages": report.pages,
        })));
    } else {
        out(&format!(
            "{}: ok (schema version {}, {} lease rows, {} pages)\n",
            report.path.display(),
            report.schema_version,
            report.lease_rows,
            report.pages
        ));
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lease_core::Generation;
    use std::time::Duration;

    #[test]
    fn table_is_aligned() {
        let now = Timestamp::from_nanos(1_000_000_000);
        let info = Info {
            holder: "host-a:1".into(),
            expiry: now.saturating_add(Duration::from_secs(15)),
            generation: Generation(7),
            metadata: None,
            pinned: false,
        };
        let rows = vec![
            LeaseRow::new(&Key::new("ns", "m", "backup"), Some(&info), &[], now),
            LeaseRow::new(
                &Key::new("namespace-long", "m", "x"),
                None,
                &["e1".into(), "e2".into()],
                now,
            ),
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = lines[0].find("HOLDER").unwrap();
        assert_eq!(lines[1].find("host-a:1"), Some(col));
        assert!(lines[2][col..].starts_with("- "));
        assert!(lines[1].contains("15s"));
        assert!(lines[2].ends_with("e1,e2"));
    }
}
