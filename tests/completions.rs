//! `redcall completions SHELL`: a completion script made from the same command that parses the command line, with
//! hidden commands and the global flags a command ignores left out.

mod common;

use std::process::{Command, Output};

use common::redcall_bin;

fn completions(shell: &str) -> Output {
    Command::new(redcall_bin())
        .args(["completions", shell])
        // A URL that cannot be used: completions need no Redis and no client.
        .env("REDIS_URL", "not a url")
        .output()
        .expect("run redcall completions")
}

#[test]
fn bash_completes_the_visible_commands_only() {
    let out = completions("bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = String::from_utf8_lossy(&out.stdout);
    for visible in [
        "call",
        "info",
        "reply",
        "serve",
        "reap",
        "demo",
        "stats",
        "dlq",
        "replay",
        "bench",
        "completions",
    ] {
        assert!(
            script.contains(visible),
            "no {visible:?} in the bash script"
        );
    }
    assert!(
        !script.contains("bench-worker") && !script.contains("bench__worker"),
        "a hidden command is offered"
    );
    // `info` ignores --payload-limit (hidden in its help): not offered there either.
    let info = script
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("redcall__subcmd__info)"))
        .nth(1)
        .expect("the info case");
    assert!(
        info.contains("--url") && !info.contains("--payload-limit"),
        "{info}"
    );
}

#[test]
fn zsh_and_fish_scripts_and_a_bad_shell() {
    for shell in ["zsh", "fish"] {
        let out = completions(shell);
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("serve") && !script.contains("bench-worker"),
            "{shell}"
        );
    }
    let out = completions("tcsh");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
