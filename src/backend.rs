//! The CPU backend the binary was built with (a cargo feature; see README).

use burn::tensor::Device;

/// Name of the backend in use, recorded with each trained model.
#[cfg(feature = "flex")]
pub const NAME: &str = "flex";
#[cfg(all(feature = "ndarray", not(feature = "flex")))]
pub const NAME: &str = "ndarray";

#[cfg(not(any(feature = "flex", feature = "ndarray")))]
compile_error!("enable a backend: the `flex` (default) or `ndarray` feature");

/// The device all tensors are created on.
pub fn device() -> Device {
    #[cfg(feature = "flex")]
    {
        Device::flex()
    }
    #[cfg(all(feature = "ndarray", not(feature = "flex")))]
    #[allow(deprecated)]
    // Burn deprecates ndarray in favour of flex; it stays as the design's option.
    {
        Device::ndarray()
    }
}
