//! `mnist-cnn bench` on the CPU: its figures, and how they hang together.
mod common;

use common::{mnist_cnn, stdout_of};
use serde_json::Value;

fn bench(simd: &str, json: bool) -> String {
    let mut cmd = mnist_cnn();
    cmd.env("MNIST_CNN_SIMD", simd)
        .args(["bench", "--steps", "4", "--warmup", "1", "--data-dir"])
        .arg(common::data_dir());
    if json {
        cmd.arg("--json");
    }
    stdout_of(&mut cmd)
}

fn number(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number: {v}"))
}

/// The operation rates are the image rates times the README's counts
/// (16,146,432 operations a training image, 5,511,936 an evaluated one),
/// against a peak that the machine really has; with `MNIST_CNN_SIMD` set,
/// bench says so. One test, so that no two benches share the cores.
#[test]
fn bench_measures_the_peak_and_states_each_rate_against_it() {
    let out = bench("", true);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["on_host"], true, "{v}");
    assert_eq!(v["simd_narrowed"], false, "{v}");
    let peak = number(&v, "peak_gflops");
    assert!(peak > 1.0 && peak < 100_000.0, "{v}");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    let train = number(&v, "train_img_per_s") * 16_146_432.0 / 1e9;
    assert!(close(number(&v, "train_gflops"), train), "{v}");
    let eval = number(&v, "eval_img_per_s") * 5_511_936.0 / 1e9;
    assert!(close(number(&v, "eval_gflops"), eval), "{v}");
    let floor = 32.0 * 1000.0 / number(&v, "floor_ms") * 16_146_432.0 / 1e9;
    assert!(close(number(&v, "floor_gflops"), floor), "{v}");
    // Nothing computes faster than the machine can (a margin of 1.5 for
    // the noise of a shared machine between the two measurements), with
    // the rates counting the dense network's operations: the hidden
    // layer's forward product, a third of training's operations and
    // nearly all of evaluation's, skips the zero features, and at least a
    // third of them are not zero, so training's and the floor's rates are
    // at most about 1.3 times the work done and evaluation's 3 times.
    for (key, bound) in [
        ("train_gflops", 1.5 * 1.3),
        ("eval_gflops", 1.5 * 3.0),
        ("floor_gflops", 1.5 * 1.3),
    ] {
        assert!(number(&v, key) < bound * peak, "{key}: {v}");
    }

    let report = bench("", false);
    for line in ["peak: ", "train: ", "floor: ", "eval:  "] {
        let line = report
            .lines()
            .find(|l| l.starts_with(line))
            .unwrap_or_else(|| panic!("no {line:?} line: {report}"));
        assert!(line.contains("GFLOP/s"), "{line}");
    }
    assert_eq!(report.matches("% of peak").count(), 3, "{report}");
    assert!(!report.contains("MNIST_CNN_SIMD"), "{report}");

    if mnist_cnn::kernels::Isa::best() != mnist_cnn::kernels::Isa::Portable {
        let v: Value = serde_json::from_str(bench("portable", true).trim()).unwrap();
        assert_eq!(v["simd"], "portable SIMD", "{v}");
        assert_eq!(v["simd_narrowed"], true, "{v}");
        assert!(number(&v, "peak_gflops") < peak, "{v}");
        let report = bench("portable", false);
        assert!(
            report.contains("(portable SIMD multiply-adds on ")
                && report.contains(
                    "\n(MNIST_CNN_SIMD set the instruction set of this tool's own kernels"
                ),
            "{report}"
        );
    }
}
