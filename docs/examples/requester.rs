//! A requester: asks the `orders` service to run `price` on an order and prints the receipt.
//!
//! ```sh
//! cargo run --example responder &      # in one terminal
//! cargo run --example requester        # in another
//! ```
//!
//! Redis from `REDIS_URL` (default `redis://127.0.0.1:6379`). Exits 1 with the error when the call fails (for
//! example a timeout when no responder runs).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The params of `price`.
#[derive(Serialize)]
struct Order {
    sku: String,
    qty: u32,
}

/// The reply of `price`.
#[derive(Deserialize, Debug)]
struct Receipt {
    total_cents: u64,
}

#[tokio::main]
async fn main() -> redcall::Result<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let client = redcall::Client::open(&url)?;
    let orders = client.requester("orders");
    let order = Order {
        sku: "tea".into(),
        qty: 2,
    };
    // `call` makes a fresh request id (UUID v7); `request(id, ..)` takes one of yours.
    let receipt: Receipt = orders
        .call("price", &order, Duration::from_secs(10))
        .await?;
    println!("2 x tea: {} cents", receipt.total_cents);
    Ok(())
}
