//! A lock holder in a process of its own, so a test can pause it (SIGSTOP) like a stalled
//! client. Usage: `pylock-test-holder URL KEY EXPIRES_MS`. It acquires, prints
//! `ACQUIRED <fence>`, then obeys lines on stdin: `extend <ms>`, `release`, `quit`, answering
//! `EXTEND ok|lost|error ...` and `RELEASE ok|lost|error ...`.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use pylock::{Error, Locks};
use tokio::io::{AsyncBufReadExt, BufReader};

fn outcome(result: Result<(), Error>) -> String {
    match result {
        Ok(()) => "ok".to_owned(),
        Err(Error::Lost { .. }) => "lost".to_owned(),
        Err(error) => format!("error {error}"),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, key, expires_ms] = args.as_slice() else {
        println!("usage: pylock-test-holder URL KEY EXPIRES_MS");
        std::process::exit(2);
    };
    let expires = Duration::from_millis(expires_ms.parse().expect("EXPIRES_MS"));
    let locks = pylock::connect(url).expect("connect");
    let mut guard = Locks::lock(&locks, key.as_str())
        .expires(expires)
        .timeout(Duration::from_secs(30))
        .acquire()
        .await
        .expect("acquire");
    println!(
        "ACQUIRED {}",
        guard.fence().map_or("-".to_owned(), |f| f.to_string())
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["extend", ms] => {
                let ttl = Duration::from_millis(ms.parse().expect("ms"));
                println!("EXTEND {}", outcome(guard.extend(ttl).await));
            }
            ["release"] => {
                println!("RELEASE {}", outcome(guard.release().await));
                return;
            }
            _ => return,
        }
    }
}
