//! Files and devices that frames and weights come from, below the spec:
//! the `.npy` format and video files, cameras and image folders (OpenCV,
//! cargo feature `opencv`). Their descriptors (`NpyInput`, `VideoInput`,
//! ...) are plain data the spec holds; the frame sources and sinks built
//! on them are in [`crate::io`].

pub mod avi;
pub mod npy;
pub mod video;
