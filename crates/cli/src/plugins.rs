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
    if config.management.is_none() {
        // Without it, a `service` route would be served with no key check at all.
        if let Some(msg) = unmanaged_service_route(config) {
            anyhow::bail!(msg);
        }
        extensions.factories.push(Arc::new(NoManagement));
    }
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

/// Why a config without `[management]` cannot be served: a route that names a `service`.
fn unmanaged_service_route(config: &Config) -> Option<String> {
    let route = config.routes.iter().find(|r| r.service.is_some())?;
    Some(format!(
        "route `{}` has `service = \"{}\"` but the config has no [management] section: add one (see docs/MANAGEMENT.md) or remove `service`",
        route.name,
        route.service.as_deref().unwrap_or_default()
    ))
}

/// Started without API management: a reload may not add it (it starts with the process) nor
/// add a `service` route (it would be unprotected).
struct NoManagement;

impl PluginFactory for NoManagement {
    fn build(&self, config: &Config) -> Result<Plugins, String> {
        if config.management.is_some() {
            return Err("[management] was added: starting API management needs a restart".into());
        }
        match unmanaged_service_route(config) {
            Some(msg) => Err(msg),
            None => Ok(Plugins::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_routes_need_management() {
        let mut config = Config::default();
        assert!(NoManagement.build(&config).is_ok());
        let mut route = holdfast_core::config::route::Route::catch_all("up");
        route.name = "pay".into();
        route.service = Some("pay".into());
        config.routes.push(route);
        let err = NoManagement.build(&config).err().expect("refused");
        assert!(
            err.contains("route `pay`") && err.contains("[management]"),
            "{err}"
        );
        config.routes.clear();
        config.management = Some(Default::default());
        let err = NoManagement.build(&config).err().expect("refused");
        assert!(err.contains("restart"), "{err}");
    }
}
