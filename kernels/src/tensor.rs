//! Host tensors: `f32`, `[C, H, W]`, row-major.

use std::fmt;

use crate::error::KernelError;

/// A `[C, H, W]` shape (batch 1 per frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Channels.
    pub c: usize,
    /// Height (rows).
    pub h: usize,
    /// Width (columns).
    pub w: usize,
}

impl Shape {
    /// A new shape.
    pub const fn new(c: usize, h: usize, w: usize) -> Self {
        Self { c, h, w }
    }

    /// Number of elements.
    pub const fn len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Whether the shape holds no element.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements in one channel plane.
    pub const fn plane(&self) -> usize {
        self.h * self.w
    }

    /// Size in bytes as `f32`.
    pub const fn bytes(&self) -> usize {
        self.len() * std::mem::size_of::<f32>()
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}, {}]", self.c, self.h, self.w)
    }
}

/// A host tensor of `f32` values in `[C, H, W]` order.
///
/// The values live in a `Vec` the tensor owns, or in a shared
/// [`bytes::Bytes`] (a frame's payload as it came off the wire, borrowed
/// without a copy). Reading works the same for both; writing to a shared
/// tensor copies it first ([`Tensor::data_mut`]).
#[derive(Clone)]
pub struct Tensor {
    shape: Shape,
    data: Storage,
}

#[derive(Clone)]
enum Storage {
    Owned(Pooled),
    /// 4-byte aligned, `shape.bytes()` long (checked on construction).
    Shared(bytes::Bytes),
}

/// An owned buffer that, when dropped, goes back to [`POOL`] for the next
/// [`Tensor::for_overwrite`] of that size (frame-sized outputs are then
/// neither zeroed nor faulted in again each frame).
#[derive(Clone, Default)]
struct Pooled(Vec<f32>);

impl Drop for Pooled {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.len() < POOL_MIN_LEN {
            return;
        }
        if let Ok(mut pool) = POOL.lock() {
            pool.push(v);
            while pool.len() > POOL_MAX || pool.iter().map(Vec::len).sum::<usize>() > POOL_MAX_LEN {
                pool.remove(0);
            }
        }
    }
}

/// Buffers of at least this many values are recycled (256 KiB).
const POOL_MIN_LEN: usize = 1 << 16;
/// Most buffers kept for reuse.
const POOL_MAX: usize = 8;
/// Most values kept for reuse in all (256 MiB).
const POOL_MAX_LEN: usize = 1 << 26;
/// Dropped frame-sized buffers, most recent last.
static POOL: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());

/// A buffer of exactly `n` values whose contents are unspecified (a
/// recycled buffer's old values, or zeros).
fn recycled(n: usize) -> Vec<f32> {
    if n >= POOL_MIN_LEN
        && let Ok(mut pool) = POOL.lock()
        && let Some(i) = pool.iter().rposition(|v| v.len() == n)
    {
        return pool.swap_remove(i);
    }
    vec![0.0; n]
}

impl PartialEq for Tensor {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape && self.data() == other.data()
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("shape", &self.shape)
            .field("shared", &self.is_shared())
            .field("data", &self.data())
            .finish()
    }
}

/// Lets a `Vec<f32>` back a [`bytes::Bytes`] without a copy.
struct F32Owner(Vec<f32>);

impl AsRef<[u8]> for F32Owner {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

impl Tensor {
    /// Wraps `data` as a tensor of `shape`.
    ///
    /// # Errors
    /// [`KernelError::Length`] when `data.len()` is not `shape.len()`.
    pub fn from_vec(shape: Shape, data: Vec<f32>) -> Result<Self, KernelError> {
        if data.len() != shape.len() {
            return Err(KernelError::Length {
                shape,
                expected: shape.len(),
                got: data.len(),
            });
        }
        Ok(Self {
            shape,
            data: Storage::Owned(Pooled(data)),
        })
    }

    /// Wraps little-endian `f32` bytes as a tensor of `shape` without a copy
    /// when they are 4-byte aligned; otherwise copies them into an owned
    /// buffer. The flag says whether a copy was made.
    ///
    /// # Errors
    /// [`KernelError::Length`] when `bytes` is not `shape.bytes()` long.
    pub fn from_bytes(shape: Shape, bytes: bytes::Bytes) -> Result<(Self, bool), KernelError> {
        if bytes.len() != shape.bytes() {
            return Err(KernelError::Length {
                shape,
                expected: shape.len(),
                got: bytes.len() / std::mem::size_of::<f32>(),
            });
        }
        if bytemuck::try_cast_slice::<u8, f32>(&bytes).is_ok() {
            return Ok((
                Self {
                    shape,
                    data: Storage::Shared(bytes),
                },
                false,
            ));
        }
        let data: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
        Ok((
            Self {
                shape,
                data: Storage::Owned(Pooled(data)),
            },
            true,
        ))
    }

    /// The values' bytes as a shared [`bytes::Bytes`], without a copy.
    pub fn into_bytes(self) -> bytes::Bytes {
        match self.data {
            Storage::Owned(mut v) => bytes::Bytes::from_owner(F32Owner(std::mem::take(&mut v.0))),
            Storage::Shared(b) => b,
        }
    }

    /// Whether the values are a shared buffer (written only after a copy).
    pub fn is_shared(&self) -> bool {
        matches!(self.data, Storage::Shared(_))
    }

    /// A tensor of zeros.
    pub fn zeros(shape: Shape) -> Self {
        Self {
            shape,
            data: Storage::Owned(Pooled(vec![0.0; shape.len()])),
        }
    }

    /// A tensor every value of which the caller will write before reading
    /// it: its values are unspecified (a recycled frame buffer's, or
    /// zeros). Kernels allocate their outputs with it, so a frame-sized
    /// output is not zeroed each frame.
    pub fn for_overwrite(shape: Shape) -> Self {
        Self {
            shape,
            data: Storage::Owned(Pooled(recycled(shape.len()))),
        }
    }

    /// The shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// All values, `[C, H, W]` row-major.
    pub fn data(&self) -> &[f32] {
        match &self.data {
            Storage::Owned(v) => &v.0,
            // Alignment and length were checked when the tensor was made.
            Storage::Shared(b) => bytemuck::try_cast_slice(b).unwrap_or(&[]),
        }
    }

    /// All values, mutable; a shared tensor is copied into an owned buffer
    /// first.
    pub fn data_mut(&mut self) -> &mut [f32] {
        if let Storage::Shared(b) = &self.data {
            self.data = Storage::Owned(Pooled(bytemuck::pod_collect_to_vec(b)));
        }
        match &mut self.data {
            Storage::Owned(v) => &mut v.0,
            Storage::Shared(_) => &mut [],
        }
    }

    /// One channel plane.
    pub fn plane(&self, c: usize) -> &[f32] {
        let p = self.shape.plane();
        &self.data()[c * p..(c + 1) * p]
    }

    /// The values' bytes in native order (little-endian on every supported
    /// target), without a copy.
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(self.data())
    }

    /// Consumes the tensor and returns its values (a copy when shared).
    pub fn into_vec(self) -> Vec<f32> {
        match self.data {
            Storage::Owned(mut v) => std::mem::take(&mut v.0),
            Storage::Shared(b) => bytemuck::pod_collect_to_vec(&b),
        }
    }
}
