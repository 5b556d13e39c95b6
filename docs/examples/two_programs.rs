//! The two-program flow: one program makes a request under a known id and waits; another, knowing only the id,
//! reads the request (`call_info`), does the work and publishes the reply by hand. No responder runs.
//!
//! ```sh
//! cargo run --example two_programs -- call request_123 &   # program A: waits for the answer
//! cargo run --example two_programs -- answer request_123   # program B: reads the request, answers it
//! ```
//!
//! Redis from `REDIS_URL` (default `redis://127.0.0.1:6379`).

use std::time::{Duration, Instant};

use redcall::{ErrorKind, Requester};
use serde::{Deserialize, Serialize};

/// The params program A sends.
#[derive(Serialize, Deserialize, Debug)]
struct Question {
    a: u32,
}

/// The reply program B publishes.
#[derive(Serialize, Deserialize, Debug)]
struct Answer {
    answer: u32,
}

/// Program A: request `SomeFunction` under `id` and wait for the reply.
async fn call(requester: &Requester, id: &str) -> redcall::Result<()> {
    let answer: Answer = requester
        .request(
            id,
            "SomeFunction",
            &Question { a: 1 },
            Duration::from_secs(30),
        )
        .await?;
    println!("{id}: got {answer:?}");
    Ok(())
}

/// Program B: wait (up to 10 s) until request `id` exists, read it, answer it.
async fn answer(requester: &Requester, id: &str) -> redcall::Result<()> {
    let end = Instant::now() + Duration::from_secs(10);
    let info = loop {
        match requester.call_info(id).await {
            Ok(info) => break info,
            // Not made yet: program A may not have started.
            Err(err) if err.kind() == ErrorKind::NotFound && Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => return Err(err),
        }
    };
    let question: Question = info.params()?;
    println!("{id}: {} {question:?}", info.func_key);
    requester
        .publish_reply(
            id,
            &Answer {
                answer: 41 + question.a,
            },
        )
        .await?;
    println!("{id}: answered");
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (role, id) = match args.as_slice() {
        [role, id] if role == "call" || role == "answer" => (role.as_str(), id.as_str()),
        _ => {
            eprintln!("usage: two_programs call|answer REQUEST_ID");
            return std::process::ExitCode::from(2);
        }
    };
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let requester = match redcall::Client::open(&url) {
        Ok(client) => client.requester("by-hand"),
        Err(err) => {
            eprintln!("error: {err}");
            return std::process::ExitCode::from(1);
        }
    };
    let done = if role == "call" {
        call(&requester, id).await
    } else {
        answer(&requester, id).await
    };
    match done {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::from(1)
        }
    }
}
