//! Holdfast's data plane: listeners, HTTP/1.1 and HTTP/2, upstream pools, load balancing,
//! health checks, retries, timeouts and drain. Extensions (the AI gateway, API management)
//! plug in through the traits in [`plugin`].

pub mod plugin;
