//! Validates a lease key and request the way every store and the manager do before any I/O,
//! and shows the error a bad name gets.

use std::time::Duration;

use lease_core::{Key, Request};

fn main() {
    let key = Key::new("singular-controller", "model-1", "nightly-backup");
    let request = Request::new("machine-0", Duration::from_secs(15));
    match key.validate().and_then(|()| request.validate()) {
        Ok(()) => println!(
            "valid: {key} for {} ({:?})",
            request.holder, request.duration
        ),
        Err(e) => println!("rejected: {e}"),
    }
    let bad = Key::new("singular-controller", "model 1", "nightly.backup");
    match bad.validate() {
        Ok(()) => println!("valid: {bad}"),
        Err(e) => println!("rejected: {e}"),
    }
}
