//! Composition of the gateway's extensions: the AI gateway and API management plug into the
//! data plane here. Each extension adds its factory (and, for management, its admin routes).

use std::sync::Arc;

use holdfast_core::config::Config;
use holdfast_proxy::plugin::{PluginFactory, Plugins};

/// All extension factories, built into one [`Plugins`] at start and on every reload.
#[derive(Default)]
pub struct Extensions {
    factories: Vec<Arc<dyn PluginFactory>>,
    /// API management, when `[management]` is configured (its call log needs a flush at stop).
    management: Option<Arc<holdfast_admin::Management>>,
}

impl Extensions {
    /// Graceful stop, after the data plane drained: flushes the API-management call log.
    pub async fn shutdown(&self) {
        if let Some(m) = &self.management {
            m.shutdown().await;
        }
    }
}

impl PluginFactory for Extensions {
    fn build(&self, config: &Config) -> Result<Plugins, String> {
        let mut plugins = Plugins::default();
        for factory in &self.factories {
            plugins.merge(factory.build(config)?);
        }
        Ok(plugins)
    }
}

/// Build the extensions for `serve`, and the admin API routes to mount on the admin listener
/// (beside `/metrics`), if the config enables them.
pub async fn init(config: &Config) -> anyhow::Result<(Extensions, Option<axum::Router>)> {
    let mut extensions = Extensions::default();
    // AI gateway: registers the `ai` route handler when the config has an `[ai]` section.
    extensions
        .factories
        .push(Arc::new(holdfast_ai::AiPluginFactory::new()));
    // API management: key auth, subscriptions, rate limits, call log; admin API under /admin.
    let mut admin_router = None;
    if let Some(mgmt_config) = &config.management {
        let mgmt = holdfast_admin::Management::start(mgmt_config).await?;
        admin_router = Some(mgmt.router());
        extensions
            .factories
            .push(Arc::new(holdfast_admin::ManagementFactory(mgmt.clone())));
        extensions.management = Some(mgmt);
    }
    Ok((extensions, admin_router))
}
