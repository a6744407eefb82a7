//! Test-only hooks (feature `test-hooks`): a test names a delegate's service and an action, and
//! applying that action to that service panics, as a bug in the function would. Keyed by
//! service so that tests running side by side do not trip each other.

use std::sync::Mutex;

static PANIC_BEFORE: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Make the next apply of `action` (e.g. "CreateService") to service `service` panic.
pub fn panic_before(service: &str, action: &str) {
    PANIC_BEFORE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((service.to_string(), action.to_string()));
}

/// Called by apply before each action.
pub fn before_action(service: &str, name: &str) {
    let hit = {
        let mut hooks = PANIC_BEFORE.lock().unwrap_or_else(|p| p.into_inner());
        let found = hooks.iter().position(|(s, a)| s == service && *a == name);
        found.map(|i| hooks.remove(i))
    };
    if let Some((service, action)) = hit {
        panic!("test hook: a panic before {action} of {service}");
    }
}
