//! Forwarding a committed stream to the client. Bytes already reached the client, so there
//! is no failover any more: a break (reset, idle or total timeout, provider error) ends the
//! stream with an SSE `error` event, no `[DONE]`/`message_stop`, and an aborted body.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use holdfast_core::ResetClass;
use holdfast_proxy::plugin::{BoxError, RequestContext};
use hyper::body::Frame;
use serde_json::Value;
use tokio::sync::mpsc;

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

/// The client's side of a streamed answer: frames from the forwarding task, in order, then
/// either the end or an error (an aborted body).
pub struct StreamBody {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl hyper::body::Body for StreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }
}

/// The forwarding task's side. Unlike `http_body_util`'s channel, it can tell at once when
/// the client's side was dropped (the client went away), so the task stops reading the
/// provider instead of waiting for the next chunk or a timeout.
pub struct StreamSender {
    tx: mpsc::Sender<Result<Bytes, BoxError>>,
}

/// The client's side of the stream is gone.
#[derive(Debug)]
struct Gone;

impl StreamSender {
    async fn send(&self, data: Bytes) -> Result<(), Gone> {
        self.tx.send(Ok(data)).await.map_err(|_| Gone)
    }

    /// Resolves when the client's side is dropped.
    async fn closed(&self) {
        self.tx.closed().await
    }

    fn drained(&self) -> bool {
        self.tx.capacity() == self.tx.max_capacity()
    }

    /// End the body with an error: the client sees the connection end without a clean finish.
    async fn abort(self, e: BoxError) {
        let _ = self.tx.send(Err(e)).await;
    }
}

/// A connected pair for one streamed answer (`buffer` frames in flight).
pub fn stream_body(buffer: usize) -> (StreamSender, StreamBody) {
    let (tx, rx) = mpsc::channel(buffer.max(1));
    (StreamSender { tx }, StreamBody { rx })
}

enum End {
    Done,
    Broken(AiError),
    ClientGone,
}

/// Usage seen so far: the provider's figures once it sent them, else a running estimate.
struct Progress {
    model: String,
    provider: Option<Usage>,
    text: String,
    input_estimate: u64,
    output_estimate: u64,
}

impl Progress {
    fn note(&mut self, d: &Delta) {
        let piece = match d {
            Delta::Usage(u) => {
                self.provider = Some(*u);
                return;
            }
            Delta::Text(t) => t.as_str(),
            Delta::ToolStart { name, .. } => name.as_str(),
            Delta::ToolArgs { args, .. } => args.as_str(),
            Delta::Finish(_) => return,
            Delta::Event(e) => {
                // Thinking comes only as events (the canonical deltas have no thinking).
                if let Some(t) = e["delta"]["thinking"].as_str() {
                    self.text.push_str(t);
                    self.output_estimate += usage::count_tokens(&self.model, t);
                }
                return;
            }
            Delta::Chunk(c) => {
                // Choice 0 also comes as canonical deltas; count the other choices here.
                for choice in c["choices"].as_array().into_iter().flatten() {
                    if choice["index"].as_u64().unwrap_or(0) == 0 {
                        continue;
                    }
                    for key in ["content", "refusal"] {
                        if let Some(t) = choice["delta"][key].as_str() {
                            self.text.push_str(t);
                            self.output_estimate += usage::count_tokens(&self.model, t);
                        }
                    }
                }
                return;
            }
        };
        self.text.push_str(piece);
        self.output_estimate += usage::count_tokens(&self.model, piece);
    }

    /// (usage, estimated) as far as the stream got.
    fn so_far(&self) -> (Usage, bool) {
        match self.provider {
            Some(u) => (u, false),
            None => (
                Usage {
                    input: self.input_estimate,
                    output: self.output_estimate,
                },
                true,
            ),
        }
    }
}

/// Relay the stream to the client, then record usage and outcome.
///
/// While it runs, the call's record already says `client_aborted` with the deployment,
/// attempts and the tokens so far: the data plane writes the record the moment the client's
/// side of the body is dropped, which is before this task can notice. A normal end, or a
/// broken stream, overwrites it before the body ends.
pub async fn forward(
    mut open: OpenStream,
    mut writer: Box<dyn StreamWriter>,
    tx: StreamSender,
    job: StreamJob,
) {
    let cfg = job.gateway.config.clone();
    let deployment = open.deployment.config.name.clone();
    let deadline = open.attempt_start + cfg.total_timeout;
    let mut progress = Progress {
        model: open.deployment.config.model.clone(),
        provider: None,
        text: String::new(),
        input_estimate: 0,
        output_estimate: 0,
    };

    // A writer that reports input tokens at the start (Anthropic's `message_start`, when the
    // provider's own figure is not known yet) gets the estimate before the first bytes.
    let early_estimate = writer.wants_input_estimate(&open.first);
    if early_estimate {
        progress.input_estimate = usage::estimate_input(&progress.model, &job.request);
        writer.set_input_estimate(progress.input_estimate);
    }
    let mut first = BytesMut::from(&writer.start(&open.first)[..]);
    for d in &open.first {
        progress.note(d);
        if let Some(b) = writer.delta(d) {
            first.extend_from_slice(&b);
        }
    }
    let sent = tokio::select! {
        biased;
        _ = tx.closed() => Err(Gone),
        r = tx.send(first.freeze()) => r,
    };
    let mut end = if sent.is_err() {
        End::ClientGone
    } else {
        // Counted once, after the first bytes are out: the input estimate is only needed if
        // the provider reports no usage, or the client leaves before it does.
        if !early_estimate {
            progress.input_estimate = usage::estimate_input(&progress.model, &job.request);
        }
        provisional(&job, &progress);
        if open.ended {
            End::Done
        } else {
            relay(&mut open, &mut *writer, &tx, &mut progress, &job, deadline).await
        }
    };
    // Stop reading the provider now (closes its connection when the stream is cut short).
    drop(open.frames);

    let (u, estimated) = match progress.provider {
        Some(u) => (u, false),
        None => (
            Usage {
                input: progress.input_estimate,
                output: usage::count_tokens(&progress.model, &progress.text),
            },
            true,
        ),
    };
    if let End::Done = end {
        let last = writer.finish(u, estimated);
        if !last.is_empty() && tx.send(last).await.is_err() {
            end = End::ClientGone;
        }
    }
    let (outcome, class) = match &end {
        End::Done => ("ok", None),
        End::ClientGone => ("client_aborted", Some(ResetClass::ClientAborted)),
        End::Broken(e) => {
            tracing::warn!(deployment = %deployment, error = %e, "AI stream broke after the first byte");
            open.deployment.record_failure(
                cfg.cooldown_failures,
                cfg.cooldown,
                None,
                e.status == 429,
            );
            let _ = tx.send(writer.error(e)).await;
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
            if tx.drained() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.abort(Box::new(StreamBroken(e.message))).await;
    }
}

/// Write the record a call gets if its client goes away now.
fn provisional(job: &StreamJob, progress: &Progress) {
    let (u, estimated) = progress.so_far();
    finish_call(
        &job.gateway,
        &job.ctx,
        &job.attempts,
        CallEnd {
            usage: Some(u),
            estimated,
            ttft: Some(job.ttft),
            outcome: "client_aborted",
            reset_class: None,
        },
    );
}

/// How long the provider may be silent before the client gets a heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

async fn relay(
    open: &mut OpenStream,
    writer: &mut dyn StreamWriter,
    tx: &StreamSender,
    progress: &mut Progress,
    job: &StreamJob,
    deadline: Instant,
) -> End {
    let cfg = &job.gateway.config;
    let idle = cfg.idle_timeout;
    let deployment = open.deployment.config.name.as_str();
    let mut last_frame = Instant::now();
    let mut last_write = last_frame;
    loop {
        let idle_deadline = last_frame + idle;
        let (limit, what, configured) = if deadline <= idle_deadline {
            (deadline, "the whole stream", cfg.total_timeout)
        } else {
            (idle_deadline, "the gap between two chunks", idle)
        };
        let beat = last_write + HEARTBEAT;
        let next = tokio::select! {
            biased;
            _ = tx.closed() => return End::ClientGone,
            _ = tokio::time::sleep_until(limit.into()) => {
                return End::Broken(AiError::timeout(deployment, what, configured));
            }
            next = open.frames.next() => next,
            _ = tokio::time::sleep_until(beat.into()) => {
                if tx.send(writer.heartbeat()).await.is_err() {
                    return End::ClientGone;
                }
                last_write = Instant::now();
                continue;
            }
        };
        last_frame = Instant::now();
        let deltas = match next {
            None => match open.decoder.end() {
                Ok(d) => {
                    for d in &d {
                        progress.note(d);
                        if let Some(b) = writer.delta(d) {
                            if tx.send(b).await.is_err() {
                                return End::ClientGone;
                            }
                        }
                    }
                    return End::Done;
                }
                Err(e) => return End::Broken(e),
            },
            Some(Err(e)) => return End::Broken(AiError::reset(deployment, e, true)),
            Some(Ok((event, data))) => match open.decoder.feed(&event, &data) {
                Ok(d) => d,
                Err(e) => return End::Broken(e),
            },
        };
        if deltas.is_empty() {
            continue;
        }
        for d in &deltas {
            progress.note(d);
            if let Some(b) = writer.delta(d) {
                let sent = tokio::select! {
                    biased;
                    _ = tx.closed() => Err(Gone),
                    r = tx.send(b) => r,
                };
                if sent.is_err() {
                    return End::ClientGone;
                }
                last_write = Instant::now();
            }
        }
        provisional(job, progress);
    }
}
