//! [`PostgresStoreBuilder`]: the options of a [`PostgresStore`], connecting, and creating or
//! migrating the schema.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use lease_core::{Clock, SystemClock};
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config};

use crate::connection::Settings;
use crate::error::{PostgresStoreError, Target};
use crate::schema::{SCHEMA_VERSION, migrations};
use crate::store::PostgresStore;

/// The default schema the store keeps its tables in.
pub const DEFAULT_SCHEMA: &str = "lease";

// The store's own constructors live here, beside the builder they start, so that the store
// (store.rs) need not know how it is configured.
impl PostgresStore {
    /// Connects with every option at its default. See [`PostgresStoreBuilder::connect`].
    ///
    /// # Errors
    ///
    /// As [`PostgresStoreBuilder::connect`].
    pub async fn connect(url: impl Into<String>) -> Result<PostgresStore, PostgresStoreError> {
        PostgresStoreBuilder::new(url).connect().await
    }

    /// Options for connecting with `url`.
    pub fn builder(url: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder::new(url)
    }
}

/// Options for a [`PostgresStore`]; [`PostgresStore::builder`] makes one.
///
/// Its `Debug` output shows the connection string with the password replaced by `***`.
pub struct PostgresStoreBuilder {
    url: String,
    schema: String,
    clock: Arc<dyn Clock>,
    local_expiry: bool,
    operation_timeout: Duration,
    connect_timeout: Duration,
    statement_timeout: Duration,
    listener_heartbeat: Duration,
    application_name: String,
}

impl fmt::Debug for PostgresStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStoreBuilder")
            .field("url", &redact_url(&self.url))
            .field("schema", &self.schema)
            .field("clock", &self.clock)
            .field("local_expiry", &self.local_expiry)
            .field("operation_timeout", &self.operation_timeout)
            .finish_non_exhaustive()
    }
}

impl PostgresStoreBuilder {
    /// Options for connecting with `url`: a `postgres://user:password@host:port/database` URL or
    /// a `key=value` connection string, as `tokio-postgres` reads them.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresStoreBuilder {
            url: url.into(),
            schema: DEFAULT_SCHEMA.to_owned(),
            clock: Arc::new(SystemClock::new()),
            local_expiry: false,
            operation_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            listener_heartbeat: Duration::from_secs(5),
            application_name: "lease-store-postgres".to_owned(),
        }
    }

    /// The `application_name` the store's connections show in `pg_stat_activity` (default
    /// `lease-store-postgres`).
    #[must_use]
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    /// The Postgres schema holding the store's tables (default `lease`): 1 to 40 of `a-z`,
    /// `0-9`, `_`, not starting with a digit. Created if missing.
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The clock the store reports expiries on ([`SystemClock`] by default); give the manager
    /// the same one. Expiry is still decided by the server's clock unless
    /// [`decide_expiry_locally`](Self::decide_expiry_locally) is set.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Decide expiry on [`clock`](Self::clock) instead of the server's `clock_timestamp()`. For
    /// tests with a fake clock: every store on the schema must then share that clock, which is
    /// only true inside one process.
    #[must_use]
    pub fn decide_expiry_locally(mut self, local: bool) -> Self {
        self.local_expiry = local;
        self
    }

    /// How long one store call (connecting included) may take before it gives up with
    /// [`Error::Timeout`](lease_core::Error::Timeout) and drops the connection (default 10 s).
    #[must_use]
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// How long connecting may take (default 5 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The server-side `statement_timeout` of the store's connections (default 5 s).
    #[must_use]
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// How often the change listener checks that its connection is alive (default 5 s).
    #[must_use]
    pub fn listener_heartbeat(mut self, interval: Duration) -> Self {
        self.listener_heartbeat = interval;
        self
    }

    /// Connects, creates or migrates the schema, and returns the store.
    ///
    /// # Errors
    ///
    /// One [`PostgresStoreError`] naming what is wrong: [`BadUrl`](PostgresStoreError::BadUrl),
    /// [`BadSchemaName`](PostgresStoreError::BadSchemaName),
    /// [`Unreachable`](PostgresStoreError::Unreachable),
    /// [`Authentication`](PostgresStoreError::Authentication),
    /// [`MissingDatabase`](PostgresStoreError::MissingDatabase),
    /// [`Permission`](PostgresStoreError::Permission),
    /// [`SchemaVersion`](PostgresStoreError::SchemaVersion),
    /// [`ForeignSchema`](PostgresStoreError::ForeignSchema), or another server failure.
    pub async fn connect(self) -> Result<PostgresStore, PostgresStoreError> {
        let settings = Arc::new(self.settings()?);
        let (client, task) = settings.connect().await?;
        migrate(&client, &settings).await?;
        PostgresStore::from_parts(settings, client, task).await
    }

    fn settings(self) -> Result<Settings, PostgresStoreError> {
        if !valid_schema_name(&self.schema) {
            return Err(PostgresStoreError::BadSchemaName(self.schema));
        }
        let bad_url = |reason: &str| PostgresStoreError::BadUrl {
            redacted: redact_url(&self.url),
            reason: reason.to_owned(),
        };
        // The driver's parse error may quote the string; only say that it failed.
        let mut config = Config::from_str(&self.url)
            .map_err(|_| bad_url("not a postgres:// URL or key=value connection string"))?;
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(Host::Unix(p)) => p.display().to_string(),
            None => return Err(bad_url("it names no host")),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().unwrap_or("").to_owned();
        if user.is_empty() {
            return Err(bad_url("it names no user"));
        }
        let database = config.get_dbname().unwrap_or(&user).to_owned();
        config.connect_timeout(self.connect_timeout);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        config.application_name(&self.application_name);
        let statement_ms = self.statement_timeout.as_millis().max(1);
        // A client paused inside a transaction must not hold row locks for long.
        let idle_ms = (statement_ms * 2).max(1000);
        config.options(format!(
            "-c statement_timeout={statement_ms} -c idle_in_transaction_session_timeout={idle_ms}"
        ));
        #[cfg(feature = "tls")]
        let tls = !matches!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        let channel = format!("{}_lease_changes", self.schema);
        Ok(Settings {
            target: Target {
                display: format!("{user}@{host}:{port}/{database}"),
                user,
                database,
            },
            config,
            channel,
            schema: self.schema,
            clock: self.clock,
            local_expiry: self.local_expiry,
            operation_timeout: self.operation_timeout,
            connect_timeout: self.connect_timeout,
            listener_heartbeat: self.listener_heartbeat,
            origin: origin_id(),
            #[cfg(feature = "tls")]
            tls,
        })
    }
}

/// A plain lowercase identifier, safe to paste into SQL unquoted.
fn valid_schema_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// `url` with the password of a `postgres://user:password@…` URL or of a `password=…` pair
/// replaced by `***`.
pub fn redact_url(url: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .map(|r| ("postgres://", r))
        .or_else(|| {
            url.strip_prefix("postgresql://")
                .map(|r| ("postgresql://", r))
        })
    {
        let (scheme, rest) = rest;
        // The userinfo ends at the last '@' before the path.
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        if let Some(at) = authority.rfind('@') {
            let (userinfo, host) = authority.split_at(at);
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            let tail = redact_query_password(tail);
            return format!("{scheme}{masked}{host}{tail}");
        }
        return format!("{scheme}{authority}{}", redact_query_password(tail));
    }
    // key=value form: mask the value of every password key.
    let mut out = Vec::new();
    let mut words = url.split_whitespace();
    while let Some(word) = words.next() {
        if let Some(value) = word.strip_prefix("password") {
            if value.is_empty() {
                // `password = secret` or `password =secret`.
                if let Some(next) = words.next()
                    && next == "="
                {
                    words.next();
                }
                out.push("password=***".to_owned());
                continue;
            }
            if value.starts_with('=') {
                if value == "=" {
                    words.next(); // `password= secret`
                }
                out.push("password=***".to_owned());
                continue;
            }
        }
        out.push(word.to_owned());
    }
    out.join(" ")
}

fn redact_query_password(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| {
            if pair.starts_with("password=") {
                "password=***".to_owned()
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// A process-unique id for notification payloads.
fn origin_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{}-{:016x}", std::process::id(), h.finish())
}

/// Creates the schema or brings it to [`SCHEMA_VERSION`]; refuses a newer or foreign schema.
async fn migrate(client: &Client, settings: &Settings) -> Result<(), PostgresStoreError> {
    let s = &settings.schema;
    let target = &settings.target;
    let version = read_version(client, settings).await?;
    if version == Some(i64::from(SCHEMA_VERSION)) {
        return Ok(()); // Up to date: no DDL, so a user without CREATE can run the store.
    }
    if let Some(found) = version
        && found > i64::from(SCHEMA_VERSION)
    {
        return Err(PostgresStoreError::SchemaVersion {
            schema: s.clone(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let permission = |action: &'static str, e: &tokio_postgres::Error| {
        if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
            PostgresStoreError::Permission {
                user: target.user.clone(),
                schema: s.clone(),
                action,
                reason: crate::error::describe(e),
            }
        } else {
            target.error(action, e)
        }
    };
    // One migrator at a time per schema: a transaction-scoped advisory lock on its name. The
    // DDL (and waiting for another migrator) may take longer than the statement timeout meant
    // for lease operations, above all on a loaded server: lift it for this transaction only.
    client
        .batch_execute("BEGIN; SET LOCAL statement_timeout = '300s'")
        .await
        .map_err(|e| target.error("beginning the migration", &e))?;
    let result = async {
        client
            .execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                &[&format!("lease-schema:{s}")],
            )
            .await
            .map_err(|e| target.error("locking the schema for migration", &e))?;
        client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
            .await
            .map_err(|e| permission("creating the schema", &e))?;
        let version = read_version(client, settings).await?.unwrap_or(0);
        if version > i64::from(SCHEMA_VERSION) {
            return Err(PostgresStoreError::SchemaVersion {
                schema: s.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        let steps = migrations(s, &settings.channel);
        let from = usize::try_from(version).unwrap_or(0);
        for step in steps.iter().skip(from) {
            client
                .batch_execute(step)
                .await
                .map_err(|e| permission("creating the lease tables", &e))?;
        }
        client
            .execute(
                &format!(
                    "INSERT INTO {s}.meta (singleton, version) VALUES (true, $1) \
                     ON CONFLICT (singleton) DO UPDATE SET version = excluded.version"
                ),
                &[&SCHEMA_VERSION],
            )
            .await
            .map_err(|e| permission("recording the schema version", &e))?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| target.error("committing the migration", &e)),
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// The schema's version: `None` when the schema or its `meta` table is absent (fresh), an error
/// when the schema holds other tables but no `meta`.
async fn read_version(
    client: &Client,
    settings: &Settings,
) -> Result<Option<i64>, PostgresStoreError> {
    let s = &settings.schema;
    let target = &settings.target;
    let row = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL, \
             (SELECT count(*) FROM pg_tables WHERE schemaname = $2)",
            &[&format!("{s}.meta"), s],
        )
        .await
        .map_err(|e| target.error("reading the schema version", &e))?;
    let has_meta: bool = row.get(0);
    let tables: i64 = row.get(1);
    if !has_meta {
        return if tables > 0 {
            Err(PostgresStoreError::ForeignSchema { schema: s.clone() })
        } else {
            Ok(None)
        };
    }
    let row = client
        .query_opt(&format!("SELECT version FROM {s}.meta"), &[])
        .await
        .map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
                PostgresStoreError::Permission {
                    user: target.user.clone(),
                    schema: s.clone(),
                    action: "reading the schema version",
                    reason: crate::error::describe(&e),
                }
            } else {
                target.error("reading the schema version", &e)
            }
        })?;
    Ok(row.map(|r| i64::from(r.get::<_, i32>(0))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_passwords() {
        assert_eq!(
            redact_url("postgres://alice:s3cret@db:5432/app"),
            "postgres://alice:***@db:5432/app"
        );
        assert_eq!(
            redact_url("postgresql://alice:p@ss@db/app?password=x&sslmode=require"),
            "postgresql://alice:***@db/app?password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://alice@db/app"),
            "postgres://alice@db/app"
        );
        assert_eq!(
            redact_url("host=db user=alice password=s3cret dbname=app"),
            "host=db user=alice password=*** dbname=app"
        );
        assert_eq!(
            redact_url("host=db password = s3cret"),
            "host=db password=***"
        );
    }

    #[test]
    fn schema_names() {
        assert!(valid_schema_name("lease"));
        assert!(valid_schema_name("lease_2"));
        for bad in ["", "Lease", "2lease", "a-b", "a;drop", &"x".repeat(41)] {
            assert!(!valid_schema_name(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn bad_configuration_never_shows_the_password() {
        for url in [
            "postgres://alice:hunter2@/app",
            "postgres://alice:hunter2@db:notaport/app",
            "host=db password=hunter2 user",
        ] {
            let err = PostgresStoreBuilder::new(url).connect().await.unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(!text.contains("hunter2"), "{text}");
            assert!(matches!(err, PostgresStoreError::BadUrl { .. }), "{text}");
        }
        let err = PostgresStoreBuilder::new("postgres://a@db/app")
            .schema("Bad")
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(err, PostgresStoreError::BadSchemaName(_)), "{err}");
    }
}
