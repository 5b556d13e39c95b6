//! Everything the binary prints goes through here, because `println!` panics when its output is gone.
//!
//! Rust programs ignore `SIGPIPE`, so writing to a pipe whose reader left (`redcall dlq list | head -c 100`) fails
//! with `EPIPE` instead of killing the process, and `println!`/`eprintln!` turn that failure into a panic (exit
//! 101 and a panic message). The rule that follows: the commands print with [`outln!`]/[`out!`] (stdout) and
//! [`errln!`] (stderr), never with the std macros. A reader that went away is not an error of the command: the
//! rest of the output is dropped, the command finishes its work (a replay whose report nobody reads still
//! replayed) and exits as it would have, 0 on success. Any other failure to write stdout (a full disk) is reported
//! once, at the end, and the exit status is 1 unless the command already failed. Writing to stderr never fails a
//! command: an error message nobody can read is dropped, and the exit code still says what happened.

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once stdout could not be written: nothing more is written to it.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
/// The first stdout write error that was not a closed pipe, reported by [`finish`].
static STDOUT_ERROR: Mutex<Option<io::Error>> = Mutex::new(None);

/// Writes to stdout like `println!`, without panicking on a closed output.
macro_rules! outln {
    () => {
        $crate::cli::output::stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes to stdout like `print!`, without panicking on a closed output.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::stdout(format_args!($($arg)*))
    };
}

/// Writes to stderr like `eprintln!`, without panicking on a closed output.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::output::stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes `args` to stdout, unless stdout is gone. Use [`outln!`] and [`out!`].
pub fn stdout(args: fmt::Arguments<'_>) {
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = io::stdout().lock();
    if let Err(err) = out.write_fmt(args) {
        gone(err);
    }
}

/// Writes `args` to stderr; a failure is ignored (see the module docs). Use [`errln!`].
pub fn stderr(args: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}

/// Stops writing stdout after `err`, keeping it for [`finish`] unless it is a reader that left.
fn gone(err: io::Error) {
    STDOUT_GONE.store(true, Ordering::Relaxed);
    if err.kind() != io::ErrorKind::BrokenPipe
        && let Ok(mut first) = STDOUT_ERROR.lock()
    {
        first.get_or_insert(err);
    }
}

/// The exit code of a command that ended with `code`: flushes stdout, and turns a success into 1 when stdout
/// could not be written for another reason than a reader that left.
pub fn finish(code: ExitCode) -> ExitCode {
    if !STDOUT_GONE.load(Ordering::Relaxed)
        && let Err(err) = io::stdout().lock().flush()
    {
        gone(err);
    }
    let error = STDOUT_ERROR.lock().ok().and_then(|mut e| e.take());
    match error {
        Some(err) => {
            stderr(format_args!("error: cannot write the output: {err}\n"));
            if code == ExitCode::SUCCESS {
                ExitCode::from(1)
            } else {
                code
            }
        }
        None => code,
    }
}
