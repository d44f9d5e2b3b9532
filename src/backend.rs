//! The backends this build can run on (cargo features; see README), and
//! which of them a device belongs to.
//!
//! The CPU backends run the network's fused ops (`crate::block`,
//! `crate::dense`) and the host training step (`crate::host`), which are
//! written for a CPU's caches. A GPU backend runs the same network through
//! Burn's stock layers and Burn's SGD instead ([`Backend::on_host`] tells
//! which path a device takes): same model, same initialisation, same
//! optimiser, same dropout masks.

use burn::backend::DispatchDevice;
use burn::tensor::Device;
use thiserror::Error;

/// A backend that cannot compute here.
#[derive(Debug, Error)]
pub enum BackendError {
    #[error("the {backend} backend found no device to run on: {reason}")]
    NoDevice {
        backend: &'static str,
        reason: String,
    },
}

#[cfg(not(any(feature = "flex", feature = "ndarray")))]
compile_error!(
    "enable a CPU backend: the `flex` (default) or `ndarray` feature (the `wgpu` feature adds a GPU to it)"
);

/// A backend compiled into this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// burn-flex: Burn's native CPU backend.
    #[cfg(feature = "flex")]
    Flex,
    /// burn-ndarray: the CPU backend of the original design.
    #[cfg(feature = "ndarray")]
    NdArray,
    /// burn-wgpu: any GPU through Vulkan, Metal or DirectX 12.
    #[cfg(feature = "wgpu")]
    Wgpu,
}

/// Every backend a build may have; each is brought by the cargo feature of its name.
const KNOWN: [&str; 3] = ["flex", "ndarray", "wgpu"];

impl Backend {
    /// The CPU backend: flex where the build has it, else ndarray.
    #[cfg(feature = "flex")]
    pub const HOST: Backend = Backend::Flex;
    #[cfg(all(feature = "ndarray", not(feature = "flex")))]
    pub const HOST: Backend = Backend::NdArray;

    /// The backend commands use unless told otherwise: the GPU when the
    /// build has one (that is what building it with a GPU is for), else the
    /// CPU backend.
    #[cfg(feature = "wgpu")]
    pub const DEFAULT: Backend = Backend::Wgpu;
    #[cfg(not(feature = "wgpu"))]
    pub const DEFAULT: Backend = Backend::HOST;

    /// The backends of this build, the default first.
    pub const ALL: &[Backend] = &[
        #[cfg(feature = "wgpu")]
        Backend::Wgpu,
        #[cfg(feature = "flex")]
        Backend::Flex,
        #[cfg(feature = "ndarray")]
        Backend::NdArray,
    ];

    pub fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "flex")]
            Backend::Flex => "flex",
            #[cfg(feature = "ndarray")]
            Backend::NdArray => "ndarray",
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => "wgpu",
        }
    }

    /// The backend of that name; the error says why there is none (an
    /// unknown name, or a backend this build was compiled without).
    pub fn from_name(name: &str) -> Result<Self, String> {
        if let Some(&backend) = Self::ALL.iter().find(|b| b.name() == name) {
            return Ok(backend);
        }
        let names: Vec<&str> = Self::ALL.iter().map(|b| b.name()).collect();
        if KNOWN.contains(&name) {
            Err(format!(
                "this build has no {name} backend (it has: {}); build with `--features {name}`",
                names.join(", ")
            ))
        } else {
            Err(format!("must be one of: {}", names.join(", ")))
        }
    }

    /// The device tensors are created on, opened: for a GPU the adapter is
    /// found and set up now, so that a machine without one gets an error
    /// rather than a panic at the first tensor.
    pub fn open(self) -> Result<Device, BackendError> {
        match self {
            #[cfg(feature = "flex")]
            Backend::Flex => Ok(Device::flex()),
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            // Burn deprecates ndarray in favour of flex; it stays as the design's option.
            Backend::NdArray => Ok(Device::ndarray()),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => open_wgpu(),
        }
    }

    /// Whether the network runs on the host: the fused ops and the host
    /// training step, rather than Burn's stock layers on a device.
    pub fn on_host(self) -> bool {
        match self {
            #[cfg(feature = "flex")]
            Backend::Flex => true,
            #[cfg(feature = "ndarray")]
            Backend::NdArray => true,
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => false,
        }
    }

    /// The backend `device` belongs to (for an autodiff device, the one it wraps).
    pub fn of(device: &Device) -> Self {
        Self::of_dispatch(device.as_dispatch())
    }

    fn of_dispatch(device: &DispatchDevice) -> Self {
        match device {
            #[cfg(feature = "flex")]
            DispatchDevice::Flex(_) => Backend::Flex,
            #[cfg(feature = "ndarray")]
            DispatchDevice::NdArray(_) => Backend::NdArray,
            #[cfg(feature = "wgpu")]
            DispatchDevice::Cube(_) => Backend::Wgpu,
            DispatchDevice::Autodiff(inner) => Self::of_dispatch(inner),
            #[allow(unreachable_patterns)]
            // Burn's other devices, none of which this crate creates.
            other => panic!("a device of no backend of this build: {other:?}"),
        }
    }
}

/// The device of the CPU backend ([`Backend::HOST`]), which always opens.
pub fn host_device() -> Device {
    Backend::HOST
        .open()
        .expect("a CPU backend has nothing to open")
}

/// The backend and, for a GPU, the adapter it runs on: "flex", "wgpu on
/// llvmpipe (LLVM 15.0.6, 256 bits) through Vulkan".
pub fn describe(device: &Device) -> String {
    let backend = Backend::of(device);
    #[cfg(feature = "wgpu")]
    if let (Backend::Wgpu, Some(Ok(adapter))) = (backend, WGPU_SETUP.get()) {
        return format!("{} on {}", backend.name(), adapter.description);
    }
    backend.name().to_string()
}

/// The largest buffer, in bytes, the device can hold one tensor in: for
/// refusing a batch whose tensors will not fit before any work. `None` on
/// the CPU, whose bound is the memory itself.
pub fn largest_buffer(device: &Device) -> Option<u64> {
    #[cfg(feature = "wgpu")]
    if let (Backend::Wgpu, Some(Ok(adapter))) = (Backend::of(device), WGPU_SETUP.get()) {
        return Some(adapter.largest_buffer);
    }
    let _ = device;
    None
}

/// The adapter [`open_wgpu`] set up.
#[cfg(feature = "wgpu")]
struct Adapter {
    /// Its name and the graphics API it runs through.
    description: String,
    /// The largest buffer it takes, in bytes: the bound of any one tensor.
    largest_buffer: u64,
}

/// What [`open_wgpu`] found, or why there is none. Set up once per
/// process: cubecl refuses a second setup of one device.
#[cfg(feature = "wgpu")]
static WGPU_SETUP: std::sync::OnceLock<Result<Adapter, String>> = std::sync::OnceLock::new();

/// Sets up wgpu's default adapter: the first graphics API of Vulkan, Metal,
/// DirectX 12 and OpenGL (wgpu's last resort) that has one, a real GPU before
/// a software one.
#[cfg(feature = "wgpu")]
fn open_wgpu() -> Result<Device, BackendError> {
    use burn::backend::wgpu::graphics::AutoGraphicsApi;
    use burn::backend::wgpu::wgpu::Backend as Api;
    use burn::backend::wgpu::{RuntimeOptions, WgpuDevice, WgpuInitError, try_init_setup};

    let device = WgpuDevice::default();
    let setup =
        WGPU_SETUP.get_or_init(|| {
            let setup = try_init_setup::<AutoGraphicsApi>(&device, RuntimeOptions::default())
                .map_err(|e| match e {
                    // Its message, without cubecl's debug print of the device asked for.
                    WgpuInitError::AdapterUnavailable { message, .. } => message,
                    e => e.to_string(),
                })?;
            let api = match setup.backend {
                Api::Vulkan => "Vulkan".to_string(),
                Api::Metal => "Metal".to_string(),
                Api::Dx12 => "DirectX 12".to_string(),
                Api::Gl => "OpenGL".to_string(),
                other => format!("{other:?}"),
            };
            // The bound cubecl itself allocates within.
            let limits = setup.device.limits();
            Ok(Adapter {
                description: format!("{} through {api}", setup.adapter.get_info().name),
                largest_buffer: limits
                    .max_storage_buffer_binding_size
                    .min(limits.max_buffer_size),
            })
        });
    match setup {
        Ok(_) => Ok(Device::new(device)),
        Err(reason) => Err(BackendError::NoDevice {
            backend: Backend::Wgpu.name(),
            reason: reason.clone(),
        }),
    }
}
