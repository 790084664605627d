//! The DXP recorder: takes interaction events from every channel with `do_send` (never on a
//! request's hot path) and appends them to the event log in batches.

use crate::storage::Storage;
use actix::prelude::*;
use protocol::Event;
use std::sync::Arc;
use std::time::Duration;

const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Buffered events that start an append at once, without waiting for the next tick.
const MAX_BATCH: usize = 512;
/// Most events in one append: a burst goes out as several appends, so the log's readers (the
/// analyst) fold the first while the next are written.
const MAX_APPEND: usize = 4096;
/// Appends waiting on storage at once (the writer groups them into its commits).
const MAX_IN_FLIGHT: usize = 4;
/// Events kept while storage fails; beyond this the oldest are dropped (and counted in logs).
const MAX_BUFFER: usize = 100_000;

/// The recorder's state: events not yet appended.
pub struct Recorder {
    storage: Arc<dyn Storage>,
    buffer: Vec<Event>,
    in_flight: usize,
}

/// Records one event.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Record(pub Event);

/// Records a batch of events in one message (a channel's intake, the benchmark).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecordMany(pub Vec<Event>);

/// Appends everything buffered now; answers once it is durable (for shutdown and tests).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

impl Recorder {
    pub fn new(storage: Arc<dyn Storage>) -> Recorder {
        Recorder {
            storage,
            buffer: Vec::new(),
            in_flight: 0,
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        while self.in_flight < MAX_IN_FLIGHT && !self.buffer.is_empty() {
            let rest = self.buffer.split_off(self.buffer.len().min(MAX_APPEND));
            let batch: Arc<[Event]> = std::mem::replace(&mut self.buffer, rest).into();
            self.append(batch, ctx);
        }
        crate::monitor::metrics::recorder_buffered(self.buffer.len());
    }

    fn append(&mut self, batch: Arc<[Event]>, ctx: &mut Context<Self>) {
        let storage = self.storage.clone();
        self.in_flight += 1;
        ctx.spawn(
            async move {
                // The recorder keeps its handle on the batch, to retry it if the append fails.
                let result = storage.append_fresh(batch.clone()).await;
                (result, batch)
            }
            .into_actor(self)
            .map(|(result, batch), act, ctx| {
                act.in_flight -= 1;
                match result {
                    Ok(()) if act.buffer.len() >= MAX_BATCH => act.flush(ctx),
                    Ok(()) => {}
                    Err(e) => {
                        tracing::error!(error = %e, events = batch.len(), "appending events failed; will retry");
                        let mut kept = batch.to_vec();
                        kept.append(&mut act.buffer);
                        let excess = kept.len().saturating_sub(MAX_BUFFER);
                        if excess > 0 {
                            tracing::error!(dropped = excess, "event buffer full; dropping the oldest events");
                            kept.drain(..excess);
                        }
                        act.buffer = kept;
                        crate::monitor::metrics::recorder_buffered(act.buffer.len());
                    }
                }
            }),
        );
    }
}

impl Actor for Recorder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(FLUSH_EVERY, |act, ctx| act.flush(ctx));
    }
}

impl Handler<Record> for Recorder {
    type Result = ();

    fn handle(&mut self, msg: Record, ctx: &mut Context<Self>) {
        self.buffer.push(msg.0);
        crate::monitor::metrics::recorder_buffered(self.buffer.len());
        if self.buffer.len() >= MAX_BATCH {
            self.flush(ctx);
        }
    }
}

impl Handler<RecordMany> for Recorder {
    type Result = ();

    fn handle(&mut self, msg: RecordMany, ctx: &mut Context<Self>) {
        self.buffer.extend(msg.0);
        crate::monitor::metrics::recorder_buffered(self.buffer.len());
        if self.buffer.len() >= MAX_BATCH {
            self.flush(ctx);
        }
    }
}

impl Handler<Drain> for Recorder {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: Drain, _ctx: &mut Context<Self>) -> Self::Result {
        let batch = std::mem::take(&mut self.buffer);
        crate::monitor::metrics::recorder_buffered(0);
        let storage = self.storage.clone();
        Box::pin(async move {
            if let Err(e) = storage.append_fresh(batch.into()).await {
                tracing::error!(error = %e, "draining events failed");
            }
        })
    }
}
