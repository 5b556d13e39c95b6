//! One rule for the names redcall puts into keys and channels: request ids, service names and namespaces (and for
//! the function key a request asks for, which goes into no key but into logs and tables). The library, the admin
//! API and the CLI all check through here, so a name is refused the same way wherever it enters.
//!
//! Every key of a service is `{<namespace>:<service>}:<kind>:<id>` (see `docs/protocol.md`). So:
//! - none may be empty, longer than [`MAX_NAME_BYTES`], or hold control characters (they would garble keys in logs,
//!   `redis-cli` output and the CLI's tables);
//! - a namespace or service may not hold `{` or `}`: the hash tag must be exactly `{<namespace>:<service>}`, or a
//!   Redis Cluster would place the service's keys on different shards and its scripts would fail;
//! - a service may not hold `#`: a partition's tag is `{<namespace>:<service>#<i>.<k>}`, so service `orders#0.27`
//!   would share the keys of partition 0 of `orders`, and an ACL pattern for the partitions of `orders`
//!   (`~{redcall:orders#*`) would reach it;
//! - a namespace may not hold `:`, so that `{a:b:c}` is namespace `a`, service `b:c`, and two deployments can never
//!   share keys.
//!
//! A request id may hold any other character, braces and colons included: it always follows the hash tag.

/// Longest name, in bytes (UTF-8).
pub(crate) const MAX_NAME_BYTES: usize = 1024;

/// Checks a request id; the message says what is wrong.
pub(crate) fn check_request_id(id: &str) -> Result<(), String> {
    check("request id", id, &[])
}

/// Checks a service name.
pub(crate) fn check_service(service: &str) -> Result<(), String> {
    check("service name", service, &['{', '}', '#'])
}

/// Checks a function key a request asks for: not empty (the dead-letter stream's `fn` is empty for an entry whose
/// envelope did not decode), within [`MAX_NAME_BYTES`], no control characters (it shows in logs, dead-letter
/// tables and metrics labels). It goes into no key, so braces and colons are fine.
pub(crate) fn check_func_key(func_key: &str) -> Result<(), String> {
    check("function key", func_key, &[])
}

/// Checks a namespace.
pub(crate) fn check_namespace(namespace: &str) -> Result<(), String> {
    check("namespace", namespace, &['{', '}', ':'])
}

fn check(what: &str, name: &str, forbidden: &[char]) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("a {what} must not be empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "a {what} must be at most {MAX_NAME_BYTES} bytes (this one is {})",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!(
            "a {what} must not hold control characters ({c:?} in {name:?})"
        ));
    }
    if let Some(c) = name.chars().find(|c| forbidden.contains(c)) {
        return Err(format!("a {what} must not hold {c:?} ({name:?})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_every_name() {
        for ok in ["request_123", "a}b", "{x}", "a:b", "é", "0191-uuid"] {
            assert!(check_request_id(ok).is_ok(), "{ok}");
        }
        for ok in ["orders", "a:b", "orders-v2.eu"] {
            assert!(check_service(ok).is_ok(), "{ok}");
        }
        assert!(check_namespace("shop").is_ok());
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        for bad in ["", "a\nb", "tab\there", "nul\0", long.as_str()] {
            assert!(check_request_id(bad).is_err(), "{bad:?}");
            assert!(check_service(bad).is_err(), "{bad:?}");
            assert!(check_namespace(bad).is_err(), "{bad:?}");
        }
        for bad in ["a}b", "{a", "}"] {
            let err = check_service(bad).expect_err(bad);
            assert!(err.contains("service name"), "{err}");
            assert!(check_namespace(bad).is_err(), "{bad}");
        }
        assert!(check_namespace("a:b").is_err());
        // A partition's tag is `{ns:service#i.k}`: a service named like one would share its keys.
        let err = check_service("orders#0.27").expect_err("a partition's name");
        assert!(err.contains('#'), "{err}");
        assert!(check_request_id("order#1").is_ok());
        assert!(check_func_key("odd {key}: ok").is_ok());
        for bad in ["", "a\nb", long.as_str()] {
            let err = check_func_key(bad).expect_err("unusable function key");
            assert!(err.contains("function key"), "{err}");
        }
        assert_eq!(
            check_service("").expect_err("empty"),
            "a service name must not be empty"
        );
    }
}
