//! Where a JSON argument (`call`'s params, `reply`'s data) comes from: the argument itself, a file (`@PATH`) or
//! stdin (`-`).
//!
//! The kernel caps one argument at 128 KiB, below the default payload limit of 1 MiB, so big params cannot come
//! from argv. The two extra forms need no escape: no JSON text starts with `@` and `-` alone is not a JSON text
//! (a number needs a digit after its sign), so every valid JSON argument still means itself. A JSON *string*
//! that starts with `@` is written quoted, as every JSON string is: `'"@home"'` is the string `@home`, while
//! `@home` reads the file `home`. `@PATH` takes the rest of the argument as the path, exactly (`@-` is a file
//! named `-`; `-` alone is stdin).

use std::io::Read;
use std::path::Path;

use redcall::Error;

/// Where a JSON argument's text comes from.
#[derive(Debug, PartialEq, Eq)]
enum Source<'a> {
    /// The argument is the JSON text.
    Inline(&'a str),
    /// `@PATH`: the file's contents.
    File(&'a Path),
    /// `-`: everything on stdin.
    Stdin,
}

impl<'a> Source<'a> {
    /// What `arg` asks for, by the rule in the module docs.
    fn of(arg: &'a str) -> Self {
        if arg == "-" {
            Source::Stdin
        } else if let Some(path) = arg.strip_prefix('@') {
            Source::File(Path::new(path))
        } else {
            Source::Inline(arg)
        }
    }
}

/// Reads the JSON argument `arg` (inline, `@PATH` or `-`) and parses it; `what` names it in errors ("params",
/// "reply data"). Every failure is a usage error (exit 2) naming the file and the reason: a missing or unreadable
/// file, text that is not UTF-8, text that is not JSON.
pub fn json_arg(what: &'static str, arg: &str) -> redcall::Result<serde_json::Value> {
    let (text, from) = match Source::of(arg) {
        Source::Inline(text) => return super::parse_json(what, text),
        Source::File(path) if path.as_os_str().is_empty() => {
            return Err(Error::InvalidArgument(format!(
                "the {what} argument `@` names no file (write @PATH, - for stdin, or the JSON itself)"
            )));
        }
        Source::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::InvalidArgument(format!(
                    "cannot read the {what} from {}: {e}",
                    path.display()
                ))
            })?;
            (text, path.display().to_string())
        }
        Source::Stdin => {
            let mut text = String::new();
            std::io::stdin()
                .lock()
                .read_to_string(&mut text)
                .map_err(|e| {
                    Error::InvalidArgument(format!("cannot read the {what} from stdin: {e}"))
                })?;
            (text, "stdin".to_owned())
        }
    };
    serde_json::from_str(&text).map_err(|e| {
        Error::InvalidArgument(format!("the {what} in {from} are not valid JSON: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_json_text_means_itself() {
        for text in [r#""@home""#, r#"" -""#, "-1", "null", "{}", " @"] {
            assert_eq!(Source::of(text), Source::Inline(text), "{text}");
        }
        assert_eq!(Source::of("-"), Source::Stdin);
        assert_eq!(Source::of("@-"), Source::File(Path::new("-")));
        assert_eq!(Source::of("@@x"), Source::File(Path::new("@x")));
        assert_eq!(Source::of("@a b.json"), Source::File(Path::new("a b.json")));
    }

    #[test]
    fn a_quoted_at_is_a_json_string() {
        let value = json_arg("params", r#""@home""#).expect("a JSON string");
        assert_eq!(value, serde_json::json!("@home"));
    }

    #[test]
    fn a_missing_file_is_a_usage_error_naming_it() {
        let err = json_arg("params", "@/nonexistent/redcall-params.json").expect_err("missing");
        assert_eq!(err.kind(), redcall::ErrorKind::InvalidArgument);
        let message = err.to_string();
        assert!(
            message.contains("/nonexistent/redcall-params.json"),
            "{message}"
        );
        assert!(message.contains("No such file"), "{message}");
        let err = json_arg("params", "@").expect_err("no path");
        assert_eq!(err.kind(), redcall::ErrorKind::InvalidArgument);
    }
}
