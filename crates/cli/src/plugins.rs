//! Composition of the gateway's extensions: the AI gateway and API management plug into the
//! data plane here. Each extension adds its factory (and, for management, its admin routes).

use std::sync::Arc;

use holdfast_core::config::Config;
use holdfast_proxy::plugin::{PluginFactory, Plugins};

/// All extension factories, built into one [`Plugins`] at start and on every reload.
#[derive(Default)]
pub struct Extensions {
    factories: Vec<Arc<dyn PluginFactory>>,
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
pub async fn init(_config: &Config) -> anyhow::Result<(Extensions, Option<axum::Router>)> {
    let mut extensions = Extensions::default();
    // AI gateway: registers the `ai` route handler when the config has an `[ai]` section.
    extensions
        .factories
        .push(Arc::new(holdfast_ai::AiPluginFactory::new()));
    Ok((extensions, None))
}
