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
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Shape,
    data: Vec<f32>,
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
        Ok(Self { shape, data })
    }

    /// A tensor of zeros.
    pub fn zeros(shape: Shape) -> Self {
        Self {
            shape,
            data: vec![0.0; shape.len()],
        }
    }

    /// The shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// All values, `[C, H, W]` row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// All values, mutable.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// One channel plane.
    pub fn plane(&self, c: usize) -> &[f32] {
        let p = self.shape.plane();
        &self.data[c * p..(c + 1) * p]
    }

    /// The values' bytes in native order (little-endian on every supported
    /// target), without a copy.
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.data)
    }

    /// Consumes the tensor and returns its values.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }
}
