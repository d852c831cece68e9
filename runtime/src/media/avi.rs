//! An AVI file of PNG frames (`MPNG`), written so that a process killed at
//! any instant leaves a file every decoder reads up to its last whole
//! frame, and a restarted writer appends to it: the durable video sink.
//!
//! The headers have fixed sizes, so their counts sit at fixed offsets. Each
//! frame is committed by appending its chunk (`00dc`), then rewriting the
//! counts it changes (frames in `avih` and `strh`, the `movi` and `RIFF`
//! sizes) in place. The index (`idx1`) is written when the file is
//! finished; until then decoders read the `movi` list in order, as they do
//! for any AVI without an index. Resuming cuts the file after the frames
//! its journal committed (dropping a frame written but not committed, and
//! an index) and appends from there, so a resumed file is byte for byte
//! the file an uninterrupted writer makes.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Offset of `avih.dwFlags`.
const AVIH_FLAGS: u64 = 44;
/// Offset of `avih.dwTotalFrames`.
const AVIH_FRAMES: u64 = 48;
/// Offset of `strh.dwLength`.
const STRH_LENGTH: u64 = 140;
/// Offset of the `movi` list's size field.
const MOVI_SIZE: u64 = 216;
/// Offset of the `movi` fourcc (index offsets count from it).
const MOVI: u64 = 220;
/// Where the first frame chunk starts.
const FIRST_CHUNK: u64 = 224;
/// `AVIF_HASINDEX`.
const HAS_INDEX: u32 = 0x10;
/// `AVIIF_KEYFRAME`: every PNG frame stands alone.
const KEYFRAME: u32 = 0x10;

/// An AVI file of PNG frames, open for appending.
#[derive(Debug)]
pub struct AviWriter {
    file: File,
    path: PathBuf,
    /// `(offset, size)` of each frame chunk's data.
    chunks: Vec<(u64, u32)>,
    /// Where the next chunk goes.
    end: u64,
}

fn le32(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

/// The headers (everything before the first frame) for `width`×`height`
/// frames at `fps`.
fn headers(width: u32, height: u32, fps: f64) -> Vec<u8> {
    let mut h = Vec::with_capacity(FIRST_CHUNK as usize);
    let rate = (fps * 1000.0).round().clamp(1.0, f64::from(u32::MAX)) as u32;
    let us_per_frame = (1e6 / fps.max(1e-3))
        .round()
        .clamp(1.0, f64::from(u32::MAX)) as u32;
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&le32(0)); // RIFF size: set per frame
    h.extend_from_slice(b"AVI LIST");
    h.extend_from_slice(&le32(192)); // hdrl
    h.extend_from_slice(b"hdrlavih");
    h.extend_from_slice(&le32(56));
    for v in [us_per_frame, 0, 0, 0, 0, 0, 1, 0, width, height, 0, 0, 0, 0] {
        h.extend_from_slice(&le32(v)); // flags (44) and frames (48) set later
    }
    h.extend_from_slice(b"LIST");
    h.extend_from_slice(&le32(116)); // strl
    h.extend_from_slice(b"strlstrh");
    h.extend_from_slice(&le32(56));
    h.extend_from_slice(b"vidsMPNG");
    h.extend_from_slice(&le32(0)); // flags
    h.extend_from_slice(&le32(0)); // priority, language
    h.extend_from_slice(&le32(0)); // initial frames
    h.extend_from_slice(&le32(1000)); // scale
    h.extend_from_slice(&le32(rate)); // rate: fps = rate / scale
    h.extend_from_slice(&le32(0)); // start
    h.extend_from_slice(&le32(0)); // length (140): set per frame
    h.extend_from_slice(&le32(0)); // suggested buffer
    h.extend_from_slice(&le32(u32::MAX)); // quality: default
    h.extend_from_slice(&le32(0)); // sample size: varies
    let (w16, h16) = (
        u16::try_from(width).unwrap_or(u16::MAX),
        u16::try_from(height).unwrap_or(u16::MAX),
    );
    for v in [0u16, 0, w16, h16] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(b"strf");
    h.extend_from_slice(&le32(40));
    h.extend_from_slice(&le32(40)); // biSize
    h.extend_from_slice(&le32(width));
    h.extend_from_slice(&le32(height));
    h.extend_from_slice(&1u16.to_le_bytes()); // planes
    h.extend_from_slice(&24u16.to_le_bytes()); // bit count
    h.extend_from_slice(b"MPNG");
    h.extend_from_slice(&le32(width.saturating_mul(height).saturating_mul(3)));
    for _ in 0..4 {
        h.extend_from_slice(&le32(0));
    }
    h.extend_from_slice(b"LIST");
    h.extend_from_slice(&le32(4)); // movi size: set per frame
    h.extend_from_slice(b"movi");
    debug_assert_eq!(h.len() as u64, FIRST_CHUNK);
    h
}

fn io(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

impl AviWriter {
    /// Creates (or replaces) `path` for `width`×`height` frames at `fps`.
    ///
    /// # Errors
    /// A message naming the file when it cannot be written.
    pub fn create(path: &Path, width: u32, height: u32, fps: f64) -> Result<Self, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| io(path, e))?;
        file.write_all_at(&headers(width, height, fps), 0)
            .map_err(|e| io(path, e))?;
        let mut w = Self {
            file,
            path: path.to_path_buf(),
            chunks: Vec::new(),
            end: FIRST_CHUNK,
        };
        w.write_counts(false)?;
        Ok(w)
    }

    /// Reopens `path` (written by [`AviWriter`] for the same frame size and
    /// rate) to append after its first `frames` frames; anything after them
    /// (a frame written but not committed, an index) is cut off.
    ///
    /// # Errors
    /// A message naming the file when it is not such a file or holds fewer
    /// frames.
    pub fn resume(
        path: &Path,
        width: u32,
        height: u32,
        fps: f64,
        frames: u64,
    ) -> Result<Self, String> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io(path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io(path, e))?;
        let mut want = headers(width, height, fps);
        // The counts differ; compare the rest of the headers.
        let mask = |b: &mut Vec<u8>| {
            for at in [4u64, AVIH_FLAGS, AVIH_FRAMES, STRH_LENGTH, MOVI_SIZE] {
                let at = at as usize;
                if b.len() >= at + 4 {
                    b[at..at + 4].fill(0);
                }
            }
        };
        let mut got = bytes.get(..FIRST_CHUNK as usize).unwrap_or(&[]).to_vec();
        mask(&mut got);
        mask(&mut want);
        if got != want {
            return Err(format!(
                "{}: not the AVI this sink writes for {width}x{height} at {fps} fps: remove it and its journal, or pass --fresh",
                path.display()
            ));
        }
        let mut chunks = Vec::new();
        let mut at = FIRST_CHUNK;
        while (chunks.len() as u64) < frames {
            let head = bytes
                .get(at as usize..at as usize + 8)
                .filter(|h| &h[..4] == b"00dc");
            let Some(head) = head else {
                return Err(format!(
                    "{}: holds {} whole frames, fewer than the {frames} its journal committed: remove the journal or pass --fresh",
                    path.display(),
                    chunks.len()
                ));
            };
            let size = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            let next = at + 8 + u64::from(size) + u64::from(size % 2);
            if next > bytes.len() as u64 {
                return Err(format!(
                    "{}: frame {} is cut short; the journal committed {frames}",
                    path.display(),
                    chunks.len()
                ));
            }
            chunks.push((at + 8, size));
            at = next;
        }
        file.set_len(at).map_err(|e| io(path, e))?;
        let mut w = Self {
            file,
            path: path.to_path_buf(),
            chunks,
            end: at,
        };
        w.write_counts(false)?;
        Ok(w)
    }

    /// Frames in the file.
    pub fn frames(&self) -> u64 {
        self.chunks.len() as u64
    }

    /// Appends and commits one frame (`png`: an encoded PNG image).
    ///
    /// # Errors
    /// A message naming the file when it cannot be written.
    pub fn append(&mut self, png: &[u8]) -> Result<(), String> {
        let size = u32::try_from(png.len())
            .map_err(|_| format!("{}: a frame over 4 GiB", self.path.display()))?;
        let mut chunk = Vec::with_capacity(png.len() + 9);
        chunk.extend_from_slice(b"00dc");
        chunk.extend_from_slice(&le32(size));
        chunk.extend_from_slice(png);
        if size % 2 == 1 {
            chunk.push(0);
        }
        self.file
            .write_all_at(&chunk, self.end)
            .map_err(|e| io(&self.path, e))?;
        self.chunks.push((self.end + 8, size));
        self.end += chunk.len() as u64;
        self.write_counts(false)
    }

    /// Rewrites the counts in place: frames, `movi` and `RIFF` sizes, and
    /// the has-index flag.
    fn write_counts(&mut self, indexed: bool) -> Result<(), String> {
        let frames = u32::try_from(self.chunks.len()).unwrap_or(u32::MAX);
        let movi = u32::try_from(self.end - MOVI).unwrap_or(u32::MAX);
        let file_end = if indexed {
            self.end + 8 + 16 * self.chunks.len() as u64
        } else {
            self.end
        };
        let riff = u32::try_from(file_end - 8).unwrap_or(u32::MAX);
        for (at, v) in [
            (AVIH_FLAGS, if indexed { HAS_INDEX } else { 0 }),
            (AVIH_FRAMES, frames),
            (STRH_LENGTH, frames),
            (MOVI_SIZE, movi),
            (4, riff),
        ] {
            self.file
                .write_all_at(&le32(v), at)
                .map_err(|e| io(&self.path, e))?;
        }
        Ok(())
    }

    /// Forces what was written to disk.
    ///
    /// # Errors
    /// A message naming the file when the flush fails.
    pub fn sync(&self) -> Result<(), String> {
        self.file.sync_data().map_err(|e| io(&self.path, e))
    }

    /// Writes the index after the frames and forces the file to disk.
    ///
    /// # Errors
    /// A message naming the file when it cannot be written.
    pub fn finish(&mut self) -> Result<(), String> {
        let mut idx = Vec::with_capacity(8 + 16 * self.chunks.len());
        idx.extend_from_slice(b"idx1");
        idx.extend_from_slice(&le32(
            u32::try_from(16 * self.chunks.len()).unwrap_or(u32::MAX),
        ));
        for &(data, size) in &self.chunks {
            idx.extend_from_slice(b"00dc");
            idx.extend_from_slice(&le32(KEYFRAME));
            // From the `movi` fourcc to the chunk's header.
            idx.extend_from_slice(&le32(u32::try_from(data - 8 - MOVI).unwrap_or(u32::MAX)));
            idx.extend_from_slice(&le32(size));
        }
        self.file
            .write_all_at(&idx, self.end)
            .map_err(|e| io(&self.path, e))?;
        self.file
            .set_len(self.end + idx.len() as u64)
            .map_err(|e| io(&self.path, e))?;
        self.write_counts(true)?;
        self.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(k: u8) -> Vec<u8> {
        // Stand-ins for PNG data, odd and even lengths.
        (0..(10 + usize::from(k))).map(|i| k ^ i as u8).collect()
    }

    fn write(path: &Path, n: u8) {
        let mut w = AviWriter::create(path, 4, 3, 30.0).unwrap_or_else(|e| panic!("{e}"));
        for k in 0..n {
            w.append(&frame(k)).unwrap_or_else(|e| panic!("{e}"));
        }
        w.finish().unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn a_resumed_file_is_the_file_an_uninterrupted_writer_makes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let whole = dir.path().join("whole.avi");
        write(&whole, 7);
        // Killed after committing 4 frames, with a 5th written but not
        // committed and half of a 6th.
        let cut = dir.path().join("cut.avi");
        let mut w = AviWriter::create(&cut, 4, 3, 30.0).unwrap_or_else(|e| panic!("{e}"));
        for k in 0..5 {
            w.append(&frame(k)).unwrap_or_else(|e| panic!("{e}"));
        }
        let end = w.end;
        drop(w);
        let f = OpenOptions::new()
            .write(true)
            .open(&cut)
            .unwrap_or_else(|e| panic!("{e}"));
        f.write_all_at(b"00dc\x20\x00\x00\x00abc", end)
            .unwrap_or_else(|e| panic!("{e}"));
        drop(f);
        let mut w = AviWriter::resume(&cut, 4, 3, 30.0, 4).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.frames(), 4);
        for k in 4..7 {
            w.append(&frame(k)).unwrap_or_else(|e| panic!("{e}"));
        }
        w.finish().unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (
            std::fs::read(&whole).unwrap_or_default(),
            std::fs::read(&cut).unwrap_or_default(),
        );
        assert!(!a.is_empty() && a == b, "the files differ");
        // RIFF size covers the file; the index lists 7 frames.
        assert_eq!(
            u32::from_le_bytes([a[4], a[5], a[6], a[7]]) as usize,
            a.len() - 8
        );
        assert_eq!(u32::from_le_bytes([a[48], a[49], a[50], a[51]]), 7);
    }

    #[test]
    fn resuming_more_frames_than_the_file_holds_or_another_file_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("v.avi");
        write(&p, 3);
        let e = AviWriter::resume(&p, 4, 3, 30.0, 5).unwrap_err();
        assert!(e.contains("fewer than the 5"), "{e}");
        let e = AviWriter::resume(&p, 8, 3, 30.0, 1).unwrap_err();
        assert!(e.contains("not the AVI"), "{e}");
        assert!(AviWriter::resume(&p, 4, 3, 30.0, 3).is_ok());
    }
}
