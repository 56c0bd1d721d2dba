//! What the CNI specification fixes for every plugin: the versions we speak,
//! the well-known error codes and the error object a failing plugin prints.

use serde_json::{json, Value};
use thiserror::Error;

/// The spec versions we accept in a configuration, oldest first. Results
/// are written in the configuration's version's format.
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version we speak.
pub const NEWEST: &str = "1.1.0";

/// The spec's well-known error codes (1-99 are reserved to the spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    /// STATUS: the plugin cannot add containers now.
    NotAvailable = 50,
    /// Ours (100 and up are the plugin's): CHECK found the attachment
    /// not as ADD left it.
    CheckFailed = 100,
}

/// A failure as the runtime sees it: a code, a one-line message and details.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{msg}")]
pub struct CniError {
    pub code: Code,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The error object printed on stdout, in `version`'s terms.
    pub fn to_json(&self, version: &str) -> Value {
        let mut v = json!({
            "cniVersion": version,
            "code": self.code as u32,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        v
    }
}

/// A version as three numbers, for comparisons; None if it is not `A.B.C`.
pub fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let (a, b, c) = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some((a, b, c))
}

/// Whether we speak `version`.
pub fn supported(version: &str) -> bool {
    SUPPORTED.contains(&version)
}

/// Whether `version` is at least `min`.
pub fn at_least(version: &str, min: &str) -> bool {
    match (parse_version(version), parse_version(min)) {
        (Some(a), Some(b)) => a >= b,
        _ => false,
    }
}

/// The VERSION answer for a runtime that speaks `asked` (our newest when
/// it did not say).
pub fn version_info(asked: Option<&str>) -> Value {
    json!({
        "cniVersion": asked.filter(|v| supported(v)).unwrap_or(NEWEST),
        "supportedVersions": SUPPORTED,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_and_parse() {
        assert!(at_least("1.1.0", "1.0.0"));
        assert!(at_least("0.4.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0"));
        assert!(!at_least("x", "0.4.0"));
        assert_eq!(parse_version("1.10.2"), Some((1, 10, 2)));
        for bad in ["", "1", "1.0", "1.0.0.0", "a.b.c", "1..0"] {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
        assert!(supported("0.3.1") && supported("1.1.0"));
        assert!(!supported("0.2.0") && !supported("2.0.0"));
    }

    #[test]
    fn error_object() {
        let e = CniError::new(Code::InvalidConfig, "no zone").with_details("key zone");
        assert_eq!(
            e.to_json("1.0.0"),
            json!({"cniVersion": "1.0.0", "code": 7, "msg": "no zone", "details": "key zone"})
        );
        let e = CniError::new(Code::TryAgainLater, "busy");
        assert_eq!(e.to_json("0.3.1")["code"], 11);
        assert!(e.to_json("0.3.1").get("details").is_none());
    }

    #[test]
    fn version_answer() {
        let v = version_info(Some("0.4.0"));
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(
            v["supportedVersions"].as_array().unwrap().len(),
            SUPPORTED.len()
        );
        assert_eq!(version_info(None)["cniVersion"], NEWEST);
        assert_eq!(version_info(Some("9.9.9"))["cniVersion"], NEWEST);
    }
}
