//! `mnist-cnn serve`: the local page to draw a digit and watch the model
//! think, until Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, anyhow};

use mnist_cnn::data::{self, Split};
use mnist_cnn::serve::{App, Server};
use mnist_cnn::train::Metadata;

use super::args::ServeArgs;
use super::common::{Stdout, data_failed, load_model, model_failed};
use crate::term::{note, print};

/// Set by Ctrl-C: the workers finish the request they have and stop.
static STOP: AtomicBool = AtomicBool::new(false);

pub fn run(args: &ServeArgs) -> Result<()> {
    let paths = args.model.paths(&args.data);
    let model = load_model(&paths, Stdout::Text)?;
    let metadata: Metadata = paths.load_metadata().map_err(|e| model_failed(e, &paths))?;
    let dir = &args.data.data_dir;
    let test = data::load(dir, Split::Test).map_err(|e| data_failed(e, dir))?;
    let app = App::new(&model, &metadata, test);
    let server = Server::bind(args.host, args.port, app).map_err(|e| {
        anyhow!("{e} (is another server on that port? choose another with --port, or 0 for any)")
    })?;
    if !args.host.is_loopback() {
        note(format!(
            "warning: listening on {}: anyone who can reach this machine on that network can use \
             the page and its API",
            args.host
        ));
    }
    ctrlc::set_handler(|| STOP.store(true, Ordering::Relaxed))
        .map_err(|e| anyhow!("cannot catch Ctrl-C: {e}"))?;
    print(format_args!(
        "Serving {} at {} (Ctrl-C stops it)",
        paths.stem().display(),
        server.url()
    ))?;
    server.run(&STOP)?;
    print("stopped")?;
    Ok(())
}
