//! Tests of the load generators: shapes, reports, stamps, and counting on a real node.

use super::*;

fn cfg() -> LoadConfig {
    LoadConfig {
        concurrency: 16,
        connections: 4,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        value_size: 100,
        rooms: 1,
    }
}

#[test]
fn default_shape_is_valid() {
    assert!(cfg().validate().is_ok());
}

#[test]
fn rejects_bad_shapes() {
    let bad = [
        LoadConfig {
            concurrency: 0,
            ..cfg()
        },
        LoadConfig {
            connections: 0,
            ..cfg()
        },
        LoadConfig {
            connections: 17,
            ..cfg()
        },
        LoadConfig {
            duration: Duration::ZERO,
            ..cfg()
        },
        LoadConfig {
            value_size: 0,
            ..cfg()
        },
        LoadConfig {
            value_size: MAX_VALUE_SIZE + 1,
            ..cfg()
        },
        LoadConfig { rooms: 0, ..cfg() },
        LoadConfig {
            concurrency: MAX_CONCURRENCY + 1,
            connections: 1,
            ..cfg()
        },
    ];
    for b in bad {
        assert!(matches!(b.validate(), Err(BenchError::Invalid(_))), "{b:?}");
    }
}

#[test]
fn parses_seconds() {
    assert_eq!(parse_secs("10"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
    assert!(parse_secs("-1").is_err());
    assert!(parse_secs("NaN").is_err());
    assert!(parse_secs("ten").is_err());
}

#[test]
fn histogram_bounds_are_accepted() {
    let mut h = new_histogram();
    h.saturating_record(micros(Duration::from_secs(3600)));
    assert_eq!(h.max(), h.highest_equivalent(HIST_MAX_US));
    assert_eq!(micros(Duration::ZERO), 1);
}

fn report_with(values_us: &[u64], secs: u64) -> Report {
    let mut hist = new_histogram();
    for v in values_us {
        hist.record(*v).unwrap();
    }
    Report {
        system: "rustyraft".into(),
        concurrency: 64,
        ops: values_us.len() as u64,
        errors: 2,
        elapsed: Duration::from_secs(secs),
        hist,
    }
}

#[test]
fn report_formats_rate_and_quantiles() {
    // 1000 ops over 2 s: 500 ops/s; latencies 1..=1000 ms.
    let vals: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
    let r = report_with(&vals, 2);
    assert_eq!(r.ops_per_sec(), 500.0);
    assert!((r.p50_ms() - 500.0).abs() < 1.0, "{}", r.p50_ms());
    assert!((r.p99_ms() - 990.0).abs() < 1.0, "{}", r.p99_ms());
    assert!((r.max_ms() - 1000.0).abs() < 1.0, "{}", r.max_ms());
    let t = r.text();
    assert!(t.starts_with("rustyraft c=64: 500 ops/s  p50 500."), "{t}");
    assert!(t.contains("(1000 ok, 2 errors in 2.0 s)"), "{t}");
    let j = r.json();
    assert_eq!(j["ops_per_sec"], 500.0);
    assert_eq!(j["errors"], 2);
    assert_eq!(j["concurrency"], 64);
}

#[test]
fn empty_report_is_zero_not_a_panic() {
    let r = report_with(&[], 0);
    assert_eq!(r.ops_per_sec(), 0.0);
    assert_eq!(r.p99_ms(), 0.0);
    assert_eq!(r.max_ms(), 0.0);
}

#[test]
fn stamp_round_trips_and_pads() {
    let t = stamp_text(123_456_789, 100);
    assert_eq!(t.len(), 100);
    assert_eq!(parse_stamp(&t), Some(123_456_789));
    assert_eq!(parse_stamp("hello"), None);
    assert_eq!(parse_stamp("x0000000000000000001"), None);
}

#[test]
fn fanout_rejects_bad_shapes() {
    let ok = FanoutConfig {
        subscribers: 100,
        connections: 10,
        rate: 1000,
        duration: Duration::from_secs(5),
        warmup: Duration::from_secs(1),
        value_size: 100,
    };
    assert!(ok.validate().is_ok());
    for b in [
        FanoutConfig {
            subscribers: 0,
            ..ok.clone()
        },
        FanoutConfig {
            connections: 101,
            ..ok.clone()
        },
        FanoutConfig {
            rate: 0,
            ..ok.clone()
        },
        FanoutConfig {
            value_size: 19,
            ..ok.clone()
        },
        FanoutConfig {
            duration: Duration::ZERO,
            ..ok.clone()
        },
    ] {
        assert!(matches!(b.validate(), Err(BenchError::Invalid(_))), "{b:?}");
    }
}

// Paused clock: every op takes exactly 1 ms of virtual time, so the counts are exact.
#[tokio::test(start_paused = true)]
async fn closed_loop_counts_ok_and_errors() {
    let c = LoadConfig {
        concurrency: 2,
        connections: 1,
        duration: Duration::from_millis(50),
        warmup: Duration::ZERO,
        value_size: 1,
        rooms: 1,
    };
    // Worker 0 always succeeds, worker 1 always fails.
    let r = closed_loop("t", &c, |w, _| async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        if w == 0 {
            Ok(())
        } else {
            Err("no".into())
        }
    })
    .await;
    // Worker 0: ops start at 0, 1, ..., 49 ms. Worker 1: 1 ms op + 5 ms pause, so starts
    // at 0, 6, ..., 48 ms.
    assert_eq!(r.ops, 50);
    assert_eq!(r.errors, 9);
    assert_eq!(r.hist.len(), r.ops);
    assert_eq!(r.hist.max(), r.hist.highest_equivalent(1000));
}
