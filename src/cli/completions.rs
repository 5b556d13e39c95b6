//! `redcall completions SHELL`: a completion script for the shell, made by `clap_complete` from the same
//! [`super::command`] that parses the command line, so it cannot drift from it.
//!
//! The trap: `clap_complete` (4.6) offers hidden subcommands and flags too, so the script would complete
//! `bench-worker` and every global flag a command ignores. The rule that follows: the script is made from a copy
//! of the command with everything hidden left out ([`visible`]), so it offers exactly what `--help` shows.

use redcall::Error;

/// How to install the script, shown under `redcall completions --help`.
pub const INSTALL: &str = "Install, for example:
  redcall completions bash > ~/.local/share/bash-completion/completions/redcall
  redcall completions zsh > ~/.zfunc/_redcall      (with ~/.zfunc in fpath)
  redcall completions fish > ~/.config/fish/completions/redcall.fish";

/// Arguments of `redcall completions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Prints the completion script on stdout. Needs no Redis. `--json` is refused (a script is not JSON).
pub fn run(cli: &super::Cli, args: &Args) -> redcall::Result<()> {
    if cli.json {
        return Err(Error::InvalidArgument(
            "--json does not apply to `completions` (it prints a shell script)".into(),
        ));
    }
    let mut script = Vec::new();
    let mut cmd = super::command();
    cmd.build();
    // Leaked so that the copy can borrow its names (clap takes `&'static str`): once, in a process that prints
    // the script and exits.
    let cmd: &'static clap::Command = Box::leak(Box::new(cmd));
    clap_complete::generate(args.shell, &mut visible(cmd), "redcall", &mut script);
    out!("{}", String::from_utf8_lossy(&script));
    Ok(())
}

/// A copy of the built command `cmd` without its hidden subcommands and arguments, at every level. Global flags
/// are copied as plain flags: each subcommand of a built command holds its own copy of them (hidden where it
/// ignores them), which building the copy must not overwrite. `help` and `--help`/`--version` are left to clap to
/// make again.
fn visible(cmd: &'static clap::Command) -> clap::Command {
    let mut out = clap::Command::new(cmd.get_name());
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        out = out.version(version);
    }
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if arg.is_hide_set() || id == "help" || id == "version" {
            continue;
        }
        out = out.arg(arg.clone().global(false));
    }
    for sub in cmd.get_subcommands() {
        if !sub.is_hide_set() && sub.get_name() != "help" {
            out = out.subcommand(visible(sub));
        }
    }
    out
}
