//! Faults, injected for real: training processes killed at random moments
//! and at the worst ones, two runs on one model, a full disk during a save,
//! weights that are not the ones their metadata describes, hostile pictures
//! and data files, and paths with spaces and non-ASCII names.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fails_with, mnist_cnn, stdout_of, succeeds};
use mnist_cnn::backend::host_device;
use mnist_cnn::model::Parameters;
use mnist_cnn::store::ModelPaths;
use mnist_cnn::train::Metadata;

/// `train` on the first 320 images with seed 5 up to `epochs`, into `model`.
fn train(model: &Path, epochs: usize, resume: bool) -> Command {
    let mut cmd = mnist_cnn();
    cmd.args(["train", "--limit", "320", "--seed", "5", "--epochs"])
        .arg(epochs.to_string())
        .arg("--data-dir")
        .arg(common::data_dir())
        .arg("--model")
        .arg(model);
    if resume {
        cmd.arg("--resume");
    }
    cmd
}

/// The model stored at `model`, loaded as every command loads it.
fn stored(model: &Path) -> (Parameters, Metadata) {
    let (cnn, metadata) = ModelPaths::new(model)
        .load::<Metadata>(&host_device())
        .unwrap();
    (
        cnn.parameters(),
        metadata.expect("metadata beside the weights"),
    )
}

/// The training figures of every epoch, for comparing two runs.
fn losses(metadata: &Metadata) -> Vec<(f64, f64)> {
    metadata
        .history
        .iter()
        .map(|e| (e.loss, e.accuracy))
        .collect()
}

/// How many epochs the model at `paths` has trained (0: none yet).
fn stored_epochs(paths: &ModelPaths) -> usize {
    if !paths.weights.exists() {
        return 0;
    }
    let (_, metadata) = paths.load::<Metadata>(&host_device()).unwrap();
    metadata.map_or(0, |m| m.epochs_done())
}

/// A child process killed when dropped, so that a failed assertion never
/// leaves a long training run behind.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A reference run of `epochs`, never interrupted.
fn reference(dir: &Path, epochs: usize) -> (Parameters, Metadata) {
    let model = dir.join("reference");
    stdout_of(&mut train(&model, epochs, false));
    stored(&model)
}

#[cfg(unix)]
#[test]
fn a_run_killed_at_random_moments_resumes_to_the_same_weights() {
    const EPOCHS: usize = 30; // some 0.1 s each, a checkpoint after each
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (weights, metadata) = reference(dir.path(), EPOCHS);
    // Kills come within a third of a whole run, however fast this machine.
    let whole = started.elapsed().as_millis() as u64;
    let victim = dir.path().join("victim");
    let paths = ModelPaths::new(&victim);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut kills, mut after_a_checkpoint, mut restarts) = (0, 0, 0);
    while kills < 8 {
        let resume = paths.weights.exists();
        let mut child = train(&victim, EPOCHS, resume)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Start-up, loading, mid-epoch, mid-save: anywhere.
        let wait = Duration::from_millis(random() % (whole / 3));
        let started = Instant::now();
        while started.elapsed() < wait && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "a run ended on its own with {status}");
            if kills >= 4 && after_a_checkpoint >= 2 {
                break;
            }
            // The runs outpaced the kills (their waits are random): start
            // the victim afresh, so that enough kills land.
            restarts += 1;
            assert!(
                restarts < 10,
                "only {kills} kills landed in {restarts} runs"
            );
            for file in [&paths.weights, &paths.metadata, &paths.plot] {
                let _ = std::fs::remove_file(file);
            }
            continue;
        }
        child.kill().unwrap(); // SIGKILL: no handler, no clean-up
        child.wait().unwrap();
        kills += 1;
        // Whatever the moment: no model yet, or one that loads whole.
        if paths.weights.exists() {
            let (_, metadata) = stored(&victim);
            assert!(metadata.epochs_done() >= 1);
            after_a_checkpoint += resume as usize;
        }
    }
    assert!(
        kills >= 4 && after_a_checkpoint >= 2,
        "{kills} kills, {after_a_checkpoint} of them in resumed runs"
    );
    if stored_epochs(&paths) < EPOCHS {
        succeeds(&mut train(&victim, EPOCHS, paths.weights.exists()));
    }
    let (resumed, resumed_metadata) = stored(&victim);
    assert!(
        resumed == weights,
        "the weights differ from the run never stopped"
    );
    assert_eq!(losses(&resumed_metadata), losses(&metadata));
}

/// `train --resume` crashed on purpose at one point of its next save, as a
/// power cut there would: after the new metadata is written beside the old
/// (`pending`), or after the weights too (`weights`).
fn crash_in_save(model: &Path, epochs: usize, at: &str) {
    let out = train(model, epochs, true)
        .env("MNIST_CNN_CRASH_AT", at)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the crash point was not reached");
}

/// What `eval --json` says of a model, for checking that it reads one.
fn evaluated(model: &Path) -> serde_json::Value {
    evaluated_in(common::data_dir(), model)
}

#[test]
fn a_save_cut_between_the_weights_and_their_metadata_is_completed_or_undone() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, metadata) = reference(dir.path(), 3);
    for (i, (at, epochs_left)) in [("pending", 1), ("weights", 2)].into_iter().enumerate() {
        let victim = dir.path().join(format!("victim{i}"));
        stdout_of(&mut train(&victim, 1, false));
        crash_in_save(&victim, 3, at);
        // Readers see a whole model: the old one, or the new one whose
        // metadata was still pending.
        let (_, left) = stored(&victim);
        assert_eq!(left.epochs_done(), epochs_left, "{at}");
        assert!(evaluated(&victim)["accuracy"].as_f64().unwrap() > 0.1);
        // The next run completes or undoes the save, and goes on from there.
        let (stdout, stderr) = succeeds(&mut train(&victim, 3, true));
        assert_eq!(
            stderr.contains("completed the save of"),
            at == "weights",
            "{at}: {stderr}"
        );
        assert!(
            stdout.contains(&format!("after epoch {epochs_left} of 3")),
            "{at}: {stdout}"
        );
        let (resumed, resumed_metadata) = stored(&victim);
        assert!(resumed == weights, "{at}: the weights differ");
        assert_eq!(losses(&resumed_metadata), losses(&metadata), "{at}");
        let names = common::file_names(dir.path());
        assert!(
            !names
                .iter()
                .any(|n| n.ends_with(".pending") || n.contains(".tmp-") || n.ends_with(".lock")),
            "{names:?}"
        );
    }
    // The first save of a run cut the same way: the weights and their
    // metadata still pending, no metadata in place yet.
    let first = dir.path().join("first");
    let out = train(&first, 3, false)
        .env("MNIST_CNN_CRASH_AT", "weights")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!ModelPaths::new(&first).metadata.exists());
    assert_eq!(stored(&first).1.epochs_done(), 1);
    succeeds(&mut train(&first, 3, true));
    assert!(stored(&first).0 == weights);
}

#[test]
fn weights_their_metadata_does_not_describe_are_refused_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    stdout_of(&mut train(&a, 1, false));
    stdout_of(
        mnist_cnn()
            .args(["train", "--limit", "64", "--epochs", "1", "--seed", "9"])
            .arg("--data-dir")
            .arg(common::data_dir())
            .arg("--model")
            .arg(&b),
    );
    std::fs::copy(a.with_extension("bpk"), b.with_extension("bpk")).unwrap();
    let refused = format!(
        "{} are not the weights {} describes",
        b.with_extension("bpk").display(),
        b.with_extension("json").display()
    );
    let data = common::data_dir();
    let picture = dir.path().join("seven.png");
    stdout_of(
        mnist_cnn()
            .args(["show", "0", "--test", "--png"])
            .arg(&picture)
            .arg("--data-dir")
            .arg(data),
    );
    let export = dir.path().join("x.safetensors");
    let commands: [Vec<&std::ffi::OsStr>; 5] = [
        vec!["eval".as_ref()],
        vec!["misclassified".as_ref()],
        vec!["predict".as_ref(), picture.as_os_str()],
        vec!["export".as_ref(), "--out".as_ref(), export.as_os_str()],
        vec![
            "train".as_ref(),
            "--resume".as_ref(),
            "--epochs".as_ref(),
            "2".as_ref(),
        ],
    ];
    for args in commands {
        fails_with(
            mnist_cnn()
                .args(&args)
                .arg("--data-dir")
                .arg(data)
                .arg("--model")
                .arg(&b),
            &refused,
        );
    }
    assert!(!export.exists());
}

#[cfg(unix)]
#[test]
fn a_second_run_on_a_model_being_trained_is_refused_and_readers_see_whole_models() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let first = Killed(
        train(&model, 100_000, false)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let paths = ModelPaths::new(&model);
    let started = Instant::now();
    while !paths.metadata.exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "no checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    fails_with(
        &mut train(&model, 3, false),
        &format!(
            "another mnist-cnn (process {}) is training the model at {}",
            first.0.id(),
            paths.weights.display()
        ),
    );
    fails_with(&mut train(&model, 3, true), "is training the model at");
    // While it saves a checkpoint every 0.2 s or so, every read is whole.
    for _ in 0..8 {
        assert!(evaluated(&model)["count"] == 10_000);
    }
    // Killed, it leaves no lock behind: the next run goes on from its model.
    drop(first);
    let done = stored(&model).1.epochs_done();
    let (stdout, _) = succeeds(&mut train(&model, done + 1, true));
    assert!(stdout.contains("Test loss: "), "{stdout}");
}

#[cfg(unix)]
#[test]
fn a_full_disk_during_a_save_keeps_the_last_checkpoint_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    stdout_of(&mut train(&model, 1, false));
    let before = std::fs::read(model.with_extension("bpk")).unwrap();
    // No file may grow past 2 MB (`ulimit -f` counts 512-byte blocks in sh;
    // the weights are 10 MB): writes fail as on a
    // full disk or a quota, with EFBIG instead of ENOSPC (SIGXFSZ, which
    // would kill the process, ignored as it is by most shells' children).
    let train = train(&model, 3, true);
    let args: Vec<String> = train
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let script = format!(
        "trap '' XFSZ; ulimit -f 4096; exec \"$0\" {}",
        args.iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let stderr = fails_with(
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(train.get_program())
            .env_remove("MNIST_MIRROR"),
        &format!("cannot write {}", model.with_extension("bpk").display()),
    );
    assert!(
        stderr.contains(": File too large (os error 27)\n"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("File too large").count(),
        1,
        "said once: {stderr}"
    );
    assert!(
        !stderr.contains(".tmp-"),
        "no temporary file's name: {stderr}"
    );
    assert_eq!(std::fs::read(model.with_extension("bpk")).unwrap(), before);
    assert_eq!(stored(&model).1.epochs_done(), 1);
    let mut names = common::file_names(dir.path());
    names.sort();
    assert_eq!(names, ["model.bpk", "model.json", "model.svg"]);
}

/// A PNG file's header announcing `width × height` 8-bit grey pixels, with
/// a few bytes of image data: what a decompression bomb looks like before
/// it is decoded.
fn png_announcing(width: u32, height: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::new();
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &header);
    chunk(&mut png, b"IDAT", &common::zlib(&vec![0u8; 4096]));
    chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn hostile_pictures_are_refused_quickly_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (_dir, model, _) = common::train_model(&["--epochs", "1", "--limit", "64"]);
    let predict = |file: &Path, needle: &str| {
        let started = Instant::now();
        fails_with(
            mnist_cnn()
                .arg("predict")
                .arg(file)
                .arg("--model")
                .arg(&model),
            needle,
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{needle}");
    };
    // 100,000 × 100,000 (10 GB decoded) and 8,000 × 8,000 (64 megapixels,
    // within the decoder's own limits) in files of a few hundred bytes.
    let absurd = dir.path().join("absurd.png");
    std::fs::write(&absurd, png_announcing(100_000, 100_000)).unwrap();
    predict(&absurd, "larger than this tool decodes");
    let bomb = dir.path().join("bomb.png");
    std::fs::write(&bomb, png_announcing(8_000, 8_000)).unwrap();
    predict(
        &bomb,
        "larger than this tool decodes (8000×8000 pixels, more than 40 megapixels)",
    );
    // A file far larger than any picture is not even read.
    let huge = dir.path().join("huge.png");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(10 << 30)
        .unwrap();
    predict(&huge, "larger than the 256 MB this tool reads");
}

#[test]
fn data_files_that_are_not_mnists_own_are_refused_with_the_repair() {
    let data = common::linked_data_dir();
    let images = data.path().join("t10k-images-idx3-ubyte");
    // One pixel changed: still a valid IDX file of 10,000 images.
    let mut bytes = std::fs::read(&images).unwrap();
    bytes[16 + 1000] ^= 0x40;
    std::fs::remove_file(&images).unwrap();
    std::fs::write(&images, &bytes).unwrap();
    let (_dir, model, _) = common::train_model(&["--epochs", "1", "--limit", "64"]);
    let repair = format!(
        "`mnist-cnn download --data-dir {}` repairs it",
        data.path().display()
    );
    for command in ["eval", "misclassified"] {
        let stderr = fails_with(
            mnist_cnn()
                .arg(command)
                .arg("--data-dir")
                .arg(data.path())
                .arg("--model")
                .arg(&model),
            &format!("{} is not MNIST's file of that name", images.display()),
        );
        assert!(stderr.contains(&repair), "{stderr}");
    }
    // A file far larger than any MNIST file is refused before it is read.
    let labels = data.path().join("t10k-labels-idx1-ubyte");
    std::fs::remove_file(&labels).unwrap();
    std::fs::File::create(&labels)
        .unwrap()
        .set_len(100 << 30)
        .unwrap();
    let started = Instant::now();
    fails_with(
        mnist_cnn()
            .args(["show", "0", "--test", "--data-dir"])
            .arg(data.path()),
        "t10k-labels-idx1-ubyte is larger than any MNIST file (over 64 MB)",
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // `download` repairs both.
    succeeds(
        mnist_cnn()
            .args(["download", "--no-default-mirrors", "--mirror"])
            .arg(common::real_mnist())
            .arg("--data-dir")
            .arg(data.path()),
    );
    assert!(evaluated_in(data.path(), &model)["count"] == 10_000);
}

/// [`evaluated`] on the data in `data`.
fn evaluated_in(data: &Path, model: &Path) -> serde_json::Value {
    let out = stdout_of(
        mnist_cnn()
            .args(["eval", "--json", "--data-dir"])
            .arg(data)
            .arg("--model")
            .arg(model),
    );
    serde_json::from_str(&out).unwrap()
}

#[test]
fn models_and_pictures_in_folders_with_spaces_and_non_ascii_names_work() {
    let dir = tempfile::tempdir().unwrap();
    let odd: PathBuf = dir.path().join("my runs/Prüfung 数字 ✓");
    let model = odd.join("model one");
    stdout_of(&mut train(&model, 1, false));
    succeeds(&mut train(&model, 2, true));
    let json = evaluated(&model);
    assert_eq!(json["count"], 10_000);
    let picture = odd.join("ziffer sieben.png");
    stdout_of(
        mnist_cnn()
            .args(["show", "0", "--test", "--png"])
            .arg(&picture)
            .arg("--data-dir")
            .arg(common::data_dir()),
    );
    let out = stdout_of(
        mnist_cnn()
            .arg("predict")
            .arg(&picture)
            .arg("--model")
            .arg(&model),
    );
    let answer = out.lines().nth(1).unwrap_or_default();
    assert!(
        answer.starts_with(&format!("{}: ", picture.display())),
        "{out}"
    );
    let curves = odd.join("kurven ü.svg");
    stdout_of(
        mnist_cnn()
            .arg("plot")
            .arg("--model")
            .arg(&model)
            .arg("--out")
            .arg(&curves),
    );
    assert!(curves.is_file());
}
