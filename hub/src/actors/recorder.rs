//! The DXP recorder: takes interaction events from every channel with `do_send` (never on a
//! request's hot path) and appends them to the event log in batches.

use crate::storage::Storage;
use actix::prelude::*;
use protocol::Event;
use std::sync::Arc;
use std::time::Duration;

const FLUSH_EVERY: Duration = Duration::from_millis(50);
const MAX_BATCH: usize = 512;
/// Events kept while storage fails; beyond this the oldest are dropped (and counted in logs).
const MAX_BUFFER: usize = 100_000;

/// The recorder's state: events not yet appended.
pub struct Recorder {
    storage: Arc<dyn Storage>,
    buffer: Vec<Event>,
    in_flight: bool,
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
            in_flight: false,
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight || self.buffer.is_empty() {
            return;
        }
        let batch: Arc<[Event]> = std::mem::take(&mut self.buffer).into();
        crate::monitor::metrics::recorder_buffered(0);
        let storage = self.storage.clone();
        self.in_flight = true;
        ctx.spawn(
            async move {
                // The recorder keeps its handle on the batch, to retry it if the append fails.
                let result = storage.append(batch.clone()).await;
                (result, batch)
            }
            .into_actor(self)
            .map(|(result, batch), act, _ctx| {
                act.in_flight = false;
                if let Err(e) = result {
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
            if let Err(e) = storage.append(batch.into()).await {
                tracing::error!(error = %e, "draining events failed");
            }
        })
    }
}
