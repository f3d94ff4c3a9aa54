//! Secretaries: per-namespace rules for lease names, holders and durations, checked by the
//! manager before any store call.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::types::Key;
use crate::validate::{validate_duration, validate_string};

/// The namespace of application leadership leases: lease = application, holder = unit.
pub const APPLICATION_LEADERSHIP_NAMESPACE: &str = "application-leadership";

/// The namespace of singular-controller leases: lease = model or controller UUID, holder =
/// machine or controller agent.
pub const SINGULAR_CONTROLLER_NAMESPACE: &str = "singular-controller";

/// Validates the inputs of one namespace's leases.
///
/// Every method of every secretary also applies the general rules
/// ([`validate_string`], [`validate_duration`]); a secretary adds its namespace's own.
pub trait Secretary: Send + Sync + fmt::Debug {
    /// Checks a lease key.
    ///
    /// # Errors
    ///
    /// [`Error::Validation`] naming the bad part.
    fn check_lease(&self, key: &Key) -> Result<()>;

    /// Checks a holder name.
    ///
    /// # Errors
    ///
    /// [`Error::Validation`] for field `holder`.
    fn check_holder(&self, holder: &str) -> Result<()>;

    /// Checks a requested duration.
    ///
    /// # Errors
    ///
    /// [`Error::Validation`] for field `duration`.
    fn check_duration(&self, duration: Duration) -> Result<()>;
}

/// The permissive secretary: only the general rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultSecretary;

impl Secretary for DefaultSecretary {
    fn check_lease(&self, key: &Key) -> Result<()> {
        key.validate()
    }
    fn check_holder(&self, holder: &str) -> Result<()> {
        validate_string("holder", holder)
    }
    fn check_duration(&self, duration: Duration) -> Result<()> {
        validate_duration(duration)
    }
}

/// Juju's application-leadership rules: the lease is an application name (lowercase letters,
/// digits and hyphens, starting with a letter, no segment of only digits), the holder a unit of
/// it (`application/N`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeadershipSecretary;

fn is_application_name(s: &str) -> bool {
    // juju/names: ^[a-z][a-z0-9]*(-[a-z0-9]*[a-z][a-z0-9]*)*$
    let mut segments = s.split('-');
    let Some(first) = segments.next() else {
        return false;
    };
    let lower_alnum = |seg: &str| {
        seg.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    first.starts_with(|c: char| c.is_ascii_lowercase())
        && lower_alnum(first)
        && segments.all(|seg| lower_alnum(seg) && seg.chars().any(|c| c.is_ascii_lowercase()))
}

fn is_unit_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((app, n)) => {
            is_application_name(app)
                && !n.is_empty()
                && n.chars().all(|c| c.is_ascii_digit())
                && (n == "0" || !n.starts_with('0'))
        }
        None => false,
    }
}

impl Secretary for LeadershipSecretary {
    fn check_lease(&self, key: &Key) -> Result<()> {
        key.validate()?;
        if !is_application_name(&key.lease) {
            return Err(Error::validation(
                "lease",
                &key.lease,
                "not an application name",
            ));
        }
        Ok(())
    }
    fn check_holder(&self, holder: &str) -> Result<()> {
        validate_string("holder", holder)?;
        if !is_unit_name(holder) {
            return Err(Error::validation(
                "holder",
                holder,
                "not a unit name (application/N)",
            ));
        }
        Ok(())
    }
    fn check_duration(&self, duration: Duration) -> Result<()> {
        validate_duration(duration)
    }
}

/// Juju's singular-controller rules: the lease is the key's model or the controller's UUID, the
/// holder a machine (`machine-N`) or controller (`controller-N`) agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SingularSecretary {
    controller_uuid: String,
}

impl SingularSecretary {
    /// Rules for the controller whose UUID is `controller_uuid`.
    pub fn new(controller_uuid: impl Into<String>) -> Self {
        SingularSecretary {
            controller_uuid: controller_uuid.into(),
        }
    }
}

impl Secretary for SingularSecretary {
    fn check_lease(&self, key: &Key) -> Result<()> {
        key.validate()?;
        if key.lease != key.model && key.lease != self.controller_uuid {
            return Err(Error::validation(
                "lease",
                &key.lease,
                "neither the model nor the controller UUID",
            ));
        }
        Ok(())
    }
    fn check_holder(&self, holder: &str) -> Result<()> {
        validate_string("holder", holder)?;
        let number = holder
            .strip_prefix("machine-")
            .or_else(|| holder.strip_prefix("controller-"));
        match number {
            Some(n) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => Ok(()),
            _ => Err(Error::validation(
                "holder",
                holder,
                "not a machine or controller agent (machine-N, controller-N)",
            )),
        }
    }
    fn check_duration(&self, duration: Duration) -> Result<()> {
        validate_duration(duration)
    }
}

/// The two standard namespaces' secretaries, keyed by namespace, for a manager's configuration.
pub fn standard_secretaries(controller_uuid: &str) -> BTreeMap<String, Arc<dyn Secretary>> {
    let mut map: BTreeMap<String, Arc<dyn Secretary>> = BTreeMap::new();
    map.insert(
        APPLICATION_LEADERSHIP_NAMESPACE.to_owned(),
        Arc::new(LeadershipSecretary),
    );
    map.insert(
        SINGULAR_CONTROLLER_NAMESPACE.to_owned(),
        Arc::new(SingularSecretary::new(controller_uuid)),
    );
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(lease: &str) -> Key {
        Key::new(APPLICATION_LEADERSHIP_NAMESPACE, "model-1", lease)
    }

    #[test]
    fn default_secretary_applies_general_rules_only() {
        let s = DefaultSecretary;
        assert!(s.check_lease(&key("anything_Goes-9")).is_ok());
        assert!(s.check_lease(&key("no.dots")).is_err());
        assert!(s.check_holder("any/holder:1").is_ok());
        assert!(s.check_holder("").is_err());
        assert!(s.check_duration(Duration::from_millis(1)).is_ok());
        assert!(s.check_duration(Duration::ZERO).is_err());
    }

    #[test]
    fn leadership_names() {
        let s = LeadershipSecretary;
        for ok in ["mysql", "my-sql", "a", "wordpress-2x", "a1-b2c"] {
            s.check_lease(&key(ok))
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "MySQL", "1mysql", "my-1", "mysql-", "-mysql", "my_sql", "my--sql",
        ] {
            let err = s.check_lease(&key(bad)).unwrap_err();
            assert!(err.is_validation(), "{bad}");
            assert!(err.to_string().contains("lease"), "{bad}: {err}");
        }
        for ok in ["mysql/0", "my-sql/12"] {
            s.check_holder(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "mysql",
            "mysql/",
            "mysql/x",
            "mysql/01",
            "MySQL/0",
            "/0",
            "mysql/0/1",
        ] {
            let err = s.check_holder(bad).unwrap_err();
            assert!(
                err.to_string().starts_with("invalid holder"),
                "{bad}: {err}"
            );
        }
        assert!(s.check_duration(Duration::ZERO).is_err());
        assert!(s.check_duration(Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn singular_names() {
        let s = SingularSecretary::new("ctrl-uuid");
        let model_key = Key::new(SINGULAR_CONTROLLER_NAMESPACE, "model-uuid", "model-uuid");
        let ctrl_key = Key::new(SINGULAR_CONTROLLER_NAMESPACE, "model-uuid", "ctrl-uuid");
        let other = Key::new(SINGULAR_CONTROLLER_NAMESPACE, "model-uuid", "other");
        assert!(s.check_lease(&model_key).is_ok());
        assert!(s.check_lease(&ctrl_key).is_ok());
        assert!(s.check_lease(&other).unwrap_err().is_validation());
        for ok in ["machine-0", "controller-12"] {
            assert!(s.check_holder(ok).is_ok(), "{ok}");
        }
        for bad in ["machine-", "machine-x", "unit-mysql-0", "controller"] {
            assert!(s.check_holder(bad).is_err(), "{bad}");
        }
        assert!(s.check_duration(Duration::ZERO).is_err());
    }

    #[test]
    fn standard_map_has_both_namespaces() {
        let map = standard_secretaries("c");
        assert_eq!(
            map.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                APPLICATION_LEADERSHIP_NAMESPACE,
                SINGULAR_CONTROLLER_NAMESPACE
            ]
        );
    }
}
