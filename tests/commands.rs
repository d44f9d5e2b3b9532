//! `train`, `eval` and `misclassified` through the binary, checked against
//! predictions this test computes itself from the saved model.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{mnist_cnn, stdout_of};
use mnist_cnn::data::{self, Part};
use mnist_cnn::idx::CLASSES;
use mnist_cnn::model::{Batch, cross_entropy};
use mnist_cnn::store::ModelPaths;
use mnist_cnn::train::Metadata;
use serde_json::Value;

/// A model trained once through `mnist-cnn train` for the tests here.
fn trained_model() -> &'static (tempfile::TempDir, PathBuf, String) {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf, String)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        let out = stdout_of(
            mnist_cnn()
                .args(["train", "--epochs", "1", "--limit", "1280", "--data-dir"])
                .arg(common::data_dir())
                .arg("--model")
                .arg(&model),
        );
        (dir, model, out)
    })
}

/// Probabilities for every test image and the mean loss, computed here
/// from the saved weights.
fn probabilities(model: &Path) -> (Vec<[f32; CLASSES]>, Vec<u8>, f64) {
    let device = mnist_cnn::backend::host_device();
    let cnn = ModelPaths::new(model).load_weights(&device).unwrap();
    let test = data::load(common::data_dir(), Part::Test).unwrap();
    let mut rows = Vec::new();
    let mut loss_sum = 0.0f64;
    let indices: Vec<usize> = (0..test.len()).collect();
    for chunk in indices.chunks(500) {
        let logits = cnn.forward(&Batch::new(&test.images, chunk, &device), None);
        let labels: Vec<u8> = chunk.iter().map(|&i| test.labels[i]).collect();
        let loss = cross_entropy(logits.clone(), &labels).into_scalar::<f32>();
        loss_sum += loss as f64 * chunk.len() as f64;
        let probs = burn::tensor::activation::softmax(logits, 1);
        let values = probs.into_data().try_to_vec::<f32>().unwrap();
        rows.extend(
            values
                .chunks(CLASSES)
                .map(|r| <[f32; CLASSES]>::try_from(r).unwrap()),
        );
    }
    let loss = loss_sum / test.len() as f64;
    (rows, test.labels, loss)
}

fn argmax(row: &[f32; CLASSES]) -> usize {
    (0..CLASSES).fold(0, |best, c| if row[c] > row[best] { c } else { best })
}

#[test]
fn train_prints_the_summary_epochs_and_test_result_and_saves_metadata() {
    let (_, model, out) = trained_model();
    assert!(out.contains("Total params: 2,561,738"), "{out}");
    assert!(out.contains("Epoch 1/1 - "), "{out}");
    assert!(out.contains("Test loss: "), "{out}");
    assert!(out.contains(&format!(
        "Model saved to {}",
        model.with_extension("bpk").display()
    )));
    let meta: Metadata =
        serde_json::from_slice(&std::fs::read(model.with_extension("json")).unwrap()).unwrap();
    assert_eq!(meta.epochs_done, 1);
    assert_eq!(meta.train_examples, 1280);
    assert_eq!(meta.config.seed, 42);
}

#[test]
fn eval_json_agrees_with_predictions_computed_here() {
    let (_, model, _) = trained_model();
    let json: Value = serde_json::from_str(&stdout_of(
        mnist_cnn()
            .args(["eval", "--json", "--data-dir"])
            .arg(common::data_dir())
            .arg("--model")
            .arg(model),
    ))
    .unwrap();
    let (rows, labels, loss) = probabilities(model);
    let mut confusion = [[0u64; CLASSES]; CLASSES];
    for (row, &label) in rows.iter().zip(&labels) {
        confusion[label as usize][argmax(row)] += 1;
    }
    let correct: u64 = (0..CLASSES).map(|c| confusion[c][c]).sum();
    assert_eq!(json["count"], labels.len());
    let accuracy = json["accuracy"].as_f64().unwrap();
    assert!((accuracy - correct as f64 / labels.len() as f64).abs() < 1e-12);
    assert!(accuracy > 0.5, "a trained model, not chance: {accuracy}");
    let json_loss = json["loss"].as_f64().unwrap();
    assert!((json_loss - loss).abs() < 1e-5, "{json_loss} vs {loss}");
    for c in 0..CLASSES {
        let row: Vec<u64> = json["confusion_matrix"][c]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(row, confusion[c], "confusion row {c}");
        let total: u64 = confusion[c].iter().sum();
        let per_class = json["per_class_accuracy"][c].as_f64().unwrap();
        assert!((per_class - confusion[c][c] as f64 / total as f64).abs() < 1e-12);
    }

    let human = stdout_of(
        mnist_cnn()
            .args(["eval", "--batch-size", "77", "--data-dir"])
            .arg(common::data_dir())
            .arg("--model")
            .arg(model),
    );
    assert!(human.starts_with(&format!("loss: {json_loss:.4} - accuracy: {accuracy:.4}\n")));
    assert!(human.contains("confusion matrix (rows: true label, columns: predicted)"));
}

#[test]
fn misclassified_lists_exactly_the_mistakes_computed_here() {
    let (_, model, _) = trained_model();
    let run = |args: &[&str]| -> Vec<Value> {
        let out = stdout_of(
            mnist_cnn()
                .arg("misclassified")
                .args(args)
                .arg("--data-dir")
                .arg(common::data_dir())
                .arg("--model")
                .arg(model),
        );
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    let (rows, labels, _) = probabilities(model);
    let wrong: Vec<usize> = (0..labels.len())
        .filter(|&i| argmax(&rows[i]) != labels[i] as usize)
        .collect();
    assert!(
        wrong.len() > 10,
        "expected some mistakes, got {}",
        wrong.len()
    );

    let all = run(&["--all", "--json"]);
    let indices: Vec<usize> = all
        .iter()
        .map(|m| m["index"].as_u64().unwrap() as usize)
        .collect();
    assert_eq!(indices, wrong);
    for m in &all {
        let i = m["index"].as_u64().unwrap() as usize;
        assert_eq!(m["true"].as_u64().unwrap(), labels[i] as u64);
        assert_eq!(m["predicted"].as_u64().unwrap() as usize, argmax(&rows[i]));
        let confidence = m["confidence"].as_f64().unwrap();
        assert!((confidence - rows[i][argmax(&rows[i])] as f64).abs() < 1e-6);
    }

    let some = run(&["--count", "4", "--seed", "5", "--json"]);
    assert_eq!(some.len(), 4);
    assert!(some.iter().all(|m| all.contains(m)));
    assert_eq!(
        some,
        run(&["--count", "4", "--seed", "5", "--json"]),
        "seeded choice repeats"
    );
    assert_ne!(some, run(&["--count", "4", "--seed", "6", "--json"]));
}

#[test]
fn misclassified_draws_digits_and_writes_pngs() {
    let (dir, model, _) = trained_model();
    let png_dir = dir.path().join("pngs");
    let out = stdout_of(
        mnist_cnn()
            .args(["misclassified", "--count", "2", "--png"])
            .arg(&png_dir)
            .arg("--data-dir")
            .arg(common::data_dir())
            .arg("--model")
            .arg(model),
    );
    let test = data::load(common::data_dir(), Part::Test).unwrap();
    let headers: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(headers.len(), 2, "{out}");
    // Each digit: 28 rows of 56 shade characters, with some ink in them.
    let drawn: Vec<&str> = out
        .lines()
        .filter(|l| l.chars().count() == 56 && l.chars().all(|c| " ░▒▓█".contains(c)))
        .collect();
    assert_eq!(drawn.len(), 2 * 28, "{out}");
    assert!(drawn.iter().any(|l| l.contains('█')));

    let mut files: Vec<PathBuf> = std::fs::read_dir(&png_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2);
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let index: usize = name[..5].parse().unwrap();
        assert!(
            name.contains(&format!("_true{}", test.labels[index])),
            "{name}"
        );
        assert!(out.contains(&format!("#{index}: predicted ")), "{out}");
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&file).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut pixels).unwrap();
        assert_eq!(&pixels[..], test.images.image(index), "{name}");
    }
}

#[test]
fn misclassified_says_when_fewer_mistakes_exist_than_asked() {
    let (_, model, _) = trained_model();
    let out = mnist_cnn()
        .args([
            "misclassified",
            "--no-render",
            "--count",
            "10000",
            "--data-dir",
        ])
        .arg(common::data_dir())
        .arg("--model")
        .arg(model)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("test images are misclassified (asked for 10000)"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains('█'));
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_training_and_keeps_the_last_checkpoint_loadable() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let child = mnist_cnn()
        .args(["train", "--epochs", "1000", "--limit", "320", "--data-dir"])
        .arg(common::data_dir())
        .arg("--model")
        .arg(&model)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let meta_path = model.with_extension("json");
    while !meta_path.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("error: interrupted during epoch"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the last complete epoch is saved in"),
        "{stderr}"
    );

    let meta: Metadata = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    assert!(meta.epochs_done >= 1);
    assert_eq!(meta.history.len(), meta.epochs_done);
    ModelPaths::new(&model)
        .load_weights(&mnist_cnn::backend::host_device())
        .unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.len(),
        3,
        "only the model, its metadata and its curves: {names:?}"
    );
}

#[test]
fn train_downloads_the_data_first_when_it_is_missing() {
    let mnist = common::real_mnist();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = mnist_cnn()
        .env("MNIST_MIRROR", &mnist)
        .args(["train", "--epochs", "1", "--limit", "64", "--data-dir"])
        .arg(&data)
        .arg("--model")
        .arg(dir.path().join("model"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("has no MNIST data yet: downloading it first"),
        "{stderr}"
    );
    for name in ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
        assert!(data.join(name).is_file(), "{name} was not downloaded");
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("Test loss: "));
}

/// Runs the binary with its stdout closed before it writes anything (the
/// reader has gone, as `| head` does once satisfied). Returns the exit
/// status and stderr.
#[cfg(unix)]
fn with_stdout_closed(args: &[&str], extra: &[&Path]) -> (Option<i32>, String) {
    let mut child = mnist_cnn()
        .args(args)
        .args(extra)
        .env_remove("MNIST_MIRROR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_the_reporting_commands_quietly() {
    let (_, model, _) = trained_model();
    let data = common::data_dir();
    let model_args: [&Path; 4] = [Path::new("--data-dir"), data, Path::new("--model"), model];
    for args in [
        &["eval"][..],
        &["eval", "--json"],
        &["misclassified", "--all"],
        &["misclassified", "--json"],
    ] {
        let (code, stderr) = with_stdout_closed(args, &model_args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("error"), "{args:?}: {stderr}");
    }
    for args in [
        &["download", "--no-default-mirrors"][..],
        &["bench", "--steps", "1", "--warmup", "0"],
        &["show", "53238", "--values"],
    ] {
        let (code, stderr) = with_stdout_closed(args, &[Path::new("--data-dir"), data]);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("error"), "{args:?}: {stderr}");
    }
}

#[cfg(unix)]
#[test]
fn training_goes_on_and_saves_when_its_output_pipe_closes() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let (code, stderr) = with_stdout_closed(
        &["train", "--epochs", "2", "--limit", "320"],
        &[
            Path::new("--data-dir"),
            common::data_dir(),
            Path::new("--model"),
            &model,
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let meta: Metadata = ModelPaths::new(&model).load_metadata().unwrap();
    assert_eq!(meta.epochs_done, 2);
    assert!(
        meta.test.is_some(),
        "the final evaluation ran and was recorded"
    );
}

/// A data folder of its own (links to the shared one's files), for commands
/// that write next to the data.
#[cfg(unix)]
fn own_data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for part in [Part::Train, Part::Test] {
        for name in part.files() {
            std::os::unix::fs::symlink(common::data_dir().join(name), dir.path().join(name))
                .unwrap();
        }
    }
    dir
}

#[cfg(unix)]
#[test]
fn the_default_model_lives_in_the_data_folder_and_is_never_lost() {
    let data = own_data_dir();
    let train = || {
        let out = mnist_cnn()
            .args(["train", "--epochs", "1", "--limit", "64", "--data-dir"])
            .arg(data.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        stderr
    };
    train();
    let paths = ModelPaths::new(&data.path().join("model"));
    let first = std::fs::read(&paths.weights).unwrap();
    let first_meta: Metadata = paths.load_metadata().unwrap();
    let accuracy = first_meta.test.unwrap().accuracy;

    // Again: the first model is kept, and the user is told where.
    let stderr = train();
    let backup = ModelPaths::new(&data.path().join("model.1"));
    assert!(
        stderr.contains(&format!(
            "{} held a model of 1 epoch (test accuracy {accuracy:.4}); kept it as {}",
            paths.weights.display(),
            backup.weights.display()
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&backup.weights).unwrap(), first);
    assert_eq!(backup.load_metadata::<Metadata>().unwrap(), first_meta);
    assert!(paths.exists());

    // A folder given as --model holds model.bpk.
    let folder = data.path().join("runs/");
    let out = mnist_cnn()
        .args(["train", "--epochs", "1", "--limit", "64", "--data-dir"])
        .arg(data.path())
        .arg("--model")
        .arg(&folder)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(folder.join("model.bpk").is_file());
    assert!(folder.join("model.json").is_file());
    assert!(!data.path().join("runs.bpk").exists());
}

#[cfg(unix)]
#[test]
fn a_run_stopped_by_ctrl_c_and_resumed_ends_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let args = |model: &Path| {
        let mut cmd = mnist_cnn();
        // Epochs long enough (6,000 images) that Ctrl-C lands inside the run.
        cmd.args(["train", "--limit", "6000", "--data-dir"])
            .arg(common::data_dir())
            .arg("--model")
            .arg(model);
        cmd
    };
    let straight = dir.path().join("straight");
    let status = args(&straight)
        .args(["--epochs", "3"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    let stopped = dir.path().join("stopped");
    let child = args(&stopped)
        .args(["--epochs", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let paths = ModelPaths::new(&stopped);
    let started = Instant::now();
    while !paths.metadata.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let done = paths.load_metadata::<Metadata>().unwrap().epochs_done;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(130),
        "not stopped by Ctrl-C: {stderr}"
    );
    assert!(done < 3, "stopped after {done} epochs");

    // Other settings than the checkpoint's are refused, naming them, before
    // any work: here the data folder is empty and no mirror is given.
    let empty = tempfile::tempdir().unwrap();
    let refused = mnist_cnn()
        .args([
            "train",
            "--resume",
            "--no-default-mirrors",
            "--batch-size",
            "64",
            "--data-dir",
        ])
        .arg(empty.path())
        .arg("--model")
        .arg(&stopped)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("batch size 32, not 64"), "{stderr}");
    assert!(!stderr.contains("downloading"), "{stderr}");

    // Resumed with no options repeated: the checkpoint's are used.
    let out = mnist_cnn()
        .args(["train", "--resume", "--data-dir"])
        .arg(common::data_dir())
        .arg("--model")
        .arg(&stopped)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("after epoch {done} of 3")),
        "{stdout}"
    );
    let device = mnist_cnn::backend::host_device();
    let weights = |p: &Path| {
        let cnn = ModelPaths::new(p).load_weights(&device).unwrap();
        let test = data::load(common::data_dir(), Part::Test).unwrap();
        let batch = Batch::new(&test.images, &(0..100).collect::<Vec<_>>(), &device);
        cnn.forward(&batch, None)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    assert!(
        weights(&straight) == weights(&stopped),
        "resumed run differs"
    );
    let a: Metadata = ModelPaths::new(&straight).load_metadata().unwrap();
    let b: Metadata = paths.load_metadata().unwrap();
    let losses = |m: &Metadata| m.history.iter().map(|e| e.loss).collect::<Vec<_>>();
    assert_eq!(losses(&a), losses(&b));
    assert_eq!(a.test, b.test);

    // Nothing left to do is said, not done.
    let again = stdout_of(
        mnist_cnn()
            .args(["train", "--resume", "--data-dir"])
            .arg(common::data_dir())
            .arg("--model")
            .arg(&stopped),
    );
    assert!(
        again.contains("has trained 3 of 3 epochs already"),
        "{again}"
    );
}

#[test]
fn temp_files_an_interrupted_save_left_are_removed_and_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let leftover = dir.path().join(".model.bpk.tmp-Xy12Ab");
    std::fs::write(&leftover, b"half a model").unwrap();
    stdout_of(
        mnist_cnn()
            .args(["train", "--epochs", "1", "--limit", "64", "--data-dir"])
            .arg(common::data_dir())
            .arg("--model")
            .arg(&model),
    );
    assert!(!leftover.exists());
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["model.bpk", "model.json", "model.svg"]);
}

/// `misclassified` with `args` on the shared model; returns the output.
fn misclassified(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let (_, model, _) = trained_model();
    let mut child = mnist_cnn()
        .arg("misclassified")
        .args(args)
        .arg("--data-dir")
        .arg(common::data_dir())
        .arg("--model")
        .arg(model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The mistakes `--count N --seed S` chooses, as `--json` lists them.
fn chosen(count: usize, seed: u64) -> Vec<(usize, u8, u8)> {
    let (n, s) = (count.to_string(), seed.to_string());
    let out = misclassified(&["--count", &n, "--seed", &s, "--json"], None);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let field = |k: &str| m[k].as_u64().unwrap();
            (
                field("index") as usize,
                field("predicted") as u8,
                field("true") as u8,
            )
        })
        .collect()
}

fn decode_png(path: &Path) -> (u32, u32, png::ColorType, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    pixels.truncate(info.buffer_size());
    (info.width, info.height, info.color_type, pixels)
}

#[test]
fn misclassified_sheet_shows_the_chosen_mistakes_with_their_labels() {
    use mnist_cnn::misclassified::{Mistake, card};
    use mnist_cnn::picture;
    let (dir, _, _) = trained_model();
    let sheet = dir.path().join("sheets/mistakes.png");
    let out = misclassified(
        &[
            "--count",
            "3",
            "--seed",
            "4",
            "--no-render",
            "--sheet",
            sheet.to_str().unwrap(),
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("Sheet written to {}", sheet.display())),
        "{stdout}"
    );
    let test = data::load(common::data_dir(), Part::Test).unwrap();
    let mistakes: Vec<Mistake> = chosen(3, 4)
        .into_iter()
        .map(|(index, predicted, truth)| Mistake {
            index,
            predicted,
            truth,
            confidence: 0.0,
        })
        .collect();
    let cards: Vec<_> = mistakes.iter().map(|m| card(m, &test)).collect();
    assert_eq!(
        cards[0].lines[0].0,
        format!("model {}", mistakes[0].predicted)
    );
    assert_eq!(cards[0].lines[1].0, format!("true {}", mistakes[0].truth));
    let (width, height, expected) = picture::sheet(&cards);
    let (w, h, colour, pixels) = decode_png(&sheet);
    assert_eq!((w as usize, h as usize), (width, height));
    assert_eq!(colour, png::ColorType::Rgb);
    assert!(pixels == expected, "the sheet of the chosen mistakes");
}

#[test]
fn misclassified_png_scale_enlarges_each_file() {
    use mnist_cnn::picture;
    let (dir, _, _) = trained_model();
    let png_dir = dir.path().join("big");
    misclassified(
        &[
            "--count",
            "2",
            "--no-render",
            "--scale",
            "3",
            "--png",
            png_dir.to_str().unwrap(),
        ],
        None,
    );
    let test = data::load(common::data_dir(), Part::Test).unwrap();
    let files: Vec<PathBuf> = std::fs::read_dir(&png_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2);
    for file in files {
        let index: usize = file.file_name().unwrap().to_str().unwrap()[..5]
            .parse()
            .unwrap();
        let (w, h, colour, pixels) = decode_png(&file);
        assert_eq!((w, h, colour), (84, 84, png::ColorType::Grayscale));
        assert_eq!(pixels, picture::upscale(test.images.image(index), 28, 3));
    }
    // --scale means nothing without --png.
    let out = mnist_cnn()
        .args(["misclassified", "--scale", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--png <DIR>"));
}

#[test]
fn misclassified_quiz_reads_guesses_reveals_answers_and_scores() {
    let picks = chosen(3, 8);
    // Right on the first, not a digit then wrong on the second, right on the third.
    let wrong = (picks[1].2 + 1) % 10;
    let input = format!("{}\nx\n{wrong}\n {} \n", picks[0].2, picks[2].2);
    let out = misclassified(&["--count", "3", "--seed", "8", "--quiz"], Some(&input));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"x\" is not a digit: type one of 0-9"),
        "{stderr}"
    );
    // Nothing is revealed before the first answer.
    let before = &stdout[..stdout.find("you: ").unwrap()];
    assert!(
        !before.contains("true") && !before.contains("model:"),
        "{before}"
    );
    assert_eq!(before.matches("your answer (0-9): ").count(), 1);
    let reveals: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("your answer (0-9): "))
        .filter_map(|l| l.rsplit("your answer (0-9): ").next())
        .collect();
    assert_eq!(reveals.len(), 3, "{stdout}");
    for ((reveal, (index, predicted, truth)), verdict) in
        reveals.iter().zip(&picks).zip(["right", "wrong", "right"])
    {
        assert!(
            reveal.contains(&format!("({verdict}) - model: {predicted} (")),
            "{reveal}"
        );
        assert!(
            reveal.ends_with(&format!("true: {truth} (test image #{index})")),
            "{reveal}"
        );
    }
    assert!(stdout.ends_with("\nyou: 2/3, model: 0/3\n"), "{stdout}");

    // Input that ends early: the score so far.
    let out = misclassified(
        &["--count", "3", "--seed", "8", "--quiz"],
        Some(&format!("{}\n", picks[0].2)),
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("(input ended after 1 of 3)"), "{stdout}");
    assert!(stdout.ends_with("\nyou: 1/1, model: 0/1\n"), "{stdout}");
}
