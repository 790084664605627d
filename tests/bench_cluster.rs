//! `omnihub bench cluster` keeps working: the command itself (this package's binary) with tiny
//! counts and a short lease, against the PostgreSQL of `cluster-tests`. It must exit zero, print
//! every figure the issue asks for (latency, throughput and ratio of each setup; the forwarding
//! cost; each failover round and min/median/max) and leave none of its schemas behind.
//!
//! Compiled with the `cluster-tests` feature; PostgreSQL at `OMNIHUB_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`).

#![cfg(feature = "cluster-tests")]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hub::storage::postgres::testing::url;

/// A number (possibly signed, with decimals) right after `label` on `line`.
fn number_after(line: &str, label: &str) -> Option<f64> {
    let rest = &line[line.find(label)? + label.len()..];
    rest.split_whitespace()
        .next()?
        .trim_end_matches(['s', '×'])
        .parse()
        .ok()
}

/// The table row of `operation` for `setup`: its numeric columns.
fn row(out: &str, operation: &str, setup: &str) -> Vec<String> {
    let line = out
        .lines()
        .find(|l| {
            let l = l.trim_start();
            l.starts_with(operation) && l[operation.len()..].trim_start().starts_with(setup)
        })
        .unwrap_or_else(|| panic!("no row '{operation}' / '{setup}' in:\n{out}"));
    line.trim_start()[operation.len()..].trim_start()[setup.len()..]
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn bench_cluster_prints_every_figure_and_cleans_up() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_omnihub"))
        .args([
            "bench",
            "cluster",
            "--postgres",
            &url(),
            "--adds",
            "40",
            "--checkouts",
            "6",
            "--concurrency",
            "2",
            "--forwards",
            "10",
            "--failover-rounds",
            "2",
            "--lease-ttl",
            "2s",
            "--heartbeat-every",
            "250ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("omnihub starts");
    let pid = child.id();
    // Bounded: a hang fails the test instead of stalling CI.
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().expect("the bench runs") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("omnihub bench cluster ran longer than 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("stdout read");
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr read");
    assert!(status.success(), "{status}\n{out}\n{err}");

    // Load: every operation on every setup, with latencies, a throughput and no errors.
    for op in [
        "add to basket",
        "checkout start",
        "payment confirm",
        "checkout → order",
    ] {
        for setup in ["sled", "cluster ×1", "cluster ×3"] {
            let cols = row(&out, op, setup);
            assert_eq!(cols.len(), 4, "{op} / {setup}: {cols:?}\n{out}");
            let figures: Vec<f64> = cols.iter().map(|c| c.parse().expect("a number")).collect();
            assert!(
                figures[0] > 0.0 && figures[1] >= figures[0] && figures[2] > 0.0,
                "{op} / {setup}: p50, p99, per s: {cols:?}"
            );
            assert_eq!(figures[3], 0.0, "{op} / {setup}: errors\n{out}");
        }
        // The ratios against sled.
        for setup in ["cluster ×1", "cluster ×3"] {
            let ratio_rows: Vec<&str> = out
                .lines()
                .skip_while(|l| !l.starts_with("ratio cluster / sled"))
                .collect();
            let cols = row(&ratio_rows.join("\n"), op, setup);
            assert_eq!(cols.len(), 3, "ratio {op} / {setup}: {cols:?}\n{out}");
            for c in &cols {
                let r: f64 = c.trim_end_matches('×').parse().expect("a ratio");
                assert!(r > 0.0, "ratio {op} / {setup}: {cols:?}");
            }
        }
    }

    // Forwarding: owner, non-owner, and their difference.
    let line = |prefix: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no line '{prefix}' in:\n{out}"))
            .to_string()
    };
    for prefix in ["to the owner", "to a non-owner"] {
        let l = line(prefix);
        let p50 = number_after(&l, "p50").expect("p50");
        let p99 = number_after(&l, "p99").expect("p99");
        assert!(p50 > 0.0 && p99 >= p50, "{l}");
        assert_eq!(number_after(&l, "errors"), Some(0.0), "{l}");
    }
    let cost = line("forwarding cost");
    assert!(number_after(&cost, "p50").is_some() && number_after(&cost, "p99").is_some());

    // Failover: both rounds, each within a few lease ttls, and the summary.
    for round in ["round 1:", "round 2:"] {
        let l = line(round);
        let took = number_after(&l, round).expect("seconds");
        assert!(took > 0.0 && took < 20.0, "{l}");
    }
    let summary = line("failover time:");
    let min = number_after(&summary, "min").expect("min");
    let median = number_after(&summary, "median").expect("median");
    let max = number_after(&summary, "max").expect("max");
    assert!(0.0 < min && min <= median && median <= max, "{summary}");

    // Its schemas are gone.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let left: i64 = runtime.block_on(async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&url())
            .await
            .expect("PostgreSQL answers (cluster-tests need it; .ci/run starts it)");
        let left = sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE $1")
            .bind(format!("bench\\_{pid}\\_%"))
            .fetch_one(&pool)
            .await
            .expect("counting schemas");
        pool.close().await;
        left
    });
    assert_eq!(left, 0, "schemas of the run are left behind");
}
