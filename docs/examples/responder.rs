//! A responder: serves `price` for the `orders` service until Ctrl-C (SIGINT), then finishes what it holds.
//!
//! ```sh
//! cargo run --example responder
//! ```
//!
//! Redis from `REDIS_URL` (default `redis://127.0.0.1:6379`). Run several: they share the work, and a request
//! whose responder dies is taken over by another after the visibility timeout.

use std::time::Duration;

use redcall::{HandlerError, RequestContext};
use serde::{Deserialize, Serialize};

/// The params of `price`.
#[derive(Deserialize)]
struct Order {
    sku: String,
    qty: u32,
}

/// The reply of `price`.
#[derive(Serialize)]
struct Receipt {
    total_cents: u64,
}

#[tokio::main]
async fn main() -> redcall::Result<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let client = redcall::Client::open(&url)?;
    let responder = client
        .responder("orders")
        .concurrency(32)
        .visibility_timeout(Duration::from_secs(30))
        .max_deliveries(5)
        .handler("price", |_ctx: RequestContext, order: Order| async move {
            if order.qty == 0 {
                // The requester gets a typed error with this code; no retry.
                return Err(HandlerError::fail(
                    "empty_order",
                    format!("no {} ordered", order.sku),
                ));
            }
            Ok(Receipt {
                total_cents: 250 * u64::from(order.qty),
            })
        })
        .start()
        .await?;
    println!("serving orders as {}; Ctrl-C to stop", responder.consumer());
    // Serve until Ctrl-C, then drain in-flight work (the rest stays pending for other responders).
    let unfinished = responder
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    println!("stopped ({unfinished} unfinished)");
    Ok(())
}
