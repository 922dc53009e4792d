//! Forwarding a committed stream to the client. Bytes already reached the client, so there
//! is no failover any more: a break (reset, idle or total timeout, provider error) ends the
//! stream with an SSE `error` event, no `[DONE]`/`message_stop`, and an aborted body.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use holdfast_core::ResetClass;
use holdfast_proxy::plugin::{BoxError, RequestContext};
use http_body_util::channel::Sender;
use serde_json::Value;

use crate::adapters::Delta;
use crate::engine::{Attempts, Gateway, OpenStream};
use crate::error::AiError;
use crate::handler::{finish_call, CallEnd};
use crate::stream_out::StreamWriter;
use crate::usage::{self, Usage};

/// What the forwarding task needs besides the stream.
pub struct StreamJob {
    pub gateway: Arc<Gateway>,
    pub ctx: RequestContext,
    pub attempts: Attempts,
    pub request: Value,
    pub ttft: Duration,
}

/// The broken stream, as the client's body error.
#[derive(Debug, thiserror::Error)]
#[error("AI stream broke after it started: {0}")]
pub struct StreamBroken(pub String);

enum End {
    Done,
    Broken(AiError),
    ClientGone,
}

/// Relay the stream to the client, then record usage and outcome.
pub async fn forward(
    mut open: OpenStream,
    mut writer: Box<dyn StreamWriter>,
    mut tx: Sender<Bytes, BoxError>,
    job: StreamJob,
) {
    let cfg = job.gateway.config.clone();
    let deployment = open.deployment.config.name.clone();
    let deadline = open.attempt_start + cfg.total_timeout;
    let mut usage: Option<Usage> = None;
    let mut output_text = String::new();

    let mut first = BytesMut::from(&writer.start()[..]);
    for d in &open.first {
        note(d, &mut usage, &mut output_text);
        if let Some(b) = writer.delta(d) {
            first.extend_from_slice(&b);
        }
    }
    let mut end = if tx.send_data(first.freeze()).await.is_err() {
        End::ClientGone
    } else if open.ended {
        End::Done
    } else {
        relay(
            &mut open,
            &mut *writer,
            &mut tx,
            &mut usage,
            &mut output_text,
            deadline,
            cfg.idle_timeout,
            &deployment,
        )
        .await
    };
    drop(open.frames);

    let (u, estimated) = match usage {
        Some(u) => (u, false),
        None => (
            usage::estimate(&open.deployment.config.model, &job.request, &output_text),
            true,
        ),
    };
    if let End::Done = end {
        if tx.send_data(writer.finish(u)).await.is_err() {
            end = End::ClientGone;
        }
    }
    let (outcome, class) = match &end {
        End::Done => ("ok", None),
        End::ClientGone => ("client_aborted", Some(ResetClass::ClientAborted)),
        End::Broken(e) => {
            tracing::warn!(deployment = %deployment, error = %e, "AI stream broke after the first byte");
            open.deployment
                .record_failure(cfg.cooldown_failures, cfg.cooldown, None);
            let _ = tx.send_data(writer.error(e)).await;
            (
                "stream_broken",
                Some(
                    e.reset_class
                        .unwrap_or(ResetClass::UpstreamResetMidResponse),
                ),
            )
        }
    };
    finish_call(
        &job.gateway,
        &job.ctx,
        &job.attempts,
        CallEnd {
            usage: Some(u),
            estimated,
            ttft: Some(job.ttft),
            outcome,
            reset_class: class,
        },
    );
    if let End::Broken(e) = end {
        // Let the data plane write the error event out before the abort: an aborted body
        // drops whatever it has not flushed yet.
        for _ in 0..100 {
            if tx.capacity() == tx.max_capacity() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        // An aborted body: the client sees the connection end without a clean finish.
        tx.abort(Box::new(StreamBroken(e.message)));
    }
}

fn note(d: &Delta, usage: &mut Option<Usage>, text: &mut String) {
    match d {
        Delta::Usage(u) => *usage = Some(*u),
        Delta::Text(t) => text.push_str(t),
        Delta::ToolStart { name, .. } => text.push_str(name),
        Delta::ToolArgs { args, .. } => text.push_str(args),
        Delta::Finish(_) => {}
    }
}

#[allow(clippy::too_many_arguments)]
async fn relay(
    open: &mut OpenStream,
    writer: &mut dyn StreamWriter,
    tx: &mut Sender<Bytes, BoxError>,
    usage: &mut Option<Usage>,
    text: &mut String,
    deadline: Instant,
    idle: Duration,
    deployment: &str,
) -> End {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (limit, what) = if left < idle {
            (left, "the whole stream")
        } else {
            (idle, "the gap between two chunks")
        };
        let deltas = match tokio::time::timeout(limit, open.frames.next()).await {
            Err(_) => {
                let e = AiError::timeout(deployment, what, if left < idle { left } else { idle });
                return End::Broken(e);
            }
            Ok(None) => match open.decoder.end() {
                Ok(d) => {
                    for d in &d {
                        note(d, usage, text);
                        if let Some(b) = writer.delta(d) {
                            if tx.send_data(b).await.is_err() {
                                return End::ClientGone;
                            }
                        }
                    }
                    return End::Done;
                }
                Err(e) => return End::Broken(e),
            },
            Ok(Some(Err(e))) => return End::Broken(AiError::reset(deployment, e, true)),
            Ok(Some(Ok((event, data)))) => match open.decoder.feed(&event, &data) {
                Ok(d) => d,
                Err(e) => return End::Broken(e),
            },
        };
        for d in &deltas {
            note(d, usage, text);
            if let Some(b) = writer.delta(d) {
                if tx.send_data(b).await.is_err() {
                    return End::ClientGone;
                }
            }
        }
    }
}
