//! Stand-ins for the world around the hub: the partner simulators (ERP, payment provider, OMS,
//! logistics, mail) and the load generators (shoppers now; POS terminals and boards later). Like a
//! real partner or a real shopper, everything here talks to the hub only over the network — HTTP on
//! loopback — and never links the hub's code, so what it measures or exercises is what a client
//! would see.
//!
//! Entry points: [`load::run`] runs a load scenario ([`load::LoadCommand`], dispatched by
//! `omnihub load <scenario>`) and prints its figures; [`load::report`] holds the latency
//! histograms and the table every scenario prints.

pub mod load;
