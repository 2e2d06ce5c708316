//! Assembly at start: opens the configured storage, loads tenancy, prices, budgets and the
//! guard's state into memory, builds the routes to the providers, and starts the background work
//! (change feed, snapshots). The only module that knows every service and the background loops.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use time::OffsetDateTime;
use tollgate_billing::Catalogue;
use tollgate_config::{Config, Durability};
use tollgate_store::{Ledger, PriceRow, SpoolConfig, Store, StoreError, is_postgres};

use crate::app::{App, StartError, SyncState};
use crate::budget::Budgets;
use crate::front::detach::Background;
use crate::tenancy::Tenancy;
use crate::upstream::build_models;

impl App {
    /// Opens storage, loads tenancy into memory, seeds config prices, and builds the routes.
    pub async fn start(config: Config) -> Result<Arc<App>, StartError> {
        let admin_token = config
            .server
            .admin_token
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                StartError::Setup(
                    "no admin token: set server.admin_token or TOLLGATE_ADMIN_TOKEN".into(),
                )
            })?;
        let (store, ledger) = open_storage(&config).await?;
        let limits = crate::ratelimit::Limits::new(&config).map_err(StartError::Setup)?;
        // The change-feed position before loading: changes made meanwhile are applied by sync.
        let change_seq = store.last_change().await?;
        let tenancy = Tenancy::default();
        tenancy.load(
            store.organizations().await?,
            store.projects(None).await?,
            store.active_keys().await?,
        );
        // Config prices are each model's first catalogue entry.
        for m in &config.models {
            if let (Some(input), Some(output)) = (m.input_price, m.output_price) {
                store
                    .put_price(PriceRow {
                        model: m.name.clone(),
                        input_price: input.to_string(),
                        cached_input_price: m.cached_input_price.map(|p| p.to_string()),
                        output_price: output.to_string(),
                        cache_write_price: m.cache_write_price.map(|p| p.to_string()),
                        effective_from: OffsetDateTime::UNIX_EPOCH,
                    })
                    .await?;
            }
        }
        let mut entries = build_models(&config).map_err(StartError::Setup)?;
        // Each model's and route's metric handles, resolved once.
        let metrics = crate::meters::Metrics::new();
        for entry in &mut entries {
            let handles = metrics.model(&entry.name);
            for route in &mut entry.routes {
                route.metrics = metrics.route(&handles, &route.provider);
            }
            entry.metrics = handles;
        }
        let model_order = entries.iter().map(|m| m.name.clone()).collect();
        let models = entries
            .into_iter()
            .map(|m| (m.name.clone(), Arc::new(m)))
            .collect();
        let telemetry = crate::telemetry::Telemetry::start(&config).map_err(StartError::Setup)?;
        let guard = crate::enforce::Guard::load(&config, &store)
            .await
            .map_err(StartError::Setup)?;
        guard.spawn_snapshots(store.clone());
        let app = Arc::new(App {
            config,
            models,
            model_order,
            tenancy,
            store,
            ledger,
            admin_token,
            started_at: OffsetDateTime::now_utc(),
            catalogue: RwLock::new(Arc::new(Catalogue::default())),
            budgets: Budgets::default(),
            guard,
            limits,
            sync: SyncState::default(),
            api: std::sync::OnceLock::new(),
            console: crate::console::session::Sessions::default(),
            background: Arc::new(Background::default()),
            stored_responses: crate::dialect::StoredResponses::new(100_000),
            metrics,
            telemetry,
        });
        app.reload_prices()
            .await
            .map_err(|e| StartError::Setup(e.message.clone()))?;
        app.budgets
            .load(&app.store, &app.prices())
            .await
            .map_err(|e| StartError::Setup(e.message.clone()))?;
        crate::sync::spawn(app.clone(), change_seq);
        Ok(app)
    }

    /// Reloads the price catalogue from the store.
    pub async fn reload_prices(&self) -> Result<(), crate::error::ApiError> {
        let c = crate::pricing::load_catalogue(&self.store).await?;
        if let Ok(mut slot) = self.catalogue.write() {
            *slot = Arc::new(c);
        }
        Ok(())
    }
}

/// Opens the store and the ledger writer for `storage.url` (SQLite or PostgreSQL).
pub async fn open_storage(config: &Config) -> Result<(Store, Ledger), StoreError> {
    let s = &config.storage;
    let strict = s.durability == Durability::Strict;
    if is_postgres(&s.url) {
        let store = Store::connect(&s.url, s.pool_size).await?;
        let dir = s
            .spool_dir
            .clone()
            .unwrap_or_else(|| "tollgate-data/spool".into());
        let ledger = Ledger::open_postgres(
            &s.url,
            strict,
            s.batch_max,
            Some(SpoolConfig {
                dir: PathBuf::from(dir),
                max_bytes: s.spool_max_bytes,
            }),
        )?;
        Ok((store, ledger))
    } else {
        let path = tollgate_store::sqlite_path(&s.url)?.to_owned();
        let store = Store::open(&path)?;
        let ledger = Ledger::open_paced(
            &path,
            strict,
            s.batch_max,
            std::time::Duration::from_micros(s.commit_delay_us),
        )?;
        Ok((store, ledger))
    }
}
