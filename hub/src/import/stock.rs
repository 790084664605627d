//! The stock feed ([`protocol::feed::StockRow`]): levels (counts) and deltas (movements) of a SKU
//! at a location.
//!
//! - `online`, the web warehouse, is the hub's own: a level sets on hand through the inventory
//!   (what is held for checkouts stays held); a delta moves it, and a delta that would take on
//!   hand below zero is rejected. The rows of a page go to the inventory in one call (one
//!   durable unit per inventory shard), which also records a 16-byte digest of each applied
//!   row's identity (movement id, or location/SKU/version of a level) in the same unit: a row
//!   re-sent after a crash is applied once. The digests are held in memory (16 bytes a row).
//!   Of the levels of one SKU and location in a page only the highest version is applied (the
//!   others are stale, or unchanged/rejected at the same version, as they would be after it),
//!   so a page of many levels of one SKU costs one durable write, not one per level. A row
//!   whose movement id is already pending in the page starts a new part of it, decided once
//!   the part before is applied: a rejected row's movement is never taken as seen, so a
//!   correction later in the page applies.
//! - Levels' versions are stored before their effects, so a crash can only leave a re-apply to
//!   do, never an older level applied over a newer one (see [`StockApplier`]'s `apply_part`).
//! - A store location (one owned by a configured edge node) is never changed by the hub: the
//!   node alone creates its stock and sell rights (`../shared/REPLICATION.md`). A level becomes a
//!   `Count` command queued for the store's node (delivered when it connects); a positive delta
//!   (goods received) becomes a `Restock` command; a negative delta is rejected — stock that
//!   left a store is the store's own movement, and the ERP corrects it by sending a count. Each
//!   forwarded row is recorded before its command is queued and marked done after, so a crash in
//!   between never queues it twice: the row, sent again, is rejected with a request for a new
//!   count.
//! - Rules: `sku` known to the hub; `location` `online` or a store with an edge node; `kind`
//!   `level` or `delta`; `quantity` a whole number, a level 0 to 1,000,000,000, a delta not 0 and
//!   at most 1,000,000,000 either way; `movement` required for a delta (`[A-Za-z0-9._:-]`, 1–128),
//!   applied once however often it is sent; `version` required.
//! - Ordering (`docs/erp-feeds.md`): a level's version is that of the level of its SKU and
//!   location — older than the applied one is stale, the same with the same quantity unchanged
//!   (another quantity: rejected). A movement is an entity of its own that never changes: it is
//!   identified by its id alone, applied once, unchanged when sent again.

use super::catalog::CatalogSide;
use super::fields::{self, Check};
use super::store::{self, Forwarding, ImportStore, StockState};
use super::{FeedApplier, ImportError, Row, RowError, RowOutcome};
use crate::actors::inventory::{Inventory, StockChange, StockMove};
use crate::edge::EdgeHandle;
use crate::storage::Storage;
use async_trait::async_trait;
use protocol::feed::FeedKind;
use protocol::{LocationId, Sku};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The largest level or movement, in units.
pub const MAX_UNITS: i64 = 1_000_000_000;

/// A stock row's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockKind {
    Level(i64),
    Delta { units: i64, movement: String },
}

/// A stock row that passed every field rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockFields {
    pub sku: Sku,
    pub location: LocationId,
    pub kind: StockKind,
    pub version: u64,
}

impl StockFields {
    fn online(&self) -> bool {
        self.location == LocationId::online()
    }
}

fn quantity(row: &Row, level: bool) -> Result<i64, RowError> {
    let q = fields::required(row, "quantity", "a whole number of units")?;
    let n: i64 = q.parse().map_err(|_| {
        row.error(
            "quantity",
            format!("'{q}' is not a quantity: use a whole number of units, like 12 or -3"),
        )
    })?;
    if level && !(0..=MAX_UNITS).contains(&n) {
        return Err(row.error("quantity", "a level is 0 to 1,000,000,000 units"));
    }
    if !level && (n == 0 || n.abs() > MAX_UNITS) {
        return Err(row.error(
            "quantity",
            "a delta is not 0 and at most 1,000,000,000 units either way",
        ));
    }
    Ok(n)
}

/// Checks every field of a stock row; all errors at once. `known` tells SKUs the hub has,
/// `is_store` store locations owned by an edge node.
pub fn validate(
    row: &Row,
    known: impl Fn(&Sku) -> bool,
    is_store: impl Fn(&LocationId) -> bool,
) -> Result<StockFields, Vec<RowError>> {
    let mut c = Check::new(row);
    let sku = c.take(fields::sku(row).and_then(|sku| {
        if known(&sku) {
            Ok(sku)
        } else {
            Err(row.error(
                "sku",
                format!("unknown SKU {sku}: import it with the products feed first"),
            ))
        }
    }));
    let location = c.take(
        fields::required(row, "location", "online or a store location").and_then(|l| {
            let loc = LocationId(l.to_string());
            if loc == LocationId::online() || is_store(&loc) {
                Ok(loc)
            } else {
                Err(row.error(
                    "location",
                    format!(
                        "unknown location '{l}': use online or a store location that has an edge \
                         node"
                    ),
                ))
            }
        }),
    );
    let kind = match row.get("kind") {
        "level" => c.take(quantity(row, true)).map(StockKind::Level),
        "delta" => {
            let units = c.take(quantity(row, false));
            let movement = c.take(fields::code(row, "movement", 128, true));
            units
                .zip(movement)
                .map(|(units, movement)| StockKind::Delta { units, movement })
        }
        "" => {
            c.fail(
                "kind",
                "kind is required: level (a count) or delta (a movement)",
            );
            None
        }
        other => {
            c.fail(
                "kind",
                format!("'{other}' is not a kind: use level or delta"),
            );
            None
        }
    };
    let version = c.take(fields::version(row));
    match (sku, location, kind, version) {
        (Some(sku), Some(location), Some(kind), Some(version)) if c.errors.is_empty() => {
            Ok(StockFields {
                sku,
                location,
                kind,
                version,
            })
        }
        _ => Err(c.errors),
    }
}

/// What the stock applier needs.
pub struct StockDeps {
    pub inventory: Inventory,
    pub edge: EdgeHandle,
    pub storage: Arc<dyn Storage>,
    pub store: Arc<ImportStore>,
    pub side: Arc<CatalogSide>,
}

type Key = (LocationId, Sku);

/// What the applier holds between pages.
struct Applied {
    /// The last level applied per SKU and location.
    levels: HashMap<Key, StockState>,
    /// Digests of the rows applied to the online inventory (stored with them, loaded at start):
    /// 16 bytes a row, so millions fit in memory.
    marks: HashSet<[u8; 16]>,
}

/// The 16-byte digest of a row's mark (the first half of its SHA-256).
fn mark_digest(mark: &str) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let full = Sha256::digest(mark.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// The stock feed's applier.
pub struct StockApplier {
    deps: StockDeps,
    applied: tokio::sync::Mutex<Applied>,
}

/// A store row to forward to the location's node.
struct Forward {
    row: usize,
    id: String,
    sku: Sku,
    location: LocationId,
    command: ForwardKind,
}

enum ForwardKind {
    Count(i64),
    Restock { units: u64, movement: String },
}

/// How a row was decided before the inventory and the nodes answer; the level state to record
/// once it is applied (levels only: a movement is identified by its id).
enum Decision {
    Done(RowOutcome),
    /// Unchanged: already applied (found by its mark).
    Seen(StockState),
    Online(Box<StockMove>, Option<StockState>),
    Store(ForwardKind, String, Option<StockState>),
}

fn movement_mark(movement: &str) -> String {
    format!("erp:movement:{movement}")
}

fn level_mark(f: &StockFields) -> String {
    format!("erp:level:{}/{}/{}", f.location, f.sku, f.version)
}

impl StockApplier {
    /// Loads the applied versions.
    pub async fn load(deps: StockDeps) -> Result<StockApplier, ImportError> {
        let levels = deps
            .store
            .load_stock()
            .await?
            .into_iter()
            .map(|s| ((s.location.clone(), s.sku.clone()), s))
            .collect();
        let marks = deps
            .storage
            .import_marks()
            .await?
            .iter()
            .flat_map(|m| m.digests.chunks_exact(16))
            .filter_map(|d| <[u8; 16]>::try_from(d).ok())
            .collect();
        Ok(StockApplier {
            deps,
            applied: tokio::sync::Mutex::new(Applied { levels, marks }),
        })
    }

    fn seen(marks: &HashSet<[u8; 16]>, mark: &str) -> bool {
        marks.contains(&mark_digest(mark))
    }

    /// Decides a valid row against what is applied (`current`) and the marks.
    async fn decide(
        &self,
        row: &Row,
        f: &StockFields,
        current: Option<&StockState>,
        marks: &HashSet<[u8; 16]>,
    ) -> Result<Decision, ImportError> {
        let state = |level| StockState {
            location: f.location.clone(),
            sku: f.sku.clone(),
            version: f.version,
            level: Some(level),
        };
        match &f.kind {
            StockKind::Level(n) => {
                let applied = current.map(|c| c.version);
                let same = current.is_some_and(|c| c.level == Some(*n));
                let entity = format!("this SKU's stock at {}", f.location);
                match fields::by_version(row, f.version, applied, same, &entity) {
                    // The same level again is unchanged once its effect is recorded (its mark,
                    // its forwarding record): its version is stored before the effect, so
                    // after a crash in between the effect is still to come.
                    Some(RowOutcome::Unchanged) | None => {}
                    Some(outcome) => return Ok(Decision::Done(outcome)),
                }
                if f.online() {
                    let mark = level_mark(f);
                    if Self::seen(marks, &mark) {
                        return Ok(Decision::Seen(state(*n)));
                    }
                    let m = StockMove {
                        sku: f.sku.clone(),
                        change: StockChange::Set(*n),
                        mark: Some(mark_digest(&mark)),
                    };
                    return Ok(Decision::Online(Box::new(m), Some(state(*n))));
                }
                let id = format!("level:{}/{}/{}", f.location, f.sku, f.version);
                Ok(Decision::Store(ForwardKind::Count(*n), id, Some(state(*n))))
            }
            StockKind::Delta { units, movement } => {
                // A movement id names one movement at one location: the online ones are
                // marked with the inventory, the store ones by their forwarding record.
                let id = format!("movement:{movement}");
                let done = if f.online() {
                    Self::seen(marks, &movement_mark(movement))
                } else {
                    self.deps
                        .store
                        .get::<Forwarding>(&store::forwarding_key(&id))?
                        .is_some_and(|fw| fw.done)
                };
                if done {
                    return Ok(Decision::Done(RowOutcome::Unchanged));
                }
                if f.online() {
                    let m = StockMove {
                        sku: f.sku.clone(),
                        change: StockChange::Add(*units),
                        mark: Some(mark_digest(&movement_mark(movement))),
                    };
                    return Ok(Decision::Online(Box::new(m), None));
                }
                if *units < 0 {
                    return Ok(Decision::Done(RowOutcome::Rejected(vec![row.error(
                        "quantity",
                        format!(
                            "stock that left store {} is the store's own movement: the hub \
                             does not apply it; send a count (kind=level) for this SKU there",
                            f.location
                        ),
                    )])));
                }
                let kind = ForwardKind::Restock {
                    units: units.unsigned_abs(),
                    movement: movement.clone(),
                };
                Ok(Decision::Store(kind, id, None))
            }
        }
    }

    /// Queues the store rows' commands, each recorded before and marked done after; answers
    /// each row's outcome.
    async fn forward(
        &self,
        rows: &[Row],
        forwards: Vec<Forward>,
    ) -> Result<Vec<(usize, RowOutcome)>, ImportError> {
        let mut out = Vec::with_capacity(forwards.len());
        let mut pending = store::Batch::default();
        let mut todo = Vec::with_capacity(forwards.len());
        for fw in forwards {
            let key = store::forwarding_key(&fw.id);
            match self.deps.store.get::<Forwarding>(&key)? {
                Some(record) if record.done => out.push((fw.row, RowOutcome::Unchanged)),
                Some(_) => {
                    // Recorded, never marked done: the hub stopped while queueing it.
                    let mut done = store::Batch::default();
                    done.put(
                        key,
                        &Forwarding {
                            id: fw.id.clone(),
                            done: true,
                            command: None,
                        },
                    )?;
                    self.deps.store.write(done).await?;
                    out.push((
                        fw.row,
                        RowOutcome::Rejected(vec![rows[fw.row].error(
                            "location",
                            format!(
                                "the hub stopped while forwarding this row to {}'s node, so it \
                                 may or may not have been queued: check the stock of {} there \
                                 and send a count with a higher version",
                                fw.location, fw.sku
                            ),
                        )]),
                    ));
                }
                None => {
                    pending.put(
                        key,
                        &Forwarding {
                            id: fw.id.clone(),
                            done: false,
                            command: None,
                        },
                    )?;
                    todo.push(fw);
                }
            }
        }
        self.deps.store.write(pending).await?;
        let mut done = store::Batch::default();
        for fw in todo {
            let key = store::forwarding_key(&fw.id);
            let sent = match fw.command {
                ForwardKind::Count(n) => {
                    crate::edge::forward_count(
                        &self.deps.edge,
                        fw.sku.clone(),
                        fw.location.clone(),
                        n,
                    )
                    .await
                }
                ForwardKind::Restock { units, movement } => {
                    crate::edge::forward_restock(
                        &self.deps.edge,
                        fw.sku.clone(),
                        fw.location.clone(),
                        units,
                        format!("ERP movement {movement}"),
                    )
                    .await
                }
            };
            match sent {
                Ok(queued) => {
                    tracing::debug!(sku = %fw.sku, location = %fw.location, node = %queued.node,
                        command = %queued.command, "ERP stock row forwarded to the store's node");
                    done.put(
                        key,
                        &Forwarding {
                            id: fw.id,
                            done: true,
                            command: Some(queued.command.to_string()),
                        },
                    )?;
                    out.push((fw.row, RowOutcome::Applied));
                }
                Err(crate::edge::EdgeError::Storage(e)) => {
                    self.deps.store.write(done).await?;
                    return Err(e.into());
                }
                Err(e) => {
                    done.remove(key);
                    out.push((
                        fw.row,
                        RowOutcome::Rejected(vec![rows[fw.row].error("location", e.to_string())]),
                    ));
                }
            }
        }
        self.deps.store.write(done).await?;
        Ok(out)
    }
}

/// One part of a page: rows decided against what is applied, none of them depending on how
/// another of the part ends.
#[derive(Default)]
struct Part {
    /// The level state each level row records, by row (at most one per SKU and location).
    states: Vec<(usize, StockState)>,
    online: Vec<(usize, StockMove)>,
    forwards: Vec<Forward>,
}

impl StockApplier {
    /// Decides the rows from `from` on into a part, up to the first row that depends on how one
    /// of the part ends — a movement id, or a level of a SKU and location, already in it — and
    /// answers where the next part starts. That row is decided once the part is applied: if
    /// the earlier row was rejected, its movement was not seen, and a corrected one applies.
    async fn decide_part(
        &self,
        rows: &[Row],
        fields: &[Option<StockFields>],
        from: usize,
        applied: &Applied,
        outcomes: &mut [Option<RowOutcome>],
    ) -> Result<(Part, usize), ImportError> {
        let mut part = Part::default();
        let mut levels: HashSet<Key> = HashSet::new();
        let mut movements: HashSet<&str> = HashSet::new();
        for (i, f) in fields.iter().enumerate().skip(from) {
            let Some(f) = f else { continue };
            let key = (f.location.clone(), f.sku.clone());
            let pending = match &f.kind {
                StockKind::Level(_) => levels.contains(&key),
                StockKind::Delta { movement, .. } => movements.contains(movement.as_str()),
            };
            if pending {
                return Ok((part, i));
            }
            let current = applied.levels.get(&key);
            let decision = self.decide(&rows[i], f, current, &applied.marks).await?;
            let state = match decision {
                Decision::Done(outcome) => {
                    outcomes[i] = Some(outcome);
                    continue;
                }
                Decision::Seen(state) => {
                    outcomes[i] = Some(RowOutcome::Unchanged);
                    Some(state)
                }
                Decision::Online(m, state) => {
                    part.online.push((i, *m));
                    state
                }
                Decision::Store(command, id, state) => {
                    part.forwards.push(Forward {
                        row: i,
                        id,
                        sku: f.sku.clone(),
                        location: f.location.clone(),
                        command,
                    });
                    state
                }
            };
            if let StockKind::Delta { movement, .. } = &f.kind {
                movements.insert(movement);
            }
            if let Some(state) = state {
                levels.insert(key);
                part.states.push((i, state));
            }
        }
        Ok((part, fields.len()))
    }

    /// Applies a part. Crash safety of levels: a level's version is stored durably BEFORE its
    /// effect (the inventory write, or the command for the store's node), and the effect is
    /// recorded with it (the row's mark in the same inventory unit, the forwarding record).
    /// A crash in between leaves a version whose effect is missing, which is harmless: the row
    /// is sent again (the pull's cursor or the push was not acknowledged), found at the same
    /// version without its mark or record, and its effect applied then — once, the mark or
    /// record prevents a second time; an older level meanwhile is stale, as it should be next
    /// to a newer one. (The other order could apply an older level over a newer one whose
    /// version was lost.) A refused row's version is put back after the effects.
    async fn apply_part(
        &self,
        rows: &[Row],
        part: Part,
        applied: &mut Applied,
        outcomes: &mut [Option<RowOutcome>],
    ) -> Result<(), ImportError> {
        let key_of = |s: &StockState| (s.location.clone(), s.sku.clone());
        let mut ahead = store::Batch::default();
        for (_, s) in &part.states {
            ahead.put(store::stock_key(&s.location, &s.sku), s)?;
        }
        self.deps.store.write(ahead).await?;
        // The stored versions are the truth from here on, also if an effect fails below.
        let before: Vec<Option<StockState>> = part
            .states
            .iter()
            .map(|(_, s)| applied.levels.insert(key_of(s), s.clone()))
            .collect();
        if !part.online.is_empty() {
            let (indexes, moves): (Vec<usize>, Vec<StockMove>) = part.online.into_iter().unzip();
            let digests: Vec<Option<[u8; 16]>> = moves.iter().map(|m| m.mark).collect();
            let answers = self
                .deps
                .inventory
                .apply_stock(&LocationId::online(), moves)
                .await?;
            for ((i, answer), digest) in indexes.into_iter().zip(answers).zip(digests) {
                outcomes[i] = Some(match answer {
                    Ok(_) => {
                        applied.marks.extend(digest);
                        RowOutcome::Applied
                    }
                    Err(on_hand) => RowOutcome::Rejected(vec![rows[i].error(
                        "quantity",
                        format!(
                            "this movement would take on hand at online below zero ({on_hand} \
                             on hand): send a count (kind=level) if the stock is wrong"
                        ),
                    )]),
                });
            }
        }
        for (i, outcome) in self.forward(rows, part.forwards).await? {
            outcomes[i] = Some(outcome);
        }
        let mut undo = store::Batch::default();
        for ((i, s), before) in part.states.iter().zip(before) {
            if matches!(
                outcomes[*i],
                Some(RowOutcome::Applied | RowOutcome::Unchanged)
            ) {
                continue;
            }
            let key = store::stock_key(&s.location, &s.sku);
            match before {
                Some(b) => {
                    undo.put(key, &b)?;
                    applied.levels.insert(key_of(s), b);
                }
                None => {
                    undo.remove(key);
                    applied.levels.remove(&key_of(s));
                }
            }
        }
        self.deps.store.write(undo).await?;
        Ok(())
    }
}

/// Keeps one level per SKU and location of a page: the highest version (the first row of it).
/// The others are decided against it as they would be once it is applied — an older version
/// is stale; the same version again unchanged, or rejected with other content — and left out
/// (`fields` set to `None`), so a page of many levels of one SKU is one part (one durable write
/// of versions, one inventory call), not a part and a flush per level. The movements between
/// them still apply in page order; the kept level sets on hand where it stands in the page.
fn superseded_levels(
    rows: &[Row],
    fields: &mut [Option<StockFields>],
    applied: &Applied,
    outcomes: &mut [Option<RowOutcome>],
) {
    let mut best: HashMap<Key, (usize, u64, i64)> = HashMap::new();
    for (i, f) in fields.iter().enumerate() {
        let Some(StockFields {
            sku,
            location,
            kind: StockKind::Level(n),
            version,
        }) = f
        else {
            continue;
        };
        let kept = best
            .entry((location.clone(), sku.clone()))
            .or_insert((i, *version, *n));
        if *version > kept.1 {
            *kept = (i, *version, *n);
        }
    }
    for (i, f) in fields.iter_mut().enumerate() {
        let Some(StockFields {
            sku,
            location,
            kind: StockKind::Level(n),
            version,
        }) = f
        else {
            continue;
        };
        let key = (location.clone(), sku.clone());
        let Some(&(kept, kept_version, kept_n)) = best.get(&key) else {
            continue;
        };
        if kept == i {
            continue;
        }
        let stale = applied
            .levels
            .get(&key)
            .is_some_and(|a| a.version > *version);
        let entity = format!("this SKU's stock at {location}");
        outcomes[i] = if stale {
            Some(RowOutcome::Stale)
        } else {
            fields::by_version(
                &rows[i],
                *version,
                Some(kept_version),
                *n == kept_n,
                &entity,
            )
        };
        *f = None;
    }
}

#[async_trait]
impl FeedApplier for StockApplier {
    fn feed(&self) -> FeedKind {
        FeedKind::Stock
    }

    async fn apply(&self, rows: Vec<Row>) -> Result<Vec<RowOutcome>, ImportError> {
        let started = std::time::Instant::now();
        let side = &self.deps.side;
        let nodes = self.deps.edge.nodes();
        let mut outcomes: Vec<Option<RowOutcome>> = vec![None; rows.len()];
        let mut fields: Vec<Option<StockFields>> = rows
            .iter()
            .zip(&mut outcomes)
            .map(
                |(r, outcome)| match validate(r, |s| side.knows(s), |l| nodes.is_store(l)) {
                    Ok(f) => Some(f),
                    Err(errors) => {
                        *outcome = Some(RowOutcome::Rejected(errors));
                        None
                    }
                },
            )
            .collect();
        let validated = started.elapsed();
        let mut applied = self.applied.lock().await;
        superseded_levels(&rows, &mut fields, &applied, &mut outcomes);
        let mut from = 0;
        let mut parts = 0u32;
        while from < rows.len() {
            let (part, next) = self
                .decide_part(&rows, &fields, from, &applied, &mut outcomes)
                .await?;
            self.apply_part(&rows, part, &mut applied, &mut outcomes)
                .await?;
            from = next;
            parts += 1;
        }
        tracing::debug!(
            rows = rows.len(),
            parts,
            validate_ms = validated.as_millis() as u64,
            apply_ms = (started.elapsed() - validated).as_millis() as u64,
            "stock rows applied"
        );
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| RowOutcome::Rejected(Vec::new())))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fields to set, the field named in the error, a part of its reason.
    type Case = (
        &'static [(&'static str, &'static str)],
        &'static str,
        &'static str,
    );
    use std::collections::BTreeMap;

    fn row(pairs: &[(&str, &str)]) -> Row {
        let mut fields: BTreeMap<String, String> = [
            ("sku", "TEA"),
            ("location", "online"),
            ("kind", "delta"),
            ("quantity", "-3"),
            ("movement", "mv-1"),
            ("version", "2"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            fields.insert(k.to_string(), v.to_string());
        }
        Row { number: 5, fields }
    }

    fn check(r: &Row) -> Result<StockFields, Vec<RowError>> {
        validate(r, |s| s.as_str() == "TEA", |l| l.0 == "store-berlin")
    }

    #[test]
    fn good_rows() {
        let f = check(&row(&[])).expect("a delta");
        assert_eq!(
            f.kind,
            StockKind::Delta {
                units: -3,
                movement: "mv-1".into()
            }
        );
        let f = check(&row(&[
            ("kind", "level"),
            ("quantity", "12"),
            ("movement", ""),
            ("location", "store-berlin"),
        ]))
        .expect("a level");
        assert_eq!(
            (f.kind, f.location.0.as_str()),
            (StockKind::Level(12), "store-berlin")
        );
    }

    #[test]
    fn every_bad_field_is_named_with_what_to_fix() {
        let cases: &[Case] = &[
            (&[("sku", "COFFEE")], "sku", "unknown SKU"),
            (&[("sku", "")], "sku", "required"),
            (
                &[("location", "store-nowhere")],
                "location",
                "unknown location",
            ),
            (&[("location", "")], "location", "required"),
            (&[("kind", "")], "kind", "required"),
            (&[("kind", "count")], "kind", "level or delta"),
            (&[("quantity", "1.5")], "quantity", "whole number"),
            (&[("quantity", "0")], "quantity", "not 0"),
            (&[("quantity", "2000000000")], "quantity", "at most"),
            (
                &[("kind", "level"), ("quantity", "-1")],
                "quantity",
                "0 to 1,000,000,000",
            ),
            (&[("movement", "")], "movement", "required"),
            (&[("movement", "a b")], "movement", "not a valid"),
            (&[("version", "")], "version", "required"),
        ];
        for (pairs, field, reason) in cases {
            let errors = check(&row(pairs)).expect_err(field);
            assert!(
                errors
                    .iter()
                    .any(|e| e.field == *field && e.row == 5 && e.reason.contains(reason)),
                "{pairs:?}: {errors:?}"
            );
        }
    }
}
