//! Checks made before any work, so that a run that cannot finish fails at
//! once with what to do, not halfway through: the memory a batch needs,
//! and the device, opened and checked to hold the batches.

use anyhow::{Result, anyhow, bail};
use burn::tensor::Device;

use mnist_cnn::backend::{self, Backend};
use mnist_cnn::machine::available_memory;
use mnist_cnn::model;

use crate::term::note;

/// Refuses a batch that would not fit in the memory this machine has free,
/// rather than letting the kernel kill the process halfway.
pub fn check_memory(option: &str, batch: usize, bytes_per_image: usize, work: &str) -> Result<()> {
    let Some(available) = available_memory() else {
        return Ok(());
    };
    let needed = batch as u64 * bytes_per_image as u64 + (200 << 20);
    if needed > available {
        bail!(
            "{option} {batch} needs about {:.1} GB of memory for {work}; this machine has \
             {:.1} GB available (try a smaller {option})",
            needed as f64 / 1e9,
            available as f64 / 1e9
        );
    }
    Ok(())
}

/// `backend`'s device, opened, and checked to hold `batches` (each an
/// option and its value; see [`check_device_batch`]). A GPU is then named
/// on stderr, unless `announce` is off: its first kernels take a while to
/// compile. A missing GPU driver is said with what to do.
pub fn open_device(backend: Backend, batches: &[(&str, usize)], announce: bool) -> Result<Device> {
    let device = backend.open().map_err(|e| {
        let lavapipe = if cfg!(target_os = "linux") {
            "; without a GPU, Mesa's lavapipe runs the same shaders on the CPU: \
             apt-get install mesa-vulkan-drivers libvulkan1"
        } else {
            ""
        };
        anyhow!(
            "{e} (a GPU needs its Vulkan, Metal or DirectX 12 driver{lavapipe}; or run on \
             the CPU with --backend {})",
            Backend::HOST.name()
        )
    })?;
    for &(option, batch) in batches {
        check_device_batch(option, batch, &device)?;
    }
    if announce && !backend.on_host() {
        note(format!("backend: {}", backend::describe(&device)));
    }
    Ok(device)
}

/// Refuses a batch whose largest tensor would not fit in one of the GPU's
/// buffers (wgpu would fail the allocation halfway, with a panic).
fn check_device_batch(option: &str, batch: usize, device: &Device) -> Result<()> {
    let Some(largest) = backend::largest_buffer(device) else {
        return Ok(());
    };
    let per_image = model::STOCK_TENSOR_BYTES_PER_IMAGE as u64;
    let needed = batch as u64 * per_image;
    if needed > largest {
        bail!(
            "{option} {batch} needs a tensor of {:.1} MB on the GPU, whose buffers take at most \
             {:.1} MB (try {option} {} or less)",
            needed as f64 / 1e6,
            largest as f64 / 1e6,
            largest / per_image
        );
    }
    Ok(())
}
