//! The built-in demo upstream (`holdfast serve --demo`, or `server.demo_upstream`): a tiny
//! HTTP server that answers every request with a short JSON description of it.

use std::net::SocketAddr;

use http::{header, Response};
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::responses::full;

/// Bind `addr` and serve the demo upstream in the background; returns the bound address.
pub async fn start(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let (head, mut body) = req.into_parts();
                    // Read the whole request body before answering: a server that answers
                    // and closes with unread bytes resets its client.
                    let mut bytes_in = 0u64;
                    while let Some(Ok(frame)) = body.frame().await {
                        bytes_in += frame.data_ref().map_or(0, |d| d.len() as u64);
                    }
                    let body = serde_json::json!({
                        "hello": "from the Holdfast demo upstream",
                        "method": head.method.as_str(),
                        "path": head.uri.path(),
                        "bytes_in": bytes_in,
                        "via": head.headers.get(header::VIA).and_then(|v| v.to_str().ok()),
                    })
                    .to_string()
                        + "\n";
                    let mut resp = Response::new(full(body));
                    resp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(local)
}
