//! Serve the `ai` handler alone on a listener, without the data plane: for the SDK tests
//! and benchmarks of the handler itself (`examples/ai_standalone.rs`). Production traffic
//! goes through `holdfast serve` and routes with `handler = "ai"`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use holdfast_proxy::plugin::{BoxError, RequestContext, RouteHandler};
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Accept connections forever, answering every request with `handler` (HTTP/1.1 and h2c).
pub async fn serve(listener: TcpListener, handler: Arc<dyn RouteHandler>) {
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let handler = handler.clone();
                let ctx = RequestContext {
                    route: Arc::from("ai"),
                    service: None,
                    client_addr: client,
                    start: Instant::now(),
                    extra: Arc::new(Mutex::new(Default::default())),
                };
                async move {
                    let req = req.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed());
                    Ok::<_, std::convert::Infallible>(handler.handle(req, ctx).await)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
