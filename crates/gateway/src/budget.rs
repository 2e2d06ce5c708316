//! Monthly budgets of organizations and projects: hard limits enforced on the request path
//! (reserve the estimated cost before dispatch, settle to the real cost after, so concurrent
//! requests cannot run far past a budget) and soft alert thresholds reported as events.
//!
//! An organization's budget covers its descendants' usage; a project's covers that project.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;
use tollgate_billing::{Catalogue, Month, crossed_thresholds};
use tollgate_store::{BudgetRow, Store, UsageRecord};

use crate::error::ApiError;
use crate::pricing::{estimate_cost, record_cost};
use crate::ratelimit::Limits;
use crate::tenancy::{KeyEntry, Tenancy};

/// Alert thresholds, in percent of the limit.
pub const ALERTS: [u8; 3] = [50, 80, 100];

#[derive(Debug)]
struct State {
    organization: String,
    project: Option<String>,
    limit: Decimal,
    month: Month,
    spent: Decimal,
    reserved: Decimal,
}

impl State {
    fn roll(&mut self, now: OffsetDateTime) {
        if let Ok(m) = Month::containing(now)
            && m != self.month
        {
            self.month = m;
            self.spent = Decimal::ZERO;
        }
    }
}

/// A soft-threshold crossing.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetEvent {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub organization: String,
    pub project: Option<String>,
    pub threshold_percent: u8,
    pub spent: String,
    pub limit: String,
}

/// The cost reserved by one request against the budgets that cover it: settled to the real cost
/// with [`Budgets::settle`], or given back when dropped unsettled.
#[derive(Default)]
pub struct Hold {
    states: Vec<Arc<Mutex<State>>>,
    amount: Decimal,
    /// Also reserved on the counters shared by all instances (Redis), settled there too.
    shared: Option<SharedHold>,
}

/// The part of a hold kept on the shared counters: which ones, and how much (nano-USD).
struct SharedHold {
    limits: Arc<tollgate_sharedlimit::SharedLimits>,
    ids: Vec<String>,
    nano: i64,
}

impl Hold {
    /// The estimated cost reserved.
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    /// The hold, also reserved (`nano` nano-USD) on the shared counters `ids`.
    pub fn shared_with(
        mut self,
        limits: Arc<tollgate_sharedlimit::SharedLimits>,
        ids: Vec<String>,
        nano: i64,
    ) -> Hold {
        self.shared = Some(SharedHold { limits, ids, nano });
        self
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        for st in self.states.drain(..) {
            if let Ok(mut s) = st.lock() {
                s.reserved -= self.amount;
            }
        }
        if let Some(shared) = self.shared.take() {
            crate::ratelimit::adjust_shared_budget(shared.limits, shared.ids, -shared.nano);
        }
    }
}

/// All budgets, in memory.
#[derive(Default)]
pub struct Budgets {
    map: DashMap<(String, String), Arc<Mutex<State>>>,
    any: AtomicBool,
    events: Mutex<Vec<BudgetEvent>>,
}

fn money(d: Decimal) -> String {
    tollgate_billing::money::format_money(tollgate_billing::round_cents(d))
}

impl Budgets {
    /// Loads every stored budget with its month-to-date spend.
    pub async fn load(&self, store: &Store, catalogue: &Catalogue) -> Result<(), ApiError> {
        let rows = store
            .budgets()
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        for row in rows {
            self.put(store, catalogue, &row).await?;
        }
        Ok(())
    }

    /// Sets a budget. A new budget starts from the month-to-date spend in the ledger; an existing
    /// one only takes the new limit (its running spend is already exact, and re-reading the ledger
    /// while requests are settling would miss the ones not yet written).
    pub async fn put(
        &self,
        store: &Store,
        catalogue: &Catalogue,
        row: &BudgetRow,
    ) -> Result<(), ApiError> {
        let limit = Decimal::from_str(&row.monthly_limit)
            .map_err(|_| ApiError::internal("A stored budget is not a decimal."))?;
        let key = (
            row.organization.clone(),
            row.project.clone().unwrap_or_default(),
        );
        if let Some(existing) = self.map.get(&key) {
            if let Ok(mut s) = existing.lock() {
                s.limit = limit;
            }
            return Ok(());
        }
        let now = OffsetDateTime::now_utc();
        let month = Month::containing(now).map_err(|e| ApiError::internal(e.to_string()))?;
        let orgs = match &row.project {
            Some(_) => vec![row.organization.clone()],
            None => store
                .subtree(&row.organization)
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?,
        };
        let rows = crate::pricing::priced_usage(
            store,
            catalogue,
            orgs,
            row.project.clone(),
            Some(month.start()),
            None,
        )
        .await?;
        let spent = rows.iter().map(|(_, c)| *c).sum::<Decimal>();
        let state = State {
            organization: row.organization.clone(),
            project: row.project.clone(),
            limit,
            month,
            spent,
            reserved: Decimal::ZERO,
        };
        self.map
            .entry(key)
            .or_insert_with(|| Arc::new(Mutex::new(state)));
        self.any.store(true, Ordering::Release);
        Ok(())
    }

    fn covering(
        &self,
        tenancy: &Tenancy,
        organization: &str,
        project: Option<&str>,
    ) -> Vec<Arc<Mutex<State>>> {
        let mut out = Vec::new();
        if let Some(p) = project
            && let Some(s) = self.map.get(&(organization.to_owned(), p.to_owned()))
        {
            out.push(s.clone());
        }
        for org in tenancy.ancestors(organization) {
            if let Some(s) = self.map.get(&(org.to_string(), String::new())) {
                out.push(s.clone());
            }
        }
        out
    }

    /// Reserves the estimated cost of a request against every budget that covers it, or answers
    /// 429 `insufficient_quota` when one has been reached (reserving nothing then). The catalogue
    /// is read only when a budget covers the request.
    pub fn reserve(
        &self,
        tenancy: &Tenancy,
        catalogue: impl FnOnce() -> Arc<Catalogue>,
        key: &KeyEntry,
        model: &str,
        input_tokens: u64,
        output_tokens: u64,
    ) -> Result<Option<Hold>, ApiError> {
        if !self.any.load(Ordering::Acquire) {
            return Ok(None);
        }
        let states = self.covering(tenancy, &key.organization, key.project.as_deref());
        if states.is_empty() {
            return Ok(None);
        }
        let now = OffsetDateTime::now_utc();
        let amount = estimate_cost(&catalogue(), model, now, input_tokens, output_tokens);
        let mut taken: Vec<Arc<Mutex<State>>> = Vec::with_capacity(states.len());
        for st in &states {
            let Ok(mut s) = st.lock() else { continue };
            s.roll(now);
            if s.spent.saturating_add(s.reserved) >= s.limit {
                let scope = match &s.project {
                    Some(p) => format!("project {p}"),
                    None => format!("organization {}", s.organization),
                };
                let limit = s.limit;
                drop(s);
                for t in &taken {
                    if let Ok(mut s) = t.lock() {
                        s.reserved -= amount;
                    }
                }
                return Err(ApiError::insufficient_quota(format!(
                    "You exceeded your current quota: the monthly budget of {} USD for {scope} has been reached.",
                    money(limit)
                )));
            }
            s.reserved = s.reserved.saturating_add(amount);
            taken.push(st.clone());
        }
        Ok(Some(Hold {
            states: taken,
            amount,
            shared: None,
        }))
    }

    /// Replaces a reservation by the record's real cost and reports threshold crossings.
    pub fn settle(&self, catalogue: &Catalogue, mut hold: Hold, record: &UsageRecord) {
        let actual = record_cost(catalogue, record);
        let now = OffsetDateTime::now_utc();
        if let Some(shared) = hold.shared.take() {
            let delta = crate::ratelimit::nano_usd(actual).saturating_sub(shared.nano);
            crate::ratelimit::adjust_shared_budget(shared.limits, shared.ids, delta);
        }
        for st in std::mem::take(&mut hold.states) {
            let Ok(mut s) = st.lock() else { continue };
            s.reserved -= hold.amount;
            s.roll(now);
            let before = s.spent;
            s.spent = s.spent.saturating_add(actual);
            self.report(&s, before, now);
        }
    }

    /// Reserves a budget hold on the shared counters too (no-op without Redis or without a hold).
    /// Refused: the local hold is given back and the client gets 429 `insufficient_quota`.
    pub async fn reserve_shared(
        &self,
        limits: &Limits,
        hold: Option<Hold>,
    ) -> Result<Option<Hold>, ApiError> {
        let Some(shared) = limits.shared() else {
            return Ok(hold);
        };
        let Some(hold) = hold else {
            return Ok(None);
        };
        let counters = self.shared_counters(&hold);
        let shared = shared.clone();
        let call = async move {
            let amount = crate::ratelimit::nano_usd(hold.amount());
            match shared.reserve_budget(&counters, amount).await {
                Ok(None) => {
                    let ids = counters.into_iter().map(|c| c.id).collect();
                    BudgetAnswer::Held(hold.shared_with(shared, ids, amount))
                }
                Ok(Some(i)) => {
                    BudgetAnswer::Refused(counters.get(i).map(|c| c.id.clone()).unwrap_or_default())
                }
                Err(error) => BudgetAnswer::Down(error, hold),
            }
        };
        match crate::ratelimit::finished_even_if_dropped(call).await {
            Some(BudgetAnswer::Held(hold)) => Ok(Some(hold)),
            Some(BudgetAnswer::Refused(scope)) => {
                limits.refused.fetch_add(1, Ordering::Relaxed);
                Err(ApiError::insufficient_quota(format!(
                    "You exceeded your current quota: the monthly budget ({scope}) has been reached."
                )))
            }
            answer => {
                limits.redis_errors.fetch_add(1, Ordering::Relaxed);
                let hold = match answer {
                    Some(BudgetAnswer::Down(error, hold)) => {
                        tracing::warn!(%error, "Shared budgets unavailable.");
                        Some(hold)
                    }
                    _ => None,
                };
                if limits.fails_closed() {
                    return Err(ApiError::unavailable(
                        "Budgets cannot be checked right now, so the request is refused. Retry shortly.",
                    ));
                }
                limits.fallbacks.fetch_add(1, Ordering::Relaxed);
                Ok(hold)
            }
        }
    }

    /// The counters shared through Redis of the budgets a hold covers (nano-USD; see
    /// [`crate::ratelimit`]): id `{organization}:{project}:{month}`, limit, and the month-to-date
    /// spend known here (where a missing counter starts).
    pub fn shared_counters(&self, hold: &Hold) -> Vec<tollgate_sharedlimit::BudgetCounter> {
        hold.states
            .iter()
            .filter_map(|st| {
                let s = st.lock().ok()?;
                Some(tollgate_sharedlimit::BudgetCounter {
                    id: format!(
                        "{}:{}:{}",
                        s.organization,
                        s.project.as_deref().unwrap_or(""),
                        s.month
                    ),
                    limit: crate::ratelimit::nano_usd(s.limit),
                    start: crate::ratelimit::nano_usd(s.spent),
                })
            })
            .collect()
    }

    /// Adds imported usage of the current month to the budgets that cover it.
    pub fn add_spent(&self, tenancy: &Tenancy, record: &UsageRecord, catalogue: &Catalogue) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let now = OffsetDateTime::now_utc();
        if Month::containing(record.time).ok() != Month::containing(now).ok() {
            return;
        }
        let actual = record_cost(catalogue, record);
        for st in self.covering(tenancy, &record.organization, record.project.as_deref()) {
            let Ok(mut s) = st.lock() else { continue };
            s.roll(now);
            let before = s.spent;
            s.spent = s.spent.saturating_add(actual);
            self.report(&s, before, now);
        }
    }

    fn report(&self, s: &State, before: Decimal, now: OffsetDateTime) {
        for t in crossed_thresholds(s.limit, before, s.spent, &ALERTS) {
            tracing::warn!(
                organization = %s.organization,
                project = ?s.project,
                threshold_percent = t,
                spent = %money(s.spent),
                limit = %money(s.limit),
                "Budget threshold crossed."
            );
            if let Ok(mut ev) = self.events.lock() {
                ev.push(BudgetEvent {
                    time: now,
                    organization: s.organization.clone(),
                    project: s.project.clone(),
                    threshold_percent: t,
                    spent: money(s.spent),
                    limit: money(s.limit),
                });
                if ev.len() > 10_000 {
                    ev.remove(0);
                }
            }
        }
    }

    /// Status of one budget.
    pub fn status(&self, organization: &str, project: Option<&str>) -> serde_json::Value {
        let key = (
            organization.to_owned(),
            project.unwrap_or_default().to_owned(),
        );
        match self
            .map
            .get(&key)
            .and_then(|s| s.lock().ok().map(|s| status_json(&s)))
        {
            Some(v) => v,
            None => serde_json::Value::Null,
        }
    }

    /// The exact cost held by requests in flight against a budget (`None`: no such budget).
    pub fn reserved(&self, organization: &str, project: Option<&str>) -> Option<Decimal> {
        let key = (
            organization.to_owned(),
            project.unwrap_or_default().to_owned(),
        );
        let state = self.map.get(&key)?;
        let s = state.lock().ok()?;
        Some(s.reserved)
    }

    /// Every budget of an organization.
    pub fn statuses(&self, organization: &str) -> Vec<serde_json::Value> {
        self.map
            .iter()
            .filter(|e| e.key().0 == organization)
            .filter_map(|e| e.value().lock().ok().map(|s| status_json(&s)))
            .collect()
    }

    pub fn events(&self, organization: &str) -> Vec<BudgetEvent> {
        self.events
            .lock()
            .map(|ev| {
                ev.iter()
                    .filter(|e| e.organization == organization)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn all_events(&self) -> Vec<BudgetEvent> {
        self.events.lock().map(|ev| ev.clone()).unwrap_or_default()
    }
}

fn status_json(s: &State) -> serde_json::Value {
    json!({
        "organization": s.organization, "project": s.project, "month": s.month.to_string(),
        "monthly_limit": money(s.limit), "spent": money(s.spent), "reserved": money(s.reserved),
        "exhausted": s.spent >= s.limit,
    })
}
/// How the shared budget counters answered a hold.
enum BudgetAnswer {
    Held(Hold),
    /// Refused on this counter (the hold was given back).
    Refused(String),
    Down(tollgate_sharedlimit::SharedLimitError, Hold),
}
