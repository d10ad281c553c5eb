//! Child-process modes for crash and concurrency tests.

use std::io::Write;

/// Does nothing unless `FLOR_TEST_CHILD` names a mode.
#[test]
fn entry() {
    let Ok(mode) = std::env::var("FLOR_TEST_CHILD") else { return };
    let root = std::env::var("FLOR_TEST_ROOT").expect("root");
    match mode.as_str() {
        // Log 0, 1, 2, … forever, printing how many were acknowledged.
        "log_forever" => {
            let flor = flordb::Flor::open_with(&root, crate::common::opts("crash.py")).expect("open");
            let mut out = std::io::stdout();
            for i in 0i64.. {
                flor.log("i", i).expect("log");
                if i % 500 == 0 {
                    writeln!(out, "ack {}", i + 1).expect("stdout");
                    out.flush().expect("flush");
                }
            }
        }
        // Log 100,000 records and commit.
        "log_100k" => {
            let flor = flordb::Flor::open_with(&root, crate::common::opts("worker.py")).expect("open");
            for epoch in flor.loop_iter("epoch", 0..100) {
                for step in flor.loop_iter("step", 0..1000) {
                    flor.log("x", (epoch * 1000 + step) as i64).expect("log");
                }
            }
            flor.commit().expect("commit");
        }
        other => panic!("unknown child mode {other}"),
    }
}
