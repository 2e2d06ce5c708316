//! Many instances, one truth: opening the configured storage, and keeping this instance's
//! in-memory state (keys, organizations, projects, prices, budgets, and the guard's owner keys,
//! owner-scoped reviews, exemptions and actions taken) in step with changes made by any
//! instance.
//!
//! Every control change writes a row to the store's `changes` feed in the same transaction. Each
//! instance polls `seq > last` every `storage.sync_interval_ms` (250 ms by default) and reloads
//! the rows named there, so a key created or revoked on one instance is honoured by all within
//! a second. A failed poll is retried at the next tick from the same `seq`: nothing is skipped.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tollgate_store::{ChangeKind, StoreError};

use crate::app::App;

/// Starts the poller from `seq` (the feed position read before the in-memory state was loaded).
pub fn spawn(app: Arc<App>, seq: i64) {
    app.sync.last_seq.store(seq, Ordering::Relaxed);
    let every = Duration::from_millis(app.config.storage.sync_interval_ms.max(10));
    let weak = Arc::downgrade(&app);
    drop(app);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(app) = weak.upgrade() else { break };
            if let Err(error) = poll(&app).await {
                app.sync.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%error, "Change feed poll failed; retrying.");
            }
        }
    });
}

/// Applies every change after the last one seen.
pub async fn poll(app: &App) -> Result<(), StoreError> {
    loop {
        let last = app.sync.last_seq.load(Ordering::Relaxed);
        let changes = app.store.changes_since(last, 1000).await?;
        let Some(newest) = changes.last().map(|c| c.seq) else {
            return Ok(());
        };
        let mut prices = false;
        let mut budgets = false;
        // Organizations whose guard state to reload, once per batch each.
        let mut reviews = BTreeSet::new();
        let mut exemptions = BTreeSet::new();
        let mut actions = BTreeSet::new();
        for c in &changes {
            match c.kind {
                ChangeKind::Organization => {
                    if let Some(o) = app.store.organization(&c.id).await? {
                        app.tenancy.put_org(&o);
                    }
                }
                ChangeKind::Project => {
                    if let Some(p) = app.store.project(&c.id).await?
                        && !app.tenancy.has_project_limits(&p.id)
                    {
                        app.tenancy.put_project(&p);
                    }
                }
                ChangeKind::Key => match app.store.key(&c.id).await? {
                    Some(k) if k.revoked_at.is_some() => app.tenancy.remove_key(&k.id),
                    // A key this instance already holds keeps its local buckets.
                    Some(k) if !app.tenancy.has_key_id(&k.id) => app.tenancy.put_key(&k),
                    _ => {}
                },
                ChangeKind::Price => prices = true,
                ChangeKind::Budget => budgets = true,
                ChangeKind::OwnerKey => {
                    let key = app.store.owner_key(&c.id).await?;
                    app.guard.apply_owner_key(&c.id, key);
                }
                ChangeKind::OwnerReview => {
                    reviews.insert(c.id.as_str());
                }
                ChangeKind::GuardExemption => {
                    exemptions.insert(c.id.as_str());
                }
                ChangeKind::GuardAction => {
                    actions.insert(c.id.as_str());
                }
                // Contracts are read from the store when invoices are computed, owner reports
                // when they are listed.
                ChangeKind::Contract | ChangeKind::OwnerReport | ChangeKind::Other => {}
            }
            app.sync.applied.fetch_add(1, Ordering::Relaxed);
        }
        for org in reviews {
            let read_at = Instant::now();
            let rows = app.store.owner_reviews(Some(org)).await?;
            app.guard.apply_owner_reviews(org, rows, read_at);
        }
        for org in exemptions {
            let rows = app.store.guard_exemptions(Some(org)).await?;
            app.guard.apply_exemptions(org, rows);
        }
        for org in actions {
            let read_at = Instant::now();
            let rows = app.store.guard_actions(Some(org)).await?;
            app.guard.apply_actions(org, rows, read_at);
        }
        if prices && let Err(e) = app.reload_prices().await {
            tracing::warn!(error = %e.message, "Price reload after a change failed.");
        }
        if budgets && let Err(e) = app.budgets.load(&app.store, &app.prices()).await {
            tracing::warn!(error = %e.message, "Budget reload after a change failed.");
        }
        app.sync.last_seq.store(newest, Ordering::Relaxed);
        if changes.len() < 1000 {
            return Ok(());
        }
    }
}
