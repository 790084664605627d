//! Personalization (`docs/personalization.md`): content slots whose variants target audience
//! segments and channels ([`slots`]), and "bought together" / "viewed together"
//! recommendations folded from the event log ([`recommend`]).
//!
//! Both are pure: [`slots::resolve`] picks the variant for a request (the segments of the
//! shopper, the channel, the time) and says why; [`recommend::fold`] folds one observation into
//! pair counts and the top neighbours of each product through a [`recommend::CoStore`] the
//! caller implements (the hub on sled, the tests in memory).

pub mod recommend;
pub mod slots;

pub use recommend::{CoStore, MemoryCoStore, Neighbour, Observation, Relation, Session};
pub use slots::{
    resolve, resolve_with, Content, EmailBlock, ExperimentBinding, Hero, Recommendations,
    Resolution, SlotChannel, SlotName, SlotRecord, SlotRequest, SlotSpec, Strategy, Targeting,
    Variant,
};

#[cfg(test)]
mod tests;
