//! The `redcall` command line: a thin layer over the library. See `redcall --help`.

mod cli;

/// mimalloc: the request path allocates many small buffers, and glibc's malloc was about a third of the
/// requester's CPU in a profile of `redcall bench`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = match cli::parse() {
        Ok(args) => args,
        Err(code) => return code,
    };
    let telemetry = match cli::init_tracing(&args) {
        Ok(telemetry) => telemetry,
        Err(code) => return code,
    };
    // One current-thread runtime per process measured faster than a multi-thread one on small shared machines.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            cli::output::stderr(format_args!(
                "error: cannot start the async runtime: {err}\n"
            ));
            return std::process::ExitCode::from(1);
        }
    };
    let code = runtime.block_on(cli::run(args));
    // The runtime is done: the span export's blocking HTTP client may now wait for its last batch.
    drop(runtime);
    telemetry.finish();
    // After the runtime: stdout is flushed last, and a write error other than a closed pipe fails the command.
    cli::output::finish(code)
}
