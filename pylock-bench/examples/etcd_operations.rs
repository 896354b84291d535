//! Where an etcd lock operation's time goes: each request the etcd backend sends, on its own,
//! interleaved round by round with a plain read and a plain `Put`, on one client.
//!
//! ```text
//! cargo run --release -p pylock-bench --example etcd_operations -- http://127.0.0.1:2379
//! ```
//!
//! At most 2,000 rounds or 20 s; loopback members only.

use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};

const ROUNDS: u32 = 2_000;
const TIME: Duration = Duration::from_secs(20);
const OWNER: &str = "0123456789abcdef0123456789abcdef";

/// The backend's acquire: put the owner on `lease` if the key was never created.
fn acquire(key: &str, lease: i64) -> Txn {
    Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key,
            OWNER,
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key, None)])
}

/// The backend's release: delete the key if it holds the owner.
fn release(key: &str) -> Txn {
    Txn::new()
        .when([Compare::value(key, CompareOp::Equal, OWNER)])
        .and_then([TxnOp::delete(
            key,
            Some(DeleteOptions::new().with_prev_key()),
        )])
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), etcd_client::Error> {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:2379".to_owned());
    let mut client = Client::connect([endpoint.as_str()], None).await?;
    let lease = client.lease_grant(60, None).await?.id();
    let names = [
        "read (linearizable get)",
        "write (put)",
        "acquire transaction",
        "release transaction",
        "lease keep-alive",
        "acquire transaction + keep-alive alongside",
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); names.len()];
    let started = Instant::now();
    let prefix = format!("etcd-operations:{}:", std::process::id());
    for round in 0..ROUNDS {
        if started.elapsed() > TIME {
            break;
        }
        let key = format!("{prefix}{round}");
        let at = Instant::now();
        client.get(key.as_str(), None::<GetOptions>).await?;
        times[0].push(at.elapsed());
        let at = Instant::now();
        client.put(format!("{prefix}put"), OWNER, None).await?;
        times[1].push(at.elapsed());
        let at = Instant::now();
        client.txn(acquire(&key, lease)).await?;
        times[2].push(at.elapsed());
        let at = Instant::now();
        client.txn(release(&key)).await?;
        times[3].push(at.elapsed());
        let at = Instant::now();
        client.lease_keep_alive(lease).await?;
        times[4].push(at.elapsed());
        let (mut txn_client, mut lease_client) = (client.clone(), client.clone());
        let at = Instant::now();
        let (taken, renewed) = tokio::join!(
            txn_client.txn(acquire(&key, lease)),
            lease_client.lease_keep_alive(lease)
        );
        times[5].push(at.elapsed());
        taken?;
        renewed?;
        client.txn(release(&key)).await?;
    }
    client.delete(format!("{prefix}put"), None).await?;
    client.lease_revoke(lease).await?;
    let read = p50_us(&mut times[0]);
    println!("{endpoint}: {} rounds", times[0].len());
    println!("{:<44} {:>9} {:>8}", "request", "p50_us", "x read");
    for (name, samples) in names.iter().zip(times.iter_mut()) {
        let p50 = p50_us(samples);
        println!("{name:<44} {p50:>9.1} {:>8.2}", p50 / read);
    }
    Ok(())
}

fn p50_us(samples: &mut [Duration]) -> f64 {
    samples.sort_unstable();
    samples
        .get(samples.len() / 2)
        .map_or(f64::NAN, |p50| p50.as_secs_f64() * 1e6)
}
