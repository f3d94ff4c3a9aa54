//! The database schema, its version, and the migrations that bring a schema up to date.
//!
//! Everything lives in one Postgres schema (`lease` by default, see
//! [`PostgresStoreBuilder::schema`](crate::PostgresStoreBuilder::schema)). The version is the one
//! row of `meta`; [`migrations`]`[i]` takes the schema from version `i` to `i + 1`, inside one
//! transaction that holds an advisory lock, so two stores starting at once migrate it once.
//! Released steps are never edited, only appended to.
//!
//! # Version 1
//!
//! - `meta (singleton, version)`: the schema version.
//! - `generation (namespace, model, name, last)`: the last fencing generation handed out per
//!   lease key. **Never deleted from**, so generations keep increasing across revoke, expiry,
//!   purges, restarts and failover of the server (it is replicated like any other table). Its
//!   row is also the per-key lock every claim takes (`SELECT … FOR UPDATE`), so two claims of one
//!   absent lease are serialised rather than racing to insert.
//! - `lease (namespace, model, name, holder, expiry, generation, metadata)`: the current claims.
//!   `expiry` is nanoseconds on the timeline that decides expiry (the server's
//!   `clock_timestamp()` since the Unix epoch by default), capped at `i64::MAX`. `metadata` is the
//!   JSON text exactly as given. A row may outlive its expiry until it is purged or claimed again.
//! - `pin (namespace, model, name, entity)`: who pins which lease; a pin on an absent lease waits
//!   for the next claimant.
//! - Functions `now_ns`, `claim`, `extend`, `revoke`, `pin`, `unpin`: each decides one operation
//!   inside the caller's transaction under the key's row locks, and `pg_notify`s the schema's
//!   change channel with the writer's id when it changed something, so a batch is one round trip.
//!
//! # Version 2
//!
//! - `extend` reads the deciding clock once it holds the lease row's lock, not before: in
//!   version 1 an extend that waited for the lock (behind another transaction on the row) past
//!   the lease's expiry decided on the instant it read before waiting, and revived the expired
//!   lease.

/// The schema version this crate writes and understands (kept in the schema's `meta` table).
///
/// A store connecting to an older schema migrates it to this version; a schema with a higher
/// version was written by a newer version of the crate and is refused with
/// [`PostgresStoreError::SchemaVersion`](crate::PostgresStoreError::SchemaVersion), whose
/// `supported` is this value. The only part of the schema that is public: the tables and
/// functions themselves are the crate's business.
pub const SCHEMA_VERSION: i32 = 2;

/// The SQL of each step from one version to the next, for schema `schema` (already validated as
/// a plain lowercase identifier) notifying `channel`.
pub(crate) fn migrations(schema: &str, channel: &str) -> [String; 2] {
    [V1, V2].map(|step| step.replace("{s}", schema).replace("{channel}", channel))
}

/// Version 1; see the module documentation. `{s}` is the schema, `{channel}` the NOTIFY channel.
const V1: &str = r#"
CREATE TABLE {s}.meta (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version   integer NOT NULL
);
CREATE TABLE {s}.generation (
    namespace text NOT NULL,
    model     text NOT NULL,
    name      text NOT NULL,
    last      bigint NOT NULL CHECK (last >= 0),
    PRIMARY KEY (namespace, model, name)
);
CREATE TABLE {s}.lease (
    namespace  text NOT NULL,
    model      text NOT NULL,
    name       text NOT NULL,
    holder     text NOT NULL,
    expiry     bigint NOT NULL,
    generation bigint NOT NULL,
    metadata   text,
    PRIMARY KEY (namespace, model, name),
    FOREIGN KEY (namespace, model, name) REFERENCES {s}.generation (namespace, model, name)
);
CREATE INDEX lease_by_expiry ON {s}.lease (expiry);
CREATE TABLE {s}.pin (
    namespace text NOT NULL,
    model     text NOT NULL,
    name      text NOT NULL,
    entity    text NOT NULL,
    PRIMARY KEY (namespace, model, name, entity)
);

-- The deciding clock: the given instant (a store told to decide on its own clock), else the
-- server's clock_timestamp() (not now(): that is frozen at the transaction's start).
CREATE FUNCTION {s}.now_ns(p_now bigint) RETURNS bigint LANGUAGE sql VOLATILE AS $$
    SELECT coalesce(p_now, (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint)
$$;

CREATE FUNCTION {s}.claim(
    p_ns text, p_model text, p_name text, p_holder text, p_dur bigint, p_meta text,
    p_now bigint, p_origin text,
    OUT o_status text, OUT o_now bigint, OUT o_expiry bigint, OUT o_generation bigint,
    OUT o_metadata text, OUT o_pinned boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_last bigint;
    v_holder text;
    v_expiry bigint;
    v_found boolean;
BEGIN
    -- The key's generation row is its lock: create it if need be, then hold it.
    SELECT g.last INTO v_last FROM {s}.generation g
     WHERE g.namespace = p_ns AND g.model = p_model AND g.name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO {s}.generation AS g (namespace, model, name, last)
        VALUES (p_ns, p_model, p_name, 0) ON CONFLICT DO NOTHING;
        SELECT g.last INTO v_last FROM {s}.generation g
         WHERE g.namespace = p_ns AND g.model = p_model AND g.name = p_name FOR UPDATE;
    END IF;
    o_now := {s}.now_ns(p_now);
    SELECT l.holder, l.expiry INTO v_holder, v_expiry FROM {s}.lease l
     WHERE l.namespace = p_ns AND l.model = p_model AND l.name = p_name FOR UPDATE;
    v_found := FOUND;
    o_pinned := EXISTS (SELECT 1 FROM {s}.pin p
                         WHERE p.namespace = p_ns AND p.model = p_model AND p.name = p_name);
    IF v_found AND (o_pinned OR o_now < v_expiry) THEN
        o_status := CASE WHEN v_holder = p_holder THEN 'invalid' ELSE 'held' END;
        RETURN;
    END IF;
    o_generation := v_last + 1;
    UPDATE {s}.generation g SET last = o_generation
     WHERE g.namespace = p_ns AND g.model = p_model AND g.name = p_name;
    o_expiry := least(o_now::numeric + p_dur, 9223372036854775807)::bigint;
    INSERT INTO {s}.lease AS l (namespace, model, name, holder, expiry, generation, metadata)
    VALUES (p_ns, p_model, p_name, p_holder, o_expiry, o_generation, p_meta)
    ON CONFLICT (namespace, model, name) DO UPDATE
       SET holder = excluded.holder, expiry = excluded.expiry,
           generation = excluded.generation, metadata = excluded.metadata;
    o_metadata := p_meta;
    o_status := 'ok';
    PERFORM pg_notify('{channel}', p_origin);
END
$$;

CREATE FUNCTION {s}.extend(
    p_ns text, p_model text, p_name text, p_holder text, p_dur bigint, p_meta text,
    p_now bigint, p_origin text,
    OUT o_status text, OUT o_now bigint, OUT o_expiry bigint, OUT o_generation bigint,
    OUT o_metadata text, OUT o_pinned boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_holder text;
    v_expiry bigint;
    v_found boolean;
BEGIN
    o_now := {s}.now_ns(p_now);
    SELECT l.holder, l.expiry, l.generation, l.metadata
      INTO v_holder, v_expiry, o_generation, o_metadata FROM {s}.lease l
     WHERE l.namespace = p_ns AND l.model = p_model AND l.name = p_name FOR UPDATE;
    v_found := FOUND;
    o_pinned := EXISTS (SELECT 1 FROM {s}.pin p
                         WHERE p.namespace = p_ns AND p.model = p_model AND p.name = p_name);
    IF NOT v_found OR NOT (o_pinned OR o_now < v_expiry) OR v_holder <> p_holder THEN
        o_status := 'invalid';
        RETURN;
    END IF;
    o_expiry := greatest(v_expiry, least(o_now::numeric + p_dur, 9223372036854775807)::bigint);
    o_metadata := coalesce(p_meta, o_metadata);
    UPDATE {s}.lease l SET expiry = o_expiry, metadata = o_metadata
     WHERE l.namespace = p_ns AND l.model = p_model AND l.name = p_name;
    o_status := 'ok';
    PERFORM pg_notify('{channel}', p_origin);
END
$$;

CREATE FUNCTION {s}.revoke(
    p_ns text, p_model text, p_name text, p_holder text, p_now bigint, p_origin text)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_holder text;
    v_expiry bigint;
    v_found boolean;
    v_pinned boolean;
BEGIN
    SELECT l.holder, l.expiry INTO v_holder, v_expiry FROM {s}.lease l
     WHERE l.namespace = p_ns AND l.model = p_model AND l.name = p_name FOR UPDATE;
    v_found := FOUND;
    v_pinned := EXISTS (SELECT 1 FROM {s}.pin p
                         WHERE p.namespace = p_ns AND p.model = p_model AND p.name = p_name);
    IF NOT v_found OR NOT (v_pinned OR {s}.now_ns(p_now) < v_expiry) THEN
        RETURN 'invalid';
    END IF;
    IF v_holder <> p_holder THEN
        RETURN 'not_held';
    END IF;
    DELETE FROM {s}.lease l
     WHERE l.namespace = p_ns AND l.model = p_model AND l.name = p_name;
    PERFORM pg_notify('{channel}', p_origin);
    RETURN 'ok';
END
$$;

CREATE FUNCTION {s}.pin(p_ns text, p_model text, p_name text, p_entity text, p_origin text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {s}.pin (namespace, model, name, entity)
    VALUES (p_ns, p_model, p_name, p_entity) ON CONFLICT DO NOTHING;
    IF FOUND THEN
        PERFORM pg_notify('{channel}', p_origin);
    END IF;
END
$$;

CREATE FUNCTION {s}.unpin(p_ns text, p_model text, p_name text, p_entity text, p_origin text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {s}.pin p
     WHERE p.namespace = p_ns AND p.model = p_model AND p.name = p_name AND p.entity = p_entity;
    IF FOUND THEN
        PERFORM pg_notify('{channel}', p_origin);
    END IF;
END
$$;
"#;

/// Version 2: `extend` reads the clock after locking the row; see the module documentation.
const V2: &str = r#"
CREATE OR REPLACE FUNCTION {s}.extend(
    p_ns text, p_model text, p_name text, p_holder text, p_dur bigint, p_meta text,
    p_now bigint, p_origin text,
    OUT o_status text, OUT o_now bigint, OUT o_expiry bigint, OUT o_generation bigint,
    OUT o_metadata text, OUT o_pinned boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_holder text;
    v_expiry bigint;
    v_found boolean;
BEGIN
    SELECT l.holder, l.expiry, l.generation, l.metadata
      INTO v_holder, v_expiry, o_generation, o_metadata FROM {s}.lease l
     WHERE l.namespace = p_ns AND l.model = p_model AND l.name = p_name FOR UPDATE;
    v_found := FOUND;
    -- The clock is read only once the row is locked: an instant read before waiting for the
    -- lock could revive a lease that expired during the wait.
    o_now := {s}.now_ns(p_now);
    o_pinned := EXISTS (SELECT 1 FROM {s}.pin p
                         WHERE p.namespace = p_ns AND p.model = p_model AND p.name = p_name);
    IF NOT v_found OR NOT (o_pinned OR o_now < v_expiry) OR v_holder <> p_holder THEN
        o_status := 'invalid';
        RETURN;
    END IF;
    o_expiry := greatest(v_expiry, least(o_now::numeric + p_dur, 9223372036854775807)::bigint);
    o_metadata := coalesce(p_meta, o_metadata);
    UPDATE {s}.lease l SET expiry = o_expiry, metadata = o_metadata
     WHERE l.namespace = p_ns AND l.model = p_model AND l.name = p_name;
    o_status := 'ok';
    PERFORM pg_notify('{channel}', p_origin);
END
$$;
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_migration_per_version() {
        let steps = migrations("lease", "lease_changes");
        assert_eq!(i32::try_from(steps.len()), Ok(SCHEMA_VERSION));
        for step in &steps {
            assert!(!step.contains("{s}") && !step.contains("{channel}"));
        }
        assert!(steps[0].contains("lease.generation"));
    }
}
