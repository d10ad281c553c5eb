//! Pack files: append-only files of chunk frames, and the index entries
//! (`Loc`) that point into them.
//!
//! ```text
//! pack file   = header frame*
//! header      = "FLORPACK" version:u32 pack_id:u32                 (16 bytes)
//! frame       = body_len:u32 body crc32(body):u32
//! body        = codec:u8 raw_len:u32 blake3(raw):[u8;32] payload  (37 + payload bytes)
//! codec       = 0 (payload is the raw bytes) | 1 (payload is one zstd frame)
//! index entry = pack_id:u32 offset:u64 frame_len:u32               (16 bytes)
//! ```
//!
//! Integers are little-endian. A frame carries its length, a checksum and
//! the hash of its content, so a torn tail is recognisable and a pack can be
//! read without the index. A process never appends to a pack an earlier
//! process wrote: each writer starts a new pack, so a torn tail stays
//! unreferenced garbage until [`super::CheckpointStore::gc`] drops it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Pack file magic.
pub(crate) const PACK_MAGIC: &[u8; 8] = b"FLORPACK";
/// Pack format version.
pub(crate) const PACK_VERSION: u32 = 1;
/// Header length in bytes.
pub(crate) const PACK_HEADER_LEN: u64 = 16;
/// Bytes of a frame that are not payload: length, codec, raw length, hash, crc.
pub(crate) const FRAME_OVERHEAD: usize = 4 + 1 + 4 + 32 + 4;
/// Offset of the payload within a frame.
pub(crate) const PAYLOAD_AT: usize = 4 + 1 + 4 + 32;

/// How a frame's payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    /// The payload is the raw bytes.
    Raw = 0,
    /// The payload is one zstd frame.
    Zstd = 1,
}

/// Where a chunk's frame lies: the value of an index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    /// Pack id (the file `packs/<id:010>.pack`).
    pub pack: u32,
    /// Byte offset of the frame in the pack.
    pub offset: u64,
    /// Length of the whole frame in bytes.
    pub frame_len: u32,
}

impl Loc {
    /// The 16-byte index value.
    pub(crate) fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&self.pack.to_le_bytes());
        b[4..12].copy_from_slice(&self.offset.to_le_bytes());
        b[12..].copy_from_slice(&self.frame_len.to_le_bytes());
        b
    }

    /// Parses an index value; `None` unless it is exactly 16 bytes with a
    /// frame length of at least [`FRAME_OVERHEAD`].
    pub(crate) fn decode(b: &[u8]) -> Option<Loc> {
        let b: &[u8; 16] = b.try_into().ok()?;
        let [p0, p1, p2, p3, o0, o1, o2, o3, o4, o5, o6, o7, f0, f1, f2, f3] = *b;
        let loc = Loc {
            pack: u32::from_le_bytes([p0, p1, p2, p3]),
            offset: u64::from_le_bytes([o0, o1, o2, o3, o4, o5, o6, o7]),
            frame_len: u32::from_le_bytes([f0, f1, f2, f3]),
        };
        loc.checked()
    }

    /// `self` when it could be a frame's location: a frame length of at
    /// least [`FRAME_OVERHEAD`].
    pub(crate) fn checked(self) -> Option<Loc> {
        (self.frame_len as usize >= FRAME_OVERHEAD).then_some(self)
    }
}

/// A sealed frame, kept in its three parts (header, payload, checksum) so
/// that neither compressing nor storing raw needs another copy; written
/// back to back by [`PackWriter::append`].
pub(crate) struct Frame {
    head: [u8; PAYLOAD_AT],
    payload: Vec<u8>,
    crc: [u8; 4],
}

impl Frame {
    /// Seals `payload` (raw or compressed per `codec`) of a chunk of
    /// `raw_len` bytes hashing to `hash`.
    pub(crate) fn seal(codec: Codec, raw_len: u32, hash: &[u8; 32], payload: Vec<u8>) -> Frame {
        let mut head = [0u8; PAYLOAD_AT];
        // The body is everything after the length field; chunks are at most
        // 16 MiB, so the length fits.
        let body_len = u32::try_from(PAYLOAD_AT - 4 + payload.len()).unwrap_or(u32::MAX);
        head[0..4].copy_from_slice(&body_len.to_le_bytes());
        head[4] = codec as u8;
        head[5..9].copy_from_slice(&raw_len.to_le_bytes());
        head[9..].copy_from_slice(hash);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head[4..]);
        crc.update(&payload);
        Frame {
            head,
            payload,
            crc: crc.finalize().to_le_bytes(),
        }
    }

    /// Length of the whole frame in bytes.
    pub(crate) fn len(&self) -> usize {
        FRAME_OVERHEAD + self.payload.len()
    }

    /// The frame's bytes, in three parts.
    pub(crate) fn parts(&self) -> [&[u8]; 3] {
        [&self.head, &self.payload, &self.crc]
    }
}

/// Checks a frame read from a pack: its length field, checksum, raw length
/// and hash against what the manifest expects. Returns the codec and the
/// payload, or what is wrong.
pub(crate) fn open_frame<'a>(
    frame: &'a [u8],
    expect_hash: &[u8; 32],
    expect_raw_len: u32,
) -> Result<(Codec, &'a [u8]), String> {
    if frame.len() < FRAME_OVERHEAD {
        return Err(format!(
            "frame of {} bytes is shorter than its {FRAME_OVERHEAD}-byte header",
            frame.len()
        ));
    }
    let (head, rest) = frame
        .split_first_chunk::<PAYLOAD_AT>()
        .ok_or("frame too short")?;
    let (payload, crc) = rest.split_last_chunk::<4>().ok_or("frame too short")?;
    let codec = check_frame_parts(head, payload, crc, expect_hash, expect_raw_len)?;
    Ok((codec, payload))
}

/// [`open_frame`] for a frame read in its three parts (header, payload,
/// checksum: [`PackReaders::read_frames`] reads raw payloads straight into
/// their place in the output): the same checks, in the same order, with
/// the same messages. Returns the codec.
pub(crate) fn check_frame_parts(
    head: &[u8; PAYLOAD_AT],
    payload: &[u8],
    crc: &[u8; 4],
    expect_hash: &[u8; 32],
    expect_raw_len: u32,
) -> Result<Codec, String> {
    let (len, body_head) = head.split_first_chunk::<4>().ok_or("frame too short")?;
    let body_len = body_head.len() + payload.len();
    if u32::from_le_bytes(*len) as usize != body_len {
        return Err(format!(
            "frame length field says {} bytes, its recorded location says {body_len}",
            u32::from_le_bytes(*len),
        ));
    }
    let mut sum = crc32fast::Hasher::new();
    sum.update(body_head);
    sum.update(payload);
    if sum.finalize() != u32::from_le_bytes(*crc) {
        return Err("frame checksum mismatch".into());
    }
    let (&codec, rest) = body_head.split_first().ok_or("empty frame body")?;
    let (raw_len, hash) = rest
        .split_first_chunk::<4>()
        .ok_or("frame body too short")?;
    if u32::from_le_bytes(*raw_len) != expect_raw_len {
        return Err(format!(
            "frame holds {} raw bytes, the manifest expects {expect_raw_len}",
            u32::from_le_bytes(*raw_len)
        ));
    }
    if hash != expect_hash {
        return Err("frame holds a different chunk than the manifest names".into());
    }
    match codec {
        0 => Ok(Codec::Raw),
        1 => Ok(Codec::Zstd),
        c => Err(format!("unknown frame codec {c}")),
    }
}

/// Checks a frame's length field and checksum; returns its body.
pub(crate) fn check_crc(frame: &[u8]) -> Result<&[u8], String> {
    if frame.len() < FRAME_OVERHEAD {
        return Err(format!(
            "frame of {} bytes is shorter than its {FRAME_OVERHEAD}-byte header",
            frame.len()
        ));
    }
    let (len, rest) = frame.split_first_chunk::<4>().ok_or("frame too short")?;
    let (body, crc) = rest.split_last_chunk::<4>().ok_or("frame too short")?;
    if u32::from_le_bytes(*len) as usize != body.len() {
        return Err(format!(
            "frame length field says {} bytes, its recorded location says {}",
            u32::from_le_bytes(*len),
            body.len()
        ));
    }
    if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
        return Err("frame checksum mismatch".into());
    }
    Ok(body)
}

/// `packs/<id:010>.pack` under `packs_dir`.
pub(crate) fn pack_path(packs_dir: &Path, id: u32) -> PathBuf {
    packs_dir.join(format!("{id:010}.pack"))
}

/// The packs in `packs_dir` as `(id, path, length in bytes)`, by id. Files
/// with other names are ignored.
pub(crate) fn list_packs(packs_dir: &Path) -> std::io::Result<Vec<(u32, PathBuf, u64)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(packs_dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".pack"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        out.push((id, e.path(), e.metadata()?.len()));
    }
    out.sort_by_key(|p| p.0);
    Ok(out)
}

/// Fsyncs a directory so that entries created or removed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Bytes appended between two requests to start writeback (Linux): the
/// disk then works while the workers compress, and the commit's fsync
/// waits only for the tail.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// The pack being appended to.
pub(crate) struct PackWriter {
    pub id: u32,
    pub path: PathBuf,
    file: BufWriter<File>,
    len: u64,
    /// Everything before this offset has been handed to writeback.
    written_back: u64,
}

impl PackWriter {
    /// Creates pack `id` (it must not exist), writes its header and makes
    /// the new file's directory entry durable.
    pub(crate) fn create(packs_dir: &Path, id: u32) -> std::io::Result<PackWriter> {
        let path = pack_path(packs_dir, id);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        file.write_all(PACK_MAGIC)?;
        file.write_all(&PACK_VERSION.to_le_bytes())?;
        file.write_all(&id.to_le_bytes())?;
        file.flush()?;
        file.get_ref().sync_all()?;
        sync_dir(packs_dir)?;
        Ok(PackWriter {
            id,
            path,
            file,
            len: PACK_HEADER_LEN,
            written_back: 0,
        })
    }

    /// Appends a sealed frame given as consecutive parts; returns where it
    /// lies. Not durable until [`PackWriter::sync`].
    pub(crate) fn append(&mut self, parts: &[&[u8]]) -> std::io::Result<Loc> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let frame_len = u32::try_from(len).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame over 4 GiB")
        })?;
        let loc = Loc {
            pack: self.id,
            offset: self.len,
            frame_len,
        };
        for p in parts {
            self.file.write_all(p)?;
        }
        self.len += u64::from(frame_len);
        if self.len - self.written_back >= WRITEBACK_EVERY {
            self.file.flush()?;
            start_writeback(
                self.file.get_ref(),
                self.written_back,
                self.len - self.written_back,
            );
            self.written_back = self.len;
        }
        Ok(loc)
    }

    /// Bytes in the pack so far, header included.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Writes buffered frames and fsyncs the file's data.
    pub(crate) fn sync(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_data()
    }
}

/// Asks the kernel to start writing `len` bytes at `offset` to disk without
/// waiting (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). Only a hint: it
/// promises no durability, and a failure is ignored (the commit's fsync
/// reports real errors).
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is open for as long as `file` is borrowed, and
    // sync_file_range only reads its arguments.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// Open read handles to packs, shared by loading threads.
pub(crate) struct PackReaders {
    dir: PathBuf,
    open: Mutex<HashMap<u32, Arc<File>>>,
}

impl PackReaders {
    pub(crate) fn new(dir: PathBuf) -> PackReaders {
        PackReaders {
            dir,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Reads the frame at `loc` into `buf` (resized to the frame length;
    /// its old bytes are overwritten, not zeroed first). A pack that does
    /// not exist or ends early is an error of kind `NotFound` or
    /// `UnexpectedEof`.
    pub(crate) fn read(&self, loc: Loc, buf: &mut Vec<u8>) -> std::io::Result<()> {
        let file = self.file(loc.pack)?;
        buf.resize(loc.frame_len as usize, 0);
        read_exact_at(&file, buf, loc.offset)
    }

    /// Reads frames that lie back to back in pack `pack` from `offset` with
    /// one system call, each into three places: its header into `heads[i]`,
    /// its payload straight into `payloads[i]` (sized to the payload), its
    /// checksum into `crcs[i]`. Returns `Ok(false)`, with nothing known
    /// about the buffers' contents, when the pack ends before the last
    /// frame or the platform has no vectored read: the caller then reads
    /// the frames one by one, which names the one at fault. At most
    /// [`FRAMES_PER_READ`] frames.
    pub(crate) fn read_frames(
        &self,
        pack: u32,
        offset: u64,
        heads: &mut [[u8; PAYLOAD_AT]],
        payloads: &mut [&mut [u8]],
        crcs: &mut [[u8; 4]],
    ) -> std::io::Result<bool> {
        let file = self.file(pack)?;
        read_frames_at(&file, offset, heads, payloads, crcs)
    }

    fn file(&self, id: u32) -> std::io::Result<Arc<File>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = open.get(&id) {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(pack_path(&self.dir, id))?);
        open.insert(id, f.clone());
        Ok(f)
    }

    /// Drops the cached handle of a pack about to be deleted.
    pub(crate) fn forget(&self, id: u32) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// The pack directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Most frames [`PackReaders::read_frames`] reads at once: three buffers
/// each, within the 1024 a `preadv` takes on Linux.
pub(crate) const FRAMES_PER_READ: usize = 340;

#[cfg(target_os = "linux")]
fn read_frames_at(
    file: &File,
    offset: u64,
    heads: &mut [[u8; PAYLOAD_AT]],
    payloads: &mut [&mut [u8]],
    crcs: &mut [[u8; 4]],
) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let n = heads.len();
    if n == 0 || n > FRAMES_PER_READ || payloads.len() != n || crcs.len() != n {
        return Ok(false);
    }
    let Ok(off) = libc::off_t::try_from(offset) else {
        return Ok(false);
    };
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(3 * n);
    let mut want = 0usize;
    for ((h, p), c) in heads
        .iter_mut()
        .zip(payloads.iter_mut())
        .zip(crcs.iter_mut())
    {
        for (base, len) in [
            (h.as_mut_ptr(), h.len()),
            (p.as_mut_ptr(), p.len()),
            (c.as_mut_ptr(), c.len()),
        ] {
            iov.push(libc::iovec {
                iov_base: base.cast(),
                iov_len: len,
            });
            want += len;
        }
    }
    let Ok(count) = libc::c_int::try_from(iov.len()) else {
        return Ok(false);
    };
    loop {
        // SAFETY: every iovec points into a buffer borrowed mutably for
        // this call and holds that buffer's length; the descriptor is open
        // while `file` is borrowed.
        let got = unsafe { libc::preadv(file.as_raw_fd(), iov.as_ptr(), count, off) };
        if got < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // A short read: the pack ends early (or a huge read was cut); the
        // caller falls back to reading frame by frame.
        return Ok(usize::try_from(got).is_ok_and(|g| g == want));
    }
}

#[cfg(not(target_os = "linux"))]
fn read_frames_at(
    _file: &File,
    _offset: u64,
    _heads: &mut [[u8; PAYLOAD_AT]],
    _payloads: &mut [&mut [u8]],
    _crcs: &mut [[u8; 4]],
) -> std::io::Result<bool> {
    Ok(false)
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn frame(payload: &[u8], codec: Codec, raw_len: u32, hash: &[u8; 32]) -> Vec<u8> {
        let f = Frame::seal(codec, raw_len, hash, payload.to_vec());
        let bytes = f.parts().concat();
        assert_eq!(bytes.len(), f.len());
        bytes
    }

    #[test]
    fn frames_round_trip_and_detect_damage() {
        let h = [9u8; 32];
        let f = frame(b"hello", Codec::Raw, 5, &h);
        assert_eq!(f.len(), FRAME_OVERHEAD + 5);
        assert_eq!(open_frame(&f, &h, 5).unwrap(), (Codec::Raw, &b"hello"[..]));
        assert!(open_frame(&f, &[8u8; 32], 5)
            .unwrap_err()
            .contains("different chunk"));
        assert!(open_frame(&f, &h, 6)
            .unwrap_err()
            .contains("manifest expects 6"));
        for i in 0..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x40;
            assert!(open_frame(&g, &h, 5).is_err(), "flip at {i} undetected");
        }
        assert!(open_frame(&f[..f.len() - 1], &h, 5).is_err());
        assert!(open_frame(&[], &h, 5).is_err());
    }

    #[test]
    fn locs_round_trip() {
        let l = Loc {
            pack: 7,
            offset: 1 << 40,
            frame_len: 99,
        };
        assert_eq!(Loc::decode(&l.encode()), Some(l));
        assert_eq!(Loc::decode(&l.encode()[..15]), None);
        assert_eq!(Loc::decode(&Loc { frame_len: 3, ..l }.encode()), None);
    }

    #[test]
    fn packs_append_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackWriter::create(dir.path(), 3).unwrap();
        let a = w
            .append(&[&frame(b"abc", Codec::Raw, 3, &[1; 32])])
            .unwrap();
        let b = w
            .append(&[&frame(b"defg", Codec::Raw, 4, &[2; 32])])
            .unwrap();
        w.sync().unwrap();
        assert_eq!(a.offset, PACK_HEADER_LEN);
        assert_eq!(b.offset, PACK_HEADER_LEN + a.frame_len as u64);
        let r = PackReaders::new(dir.path().to_path_buf());
        let mut buf = Vec::new();
        r.read(b, &mut buf).unwrap();
        assert_eq!(open_frame(&buf, &[2; 32], 4).unwrap().1, b"defg");
        assert!(PackWriter::create(dir.path(), 3).is_err());
        let listed = list_packs(dir.path()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].0, listed[0].2), (3, w.len()));
        let past_end = Loc {
            offset: w.len(),
            ..b
        };
        assert_eq!(
            r.read(past_end, &mut buf).unwrap_err().kind(),
            std::io::ErrorKind::UnexpectedEof
        );
    }
}
