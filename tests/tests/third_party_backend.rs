//! A backend written outside the pylock crates, against the public API only, registered under
//! its own scheme: it passes the same conformance suite as the built-in backends. This is the
//! proof that third parties can write backends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pylock::raw::{
    Attempt, Capabilities, ConnectionUrl, Holder, LockBackend, NoticeBoard, ReleaseNotice, Token,
    async_trait,
};
use pylock::{Error, Locks, Registry, Result};
use pylock_core::conformance;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// A toy lock table behind an async mutex, as a third party might write against some store of
/// its own. It gives fencing tokens per key and release notices.
#[derive(Debug, Default)]
struct TableBackend {
    table: Mutex<Table>,
    notices: NoticeBoard,
}

#[derive(Debug, Default)]
struct Table {
    rows: HashMap<String, Row>,
    fences: HashMap<String, u64>,
}

#[derive(Debug)]
struct Row {
    token: Token,
    until: Instant,
    fence: u64,
}

impl Table {
    fn live(&mut self, key: &str) -> Option<&mut Row> {
        let now = Instant::now();
        self.rows.retain(|_, row| row.until > now);
        self.rows.get_mut(key)
    }
}

#[async_trait]
impl LockBackend for TableBackend {
    fn name(&self) -> &'static str {
        "table"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .with_fencing(true)
            .with_notifications(true)
            .with_max_ttl(Some(Duration::from_secs(24 * 3600)))
            .with_max_key_len(Some(200))
            .with_inspection(true)
    }

    async fn try_acquire(&self, key: &str, token: &Token, ttl: Duration) -> Result<Attempt> {
        let mut table = self.table.lock().await;
        if let Some(row) = table.live(key) {
            if row.token == *token {
                row.until = Instant::now() + ttl;
                return Ok(Attempt::Acquired {
                    fence: Some(row.fence),
                });
            }
            return Ok(Attempt::Held {
                remaining: Some(row.until.saturating_duration_since(Instant::now())),
            });
        }
        let fence = {
            let counter = table.fences.entry(key.to_owned()).or_default();
            *counter += 1;
            *counter
        };
        table.rows.insert(
            key.to_owned(),
            Row {
                token: *token,
                until: Instant::now() + ttl,
                fence,
            },
        );
        Ok(Attempt::Acquired { fence: Some(fence) })
    }

    async fn release(&self, key: &str, token: &Token) -> Result<bool> {
        let mut table = self.table.lock().await;
        let owned = table.live(key).is_some_and(|row| row.token == *token);
        if owned {
            table.rows.remove(key);
            drop(table);
            self.notices.notify(key);
        }
        Ok(owned)
    }

    async fn extend(&self, key: &str, token: &Token, ttl: Duration) -> Result<bool> {
        let mut table = self.table.lock().await;
        match table.live(key) {
            Some(row) if row.token == *token => {
                row.until = Instant::now() + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn subscribe(&self, key: &str) -> Result<Option<ReleaseNotice>> {
        Ok(Some(self.notices.subscribe(key).0))
    }

    async fn inspect(&self, key: &str) -> Result<Option<Holder>> {
        let mut table = self.table.lock().await;
        Ok(table.live(key).map(|row| {
            Holder::new(
                Some(row.until.saturating_duration_since(Instant::now())),
                Some(row.fence),
            )
        }))
    }

    async fn force_release(&self, key: &str) -> Result<bool> {
        let mut table = self.table.lock().await;
        let existed = table.live(key).is_some() && table.rows.remove(key).is_some();
        drop(table);
        if existed {
            self.notices.notify(key);
        }
        Ok(existed)
    }
}

/// The third party's URL factory: `table://` with no options.
fn open_table(url: &str) -> Result<Arc<dyn LockBackend>> {
    let url = ConnectionUrl::parse(url)?;
    url.options(&[])?;
    if !url.hosts().is_empty() {
        return Err(url.invalid("table:// takes no host"));
    }
    Ok(Arc::new(TableBackend::default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_backend_registers_its_scheme_and_passes_the_suite() {
    Registry::global().register("table", open_table);
    assert!(Registry::global().schemes().contains(&"table".to_owned()));

    let locks = Locks::connect("table://").expect("the registered scheme connects");
    assert_eq!(locks.backend().name(), "table");
    let report = conformance::run_all(Arc::clone(locks.backend())).await;
    // Everything but the fair queue, which it does not claim to keep.
    assert!(
        report
            .skipped
            .iter()
            .all(|(_, why)| *why == "the backend keeps no fair queue"),
        "{:?}",
        report.skipped
    );
    assert_eq!(
        report.passed.len() + report.skipped.len(),
        conformance::CHECKS.len()
    );
    assert_eq!(report.skipped.len(), 5, "{:?}", report.skipped);

    // Its own URL rules apply through the registry.
    assert!(matches!(
        Locks::connect("table://?shards=4"),
        Err(Error::UnknownOption { .. })
    ));
    assert!(matches!(
        Locks::connect("table://somewhere"),
        Err(Error::InvalidUrl { .. })
    ));
}
