//! The webhook spool: a local, append-only queue of records Kafka has not
//! acknowledged yet, so a sender can be answered 2xx while Kafka is down.
//!
//! Contract: [`Spool::append`] returns a [`Ticket`] only after the entry is
//! written and `sync_data` returned (for a new segment file, after the
//! directory is synced too): from then on the entry survives a crash or power
//! loss. [`Spool::peek`] hands entries out in append order; [`Spool::ack`]
//! persists how far Kafka has acknowledged (cursor file: temp file, fsync,
//! rename, directory fsync) before deleting wholly acknowledged segments.
//! Delivery is at-least-once: a crash between Kafka's acknowledgement and
//! `ack` replays those entries, as does a corrupt cursor (replay from the
//! first segment: duplicates rather than loss). A crash costs only an entry
//! whose `append` had not returned: its torn bytes fail the checksum and are
//! truncated on open, so appends restart at a clean boundary. Damage in the
//! middle of a segment loses only the damaged entries (the scan resynchronises
//! on the next frame that checks out). No disk content makes this panic.
//!
//! Layout: `<20-digit seq>.spool` segments rolled at 16 MiB, and a `cursor`
//! file (segment, offset, CRC-32). A frame is a magic (4 bytes), the payload
//! length (u32 LE), a CRC-32 of length and payload (u32 LE), and the payload:
//! the [`SpoolEntry`] fields, length-prefixed. Memory: the position of each
//! pending entry (32 bytes), and one segment at a time while opening.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Largest entry payload `append` accepts, and the largest believed on read.
pub const MAX_ENTRY_BYTES: u64 = 64 << 20;
const SEGMENT_BYTES: u64 = 16 << 20;
const HEADER: u64 = 12;
const FRAME_MAGIC: [u8; 4] = [0xFE, b'S', b'P', b'1'];
const CURSOR_MAGIC: [u8; 4] = [0xFE, b'C', b'U', b'1'];

/// One record as it will be produced to Kafka (already encoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolEntry {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub spooled_at_ms: i64,
}

/// Where an entry ends; acknowledging it acknowledges every entry before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket {
    segment: u64,
    end: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool full: pending entries would exceed the limit of {limit} bytes")]
    Full { limit: u64 },
    #[error("spool entry of {size} bytes exceeds the per-entry limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("spool ticket (segment {segment}, offset {end}) is beyond the spool's end")]
    UnknownTicket { segment: u64, end: u64 },
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    seq: u64,
    len: u64,
}

/// A durable FIFO of [`SpoolEntry`] in one directory; see the module docs.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// Segment files, oldest first; never empty. The last one is appended to.
    segments: VecDeque<Segment>,
    writer: File,
    /// False while a new segment's directory entry may not be durable yet.
    dir_synced: bool,
    /// End of the last acknowledged entry (its segment may be deleted).
    cursor: Ticket,
    /// Each pending entry: its ticket, where its frame starts, spooled_at_ms.
    pending: VecDeque<(Ticket, u64, i64)>,
    /// Random per spool, mixed into every frame's checksum, so bytes inside
    /// an event's body (which a sender chooses) can never pass for a frame
    /// when recovery resynchronises after a torn entry.
    salt: Salt,
}

type Salt = [u8; 8];

/// The spool's salt: read from `dir/salt`, or made (random) and stored
/// before the first segment. A spool with segments and no salt file keeps
/// the all-zero salt it was written with.
fn load_salt(dir: &Path, has_segments: bool) -> Result<Salt, SpoolError> {
    let path = dir.join("salt");
    match fs::read(&path) {
        // Without its salt no entry checks out, and recovery would set
        // every one aside: refuse to open rather than guess.
        Ok(bytes) => Salt::try_from(bytes.as_slice()).map_err(|_| SpoolError::Io {
            source: io::Error::other(format!(
                "salt file damaged ({} bytes, expected 8): the spool's entries cannot be \
                 checked without it; restore the file or move the spool's folder aside",
                bytes.len()
            )),
            path: path.clone(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !has_segments => {
            let mut salt = [0; 8];
            salt.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
            let tmp = dir.join("salt.tmp");
            let mut f = File::create(&tmp).map_err(at(&tmp))?;
            f.write_all(&salt)
                .and_then(|()| f.sync_all())
                .map_err(at(&tmp))?;
            fs::rename(&tmp, &path).map_err(at(&path))?;
            sync_dir(dir)?;
            Ok(salt)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok([0; 8]),
        Err(e) => Err(at(&path)(e)),
    }
}

impl Ticket {
    fn new(segment: u64, end: u64) -> Ticket {
        Ticket { segment, end }
    }
}

impl Spool {
    /// Opens (creating the directory if missing) and recovers the spool in `dir`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(at(dir))?;
            // The new directory's own entry has to be durable too.
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
            sync_dir(parent.unwrap_or(Path::new(".")))?;
        }
        let mut segments = list_segments(dir)?;
        let salt = load_salt(dir, !segments.is_empty())?;
        let loaded = read_cursor(dir)?;
        let mut cursor = loaded.unwrap_or(Ticket::new(segments.front().map_or(0, |s| s.seq), 0));
        if let Some(s) = segments.iter().find(|s| s.seq == cursor.segment) {
            cursor.end = cursor.end.min(s.len);
        } else if segments.back().is_none_or(|s| s.seq < cursor.segment) {
            // Everything on disk is acknowledged: start a fresh segment.
            let path = segment_path(dir, cursor.segment);
            open_file(&path, true)?;
            sync_dir(dir)?;
            let seq = cursor.segment;
            segments.push_back(Segment { seq, len: 0 });
            cursor.end = 0;
        }
        let last = segment_path(dir, segments.back().map_or(cursor.segment, |s| s.seq));
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: SEGMENT_BYTES,
            segments,
            writer: open_file(&last, false)?,
            dir_synced: true,
            cursor,
            pending: VecDeque::new(),
            salt,
        };
        for i in 0..spool.segments.len() {
            spool.recover(i)?;
        }
        if loaded != Some(cursor) {
            spool.persist_cursor(cursor)?;
        }
        spool.drop_acked_segments();
        Ok(spool)
    }

    /// Sets the size at which segments roll (tests use small ones).
    #[cfg(test)]
    pub(crate) fn with_segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// Appends and fsyncs (`sync_data`) one entry; `Full` when pending bytes
    /// plus this entry would exceed `max_bytes` (nothing is written then).
    /// After an error the entry counts as not stored (should a failed fsync
    /// have written it anyway, it is delivered too: a duplicate, not a loss).
    /// The file need not be reopened after a failed fsync (the "fsyncgate"
    /// concern: the kernel may drop dirty pages and clear the error): every
    /// append is fsynced on its own, so the only unsynced bytes a failure
    /// can concern are this entry's, which is cut off and refused.
    pub fn append(&mut self, entry: &SpoolEntry) -> Result<Ticket, SpoolError> {
        let frame = encode_frame(entry, &self.salt)?;
        let size = frame.len() as u64;
        if self.bytes().saturating_add(size) > self.max_bytes {
            let limit = self.max_bytes;
            return Err(SpoolError::Full { limit });
        }
        let Segment { seq, len } = self.last();
        if len > 0 && len.saturating_add(size) > self.segment_bytes {
            self.roll(seq)?;
        }
        let Segment { seq, len: start } = self.last();
        if let Err(e) = self.write_frame(seq, start, &frame) {
            // Best effort: leave no partial frame behind. Appends write at
            // `start` again anyway, and a torn tail is truncated on open.
            let _ = self.writer.set_len(start);
            return Err(e);
        }
        if let Some(s) = self.segments.back_mut() {
            s.len = start + size;
        }
        let ticket = Ticket::new(seq, start + size);
        self.pending.push_back((ticket, start, entry.spooled_at_ms));
        Ok(ticket)
    }

    /// Up to `max` entries after the last acknowledged one, in append order.
    /// Calling it again without `ack` returns the same entries. An entry
    /// damaged on disk since it was written is logged and dropped.
    pub fn peek(&mut self, max: usize) -> Result<Vec<(Ticket, SpoolEntry)>, SpoolError> {
        let (mut out, mut damaged) = (Vec::new(), Vec::new());
        let mut open: Option<(u64, File)> = None;
        for &(ticket, start, _) in self.pending.iter().take(max) {
            let path = segment_path(&self.dir, ticket.segment);
            if open.as_ref().is_none_or(|(seq, _)| *seq != ticket.segment) {
                open = Some((ticket.segment, File::open(&path).map_err(at(&path))?));
            }
            let Some((_, file)) = open.as_mut() else {
                continue;
            };
            let mut frame = vec![0; (ticket.end - start) as usize];
            file.seek(SeekFrom::Start(start)).map_err(at(&path))?;
            match file
                .read_exact(&mut frame)
                .map(|()| parse_frame(&frame, &self.salt))
            {
                Ok(Some((_, entry))) => out.push((ticket, entry)),
                Err(e) if e.kind() != io::ErrorKind::UnexpectedEof => return Err(at(&path)(e)),
                _ => {
                    tracing::error!(file = %path.display(), offset = start,
                        "spool: entry damaged on disk since it was written; dropped");
                    damaged.push(ticket);
                }
            }
        }
        if !damaged.is_empty() {
            self.pending.retain(|p| !damaged.contains(&p.0));
        }
        Ok(out)
    }

    /// Every entry up to and including `upto` is in Kafka: persists that
    /// durably, then deletes the segment files wholly acknowledged. A ticket
    /// at or before an earlier `ack` is a no-op.
    pub fn ack(&mut self, upto: Ticket) -> Result<(), SpoolError> {
        if upto <= self.cursor {
            return Ok(());
        }
        if self.pending.back().is_none_or(|p| upto > p.0) {
            let (segment, end) = (upto.segment, upto.end);
            return Err(SpoolError::UnknownTicket { segment, end });
        }
        self.persist_cursor(upto)?;
        self.cursor = upto;
        while self.pending.front().is_some_and(|p| p.0 <= upto) {
            self.pending.pop_front();
        }
        self.drop_acked_segments();
        Ok(())
    }

    /// Entries pending (appended, not acknowledged).
    pub fn depth(&self) -> u64 {
        self.pending.len() as u64
    }

    /// Bytes pending on disk (unacknowledged frames, damaged ones included).
    pub fn bytes(&self) -> u64 {
        let pending = |s: &Segment| match s.seq.cmp(&self.cursor.segment) {
            std::cmp::Ordering::Less => 0,
            std::cmp::Ordering::Equal => s.len.saturating_sub(self.cursor.end),
            std::cmp::Ordering::Greater => s.len,
        };
        self.segments.iter().map(pending).sum()
    }

    /// `spooled_at_ms` of the oldest pending entry.
    pub fn oldest_ms(&self) -> Option<i64> {
        self.pending.front().map(|p| p.2)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn last(&self) -> Segment {
        let seq = self.cursor.segment;
        let last = self.segments.back().copied();
        last.unwrap_or(Segment { seq, len: 0 })
    }

    /// Indexes segment `i`'s entries after the cursor. A bad region followed
    /// by a frame that checks out is skipped; a bad tail is truncated. Bytes
    /// that do not check out (a torn append included) are first copied to a
    /// `damaged-<segment>-<offset>-<uuid>.bin` file beside the spool, so
    /// what recovery cannot read is kept for an operator, never deleted.
    fn recover(&mut self, i: usize) -> Result<(), SpoolError> {
        let Segment { seq, len } = self.segments[i];
        let path = segment_path(&self.dir, seq);
        if seq < self.cursor.segment {
            return Ok(());
        } else if len > SEGMENT_BYTES.max(HEADER + MAX_ENTRY_BYTES) {
            let source = io::Error::other("larger than any segment the spool writes");
            return Err(SpoolError::Io { path, source });
        }
        let bytes = fs::read(&path).map_err(at(&path))?;
        let c = self.cursor;
        let mut pos = if seq == c.segment { c.end as usize } else { 0 };
        while pos < bytes.len() {
            let start = pos as u64;
            if let Some((n, entry)) = parse_frame(&bytes[pos..], &self.salt) {
                let ticket = Ticket::new(seq, start + n as u64);
                self.pending.push_back((ticket, start, entry.spooled_at_ms));
                pos += n;
            } else if let Some(next) =
                (pos + 1..bytes.len()).find(|&q| parse_frame(&bytes[q..], &self.salt).is_some())
            {
                let kept = self.keep_damaged(seq, pos, &bytes[pos..next])?;
                tracing::error!(file = %path.display(), offset = pos, skipped_bytes = next - pos,
                    kept_in = %kept.display(), "spool: corrupt entry skipped");
                pos = next;
            } else {
                let tail = &bytes[pos..];
                // Kept even when it looks torn: a bit flip in a complete
                // frame's length looks the same.
                let kept = self.keep_damaged(seq, pos, tail)?;
                if is_torn_append(tail) {
                    tracing::warn!(file = %path.display(), offset = pos, bytes = tail.len(),
                        kept_in = %kept.display(), "spool: torn entry at the end of a segment truncated");
                } else {
                    tracing::error!(file = %path.display(), offset = pos, bytes = tail.len(),
                        kept_in = %kept.display(),
                        "spool: unreadable bytes at the end of a segment moved aside");
                }
                let file = open_file(&path, false)?;
                file.set_len(start).map_err(at(&path))?;
                file.sync_all().map_err(at(&path))?;
                break;
            }
        }
        self.segments[i].len = pos.min(bytes.len()) as u64;
        Ok(())
    }

    /// Copies bytes recovery cannot read to a file of their own (fsynced).
    fn keep_damaged(&self, seq: u64, offset: usize, bytes: &[u8]) -> Result<PathBuf, SpoolError> {
        let path = self.dir.join(format!(
            "damaged-{seq:020}-{offset}-{}.bin",
            uuid::Uuid::new_v4().simple()
        ));
        let mut file = File::create_new(&path).map_err(at(&path))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(at(&path))?;
        sync_dir(&self.dir)?;
        Ok(path)
    }

    fn roll(&mut self, last: u64) -> Result<(), SpoolError> {
        let Some(seq) = last.checked_add(1) else {
            let source = io::Error::other("segment numbers exhausted");
            let path = self.dir.clone();
            return Err(SpoolError::Io { path, source });
        };
        self.writer = open_file(&segment_path(&self.dir, seq), true)?;
        self.segments.push_back(Segment { seq, len: 0 });
        self.dir_synced = false;
        Ok(())
    }

    fn write_frame(&mut self, seq: u64, start: u64, frame: &[u8]) -> Result<(), SpoolError> {
        let (path, w) = (segment_path(&self.dir, seq), &mut self.writer);
        w.seek(SeekFrom::Start(start)).map_err(at(&path))?;
        w.write_all(frame).map_err(at(&path))?;
        w.sync_data().map_err(at(&path))?;
        if !self.dir_synced {
            sync_dir(&self.dir)?;
            self.dir_synced = true;
        }
        Ok(())
    }

    fn persist_cursor(&self, pos: Ticket) -> Result<(), SpoolError> {
        let tmp = self.dir.join("cursor.tmp");
        let mut file = File::create(&tmp).map_err(at(&tmp))?;
        let written = file.write_all(&encode_cursor(pos));
        written.and_then(|()| file.sync_all()).map_err(at(&tmp))?;
        let path = self.dir.join("cursor");
        fs::rename(&tmp, &path).map_err(at(&path))?;
        sync_dir(&self.dir)
    }

    /// Removes wholly acknowledged segments, never the one appended to. A
    /// failure is retried on the next ack or open: the cursor is durable.
    fn drop_acked_segments(&mut self) {
        while let Some(&Segment { seq, len }) = self.segments.front() {
            let (c, more) = (self.cursor, self.segments.len() > 1);
            if seq > c.segment || (seq == c.segment && (len > c.end || !more)) {
                return;
            }
            let path = segment_path(&self.dir, seq);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    tracing::warn!(file = %path.display(), error = %e,
                        "spool: cannot delete an acknowledged segment");
                    return;
                }
                _ => self.segments.pop_front(),
            };
        }
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.spool"))
}

/// Opens a segment for reading and writing; `create` makes a new one.
fn open_file(path: &Path, create: bool) -> Result<File, SpoolError> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create_new(create);
    options.open(path).map_err(at(path))
}

fn list_segments(dir: &Path) -> Result<VecDeque<Segment>, SpoolError> {
    let mut segments = Vec::new();
    for item in fs::read_dir(dir).map_err(at(dir))? {
        let item = item.map_err(at(dir))?;
        let name = item.file_name();
        let Some(digits) = name.to_str().and_then(|n| n.strip_suffix(".spool")) else {
            continue;
        };
        let meta = item.metadata().map_err(at(&item.path()))?;
        let digits_only = digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit());
        if let (Ok(seq), true) = (digits.parse(), digits_only && meta.is_file()) {
            let len = meta.len();
            segments.push(Segment { seq, len });
        }
    }
    segments.sort_by_key(|s| s.seq);
    Ok(segments.into())
}

fn read_cursor(dir: &Path) -> Result<Option<Ticket>, SpoolError> {
    let path = dir.join("cursor");
    let mut bytes = Vec::new();
    match File::open(&path) {
        Ok(file) => file.take(64).read_to_end(&mut bytes).map_err(at(&path))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(at(&path)(e)),
    };
    let cursor = bytes.split_last_chunk::<4>().and_then(|(body, crc)| {
        let mut d = Decoder(body);
        let (magic, segment, end) = (d.take::<4>()?, d.take()?, d.take()?);
        let valid = magic == CURSOR_MAGIC && d.0.is_empty();
        let valid = valid && crc32fast::hash(body) == u32::from_le_bytes(*crc);
        valid.then(|| Ticket::new(u64::from_le_bytes(segment), u64::from_le_bytes(end)))
    });
    if cursor.is_none() {
        tracing::error!(file = %path.display(),
            "spool: corrupt cursor file; replaying from the first segment (duplicates, not loss)");
    }
    Ok(cursor)
}

fn encode_cursor(pos: Ticket) -> Vec<u8> {
    let mut bytes = CURSOR_MAGIC.to_vec();
    bytes.extend_from_slice(&pos.segment.to_le_bytes());
    bytes.extend_from_slice(&pos.end.to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
    bytes
}

/// Whether `tail` (bytes no frame parses from) is what an append cut short
/// leaves: fewer bytes than a header, a frame header whose declared length
/// runs past the end, or zeros (a file extended but not yet written).
fn is_torn_append(tail: &[u8]) -> bool {
    if tail.len() < HEADER as usize || tail.iter().all(|&b| b == 0) {
        return true;
    }
    let declared = tail
        .get(4..8)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_le_bytes);
    tail.starts_with(&FRAME_MAGIC) && HEADER + u64::from(declared) > tail.len() as u64
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
}

fn frame_crc(salt: &Salt, len: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(salt);
    hasher.update(len);
    hasher.update(payload);
    hasher.finalize()
}

fn encode_frame(e: &SpoolEntry, salt: &Salt) -> Result<Vec<u8>, SpoolError> {
    let key = e.key.as_ref().map_or(0, |k| 4 + k.len());
    let headers: usize = e.headers.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let size = (21 + e.topic.len() + key + e.value.len() + headers) as u64;
    if size > MAX_ENTRY_BYTES {
        return Err(SpoolError::TooLarge {
            size,
            limit: MAX_ENTRY_BYTES,
        });
    }
    let put = |out: &mut Vec<u8>, b: &[u8]| {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    };
    let mut out = Vec::with_capacity((HEADER + size) as usize);
    out.extend_from_slice(&FRAME_MAGIC);
    out.extend_from_slice(&(size as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&e.spooled_at_ms.to_le_bytes());
    put(&mut out, e.topic.as_bytes());
    out.push(u8::from(e.key.is_some()));
    if let Some(key) = &e.key {
        put(&mut out, key);
    }
    put(&mut out, &e.value);
    out.extend_from_slice(&(e.headers.len() as u32).to_le_bytes());
    for (name, value) in &e.headers {
        put(&mut out, name.as_bytes());
        put(&mut out, value);
    }
    let crc = frame_crc(salt, &out[4..8], &out[HEADER as usize..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// The frame at the start of `buf`, with its length, if it checks out.
fn parse_frame(buf: &[u8], salt: &Salt) -> Option<(usize, SpoolEntry)> {
    let mut d = Decoder(buf);
    let (magic, len_bytes, crc) = (d.take::<4>()?, d.take::<4>()?, d.take::<4>()?);
    let len = u32::from_le_bytes(len_bytes);
    if magic != FRAME_MAGIC || u64::from(len) > MAX_ENTRY_BYTES {
        return None;
    }
    let payload = d.0.get(..len as usize)?;
    if frame_crc(salt, &len_bytes, payload) != u32::from_le_bytes(crc) {
        return None;
    }
    Some((HEADER as usize + payload.len(), decode_entry(payload)?))
}

/// Bounds-checked reads from a byte slice: `None` instead of a panic.
struct Decoder<'a>(&'a [u8]);

impl<'a> Decoder<'a> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(self.take()?) as usize;
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn string(&mut self) -> Option<String> {
        std::str::from_utf8(self.bytes()?).ok().map(str::to_owned)
    }
}

fn decode_entry(payload: &[u8]) -> Option<SpoolEntry> {
    let mut d = Decoder(payload);
    let spooled_at_ms = i64::from_le_bytes(d.take()?);
    let topic = d.string()?;
    let key = match d.take::<1>()? {
        [0] => None,
        [1] => Some(d.bytes()?.to_vec()),
        _ => return None,
    };
    let value = d.bytes()?.to_vec();
    let count = u32::from_le_bytes(d.take()?) as usize;
    if count > d.0.len() / 8 {
        return None; // each header takes at least 8 bytes: no huge allocation
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        headers.push((d.string()?, d.bytes()?.to_vec()));
    }
    let entry = SpoolEntry {
        topic,
        key,
        value,
        headers,
        spooled_at_ms,
    };
    d.0.is_empty().then_some(entry)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use std::ops::Range;

    fn entry(i: usize) -> SpoolEntry {
        SpoolEntry {
            topic: format!("topic-{}", i % 3),
            key: i.is_multiple_of(2).then(|| i.to_le_bytes().to_vec()),
            value: format!("value {i};").repeat(i % 5 + 1).into_bytes(),
            headers: vec![("id".into(), i.to_string().into_bytes())],
            spooled_at_ms: 1_000 + i as i64,
        }
    }

    fn entries(range: Range<usize>) -> Vec<SpoolEntry> {
        range.map(entry).collect()
    }

    fn fill(spool: &mut Spool, range: Range<usize>) -> Vec<Ticket> {
        range.map(|i| spool.append(&entry(i)).unwrap()).collect()
    }

    fn pending(spool: &mut Spool) -> Vec<SpoolEntry> {
        let all = spool.peek(usize::MAX).unwrap();
        all.into_iter().map(|(_, e)| e).collect()
    }

    fn reopen(dir: &Path) -> Spool {
        Spool::open(dir, u64::MAX).unwrap()
    }

    /// A directory holding `segment` as segment 0, and `cursor` if given.
    fn with_files(segment: &[u8], cursor: Option<&[u8]>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(segment_path(dir.path(), 0), segment).unwrap();
        if let Some(cursor) = cursor {
            fs::write(dir.path().join("cursor"), cursor).unwrap();
        }
        dir
    }

    /// The bytes of a segment holding entries 0..5, and their tickets.
    fn five_entries() -> (Vec<u8>, Vec<Ticket>) {
        let dir = tempfile::tempdir().unwrap();
        // The all-zero salt of a spool whose segments have no salt file
        // (what `with_files` makes).
        fs::write(dir.path().join("salt"), [0; 8]).unwrap();
        let tickets = fill(&mut reopen(dir.path()), 0..5);
        (fs::read(segment_path(dir.path(), 0)).unwrap(), tickets)
    }

    #[test]
    fn entries_come_back_in_order_until_acknowledged_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = reopen(dir.path());
        let tickets = fill(&mut spool, 0..50);
        assert!(tickets.windows(2).all(|w| w[0] < w[1]));
        let frames = (0..50).map(|i| encode_frame(&entry(i), &[0; 8]).unwrap().len() as u64);
        assert_eq!(spool.bytes(), frames.sum::<u64>());
        assert_eq!((spool.depth(), spool.oldest_ms()), (50, Some(1_000)));
        let batch = spool.peek(10).unwrap();
        assert_eq!(batch, spool.peek(10).unwrap(), "peek without ack repeats");
        assert_eq!(pending(&mut spool), entries(0..50));
        spool.ack(batch[9].0).unwrap();
        spool.ack(tickets[3]).unwrap(); // already acknowledged: a no-op
        assert_eq!((spool.depth(), spool.oldest_ms()), (40, Some(1_010)));
        let beyond = spool.ack(Ticket::new(7, 0));
        assert!(matches!(beyond, Err(SpoolError::UnknownTicket { .. })));

        let mut spool = reopen(dir.path());
        assert_eq!((spool.depth(), pending(&mut spool)), (40, entries(10..50)));
        spool.ack(tickets[49]).unwrap();
        assert_eq!(
            (spool.depth(), spool.bytes(), spool.oldest_ms()),
            (0, 0, None)
        );
        let mut spool = reopen(dir.path());
        assert_eq!(pending(&mut spool), vec![]);
        fill(&mut spool, 50..51);
        assert_eq!((spool.depth(), pending(&mut spool)), (1, entries(50..51)));
    }

    #[test]
    fn segments_roll_and_acknowledged_ones_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let files = || list_segments(dir.path()).unwrap().len() as u64;
        let mut spool = reopen(dir.path()).with_segment_bytes(300);
        let tickets = fill(&mut spool, 0..30);
        assert!(files() > 3 && files() == tickets[29].segment + 1);
        spool.ack(tickets[14]).unwrap();
        assert_eq!(files(), tickets[29].segment - tickets[15].segment + 1);
        assert_eq!(pending(&mut spool), entries(15..30));
        spool.ack(tickets[29]).unwrap();
        assert_eq!((files(), spool.depth(), spool.bytes()), (1, 0, 0));
        let mut spool = reopen(dir.path()).with_segment_bytes(300);
        fill(&mut spool, 30..40);
        assert_eq!((spool.depth(), pending(&mut spool)), (10, entries(30..40)));
    }

    #[test]
    fn full_at_the_limit_and_accepting_again_after_ack() {
        let dir = tempfile::tempdir().unwrap();
        let e = entry(1);
        let limit = 3 * encode_frame(&e, &[0; 8]).unwrap().len() as u64;
        let mut spool = Spool::open(dir.path(), limit).unwrap();
        for _ in 0..3 {
            spool.append(&e).unwrap();
        }
        assert!(matches!(spool.append(&e), Err(SpoolError::Full { .. })));
        assert_eq!((spool.bytes(), spool.depth()), (limit, 3));
        let first = spool.peek(1).unwrap()[0].0;
        spool.ack(first).unwrap();
        spool.append(&e).unwrap();
        assert!(matches!(spool.append(&e), Err(SpoolError::Full { .. })));
        assert_eq!(reopen(dir.path()).depth(), 3);
    }

    #[test]
    fn a_torn_tail_at_any_offset_keeps_every_complete_entry() {
        let (bytes, tickets) = five_entries();
        for cut in tickets[3].end..tickets[4].end {
            let dir = with_files(&bytes[..cut as usize], None);
            let mut spool = reopen(dir.path());
            assert_eq!(pending(&mut spool), entries(0..4), "cut at {cut}");
            let len = fs::metadata(segment_path(dir.path(), 0)).unwrap().len();
            assert_eq!(len, tickets[3].end, "truncated to the last complete entry");
            spool.append(&entry(4)).unwrap();
            assert_eq!(
                pending(&mut reopen(dir.path())),
                entries(0..5),
                "cut at {cut}"
            );
        }
    }

    fn damaged_files(dir: &Path) -> Vec<Vec<u8>> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("damaged-")
            })
            .collect();
        names.sort();
        names.iter().map(|p| fs::read(p).unwrap()).collect()
    }

    #[test]
    fn a_damaged_salt_file_refuses_to_open_and_touches_nothing() {
        let (bytes, _) = five_entries();
        let dir = with_files(&bytes, None);
        fs::write(dir.path().join("salt"), [1, 2, 3]).unwrap();
        let err = Spool::open(dir.path(), 1 << 30).unwrap_err().to_string();
        assert!(err.contains("salt file damaged"), "{err}");
        assert_eq!(fs::read(segment_path(dir.path(), 0)).unwrap(), bytes);
    }

    #[test]
    fn entries_that_do_not_check_out_are_moved_aside_not_deleted() {
        // A salt other than the one the entries were written with: nothing
        // checks out, and everything is kept in a file beside the spool.
        let (bytes, _) = five_entries();
        let dir = with_files(&bytes, None);
        fs::write(dir.path().join("salt"), [7; 8]).unwrap();
        let mut spool = reopen(dir.path());
        assert_eq!(spool.depth(), 0);
        assert_eq!(pending(&mut spool), vec![]);
        assert_eq!(damaged_files(dir.path()), vec![bytes]);
    }

    #[test]
    fn a_corrupt_last_entry_is_moved_aside() {
        let (bytes, tickets) = five_entries();
        let mut damaged = bytes.clone();
        let last = tickets[3].end as usize;
        damaged[last + HEADER as usize + 3] ^= 0x5A;
        let dir = with_files(&damaged, None);
        let mut spool = reopen(dir.path());
        assert_eq!(pending(&mut spool), entries(0..4));
        assert_eq!(damaged_files(dir.path()), vec![damaged[last..].to_vec()]);
    }

    #[test]
    fn a_last_entry_whose_length_was_damaged_is_kept_aside() {
        let (bytes, tickets) = five_entries();
        let mut damaged = bytes.clone();
        let last = tickets[3].end as usize;
        damaged[last + 6] ^= 0x40; // the length grows past the end: looks torn
        let dir = with_files(&damaged, None);
        let mut spool = reopen(dir.path());
        assert_eq!(pending(&mut spool), entries(0..4));
        assert_eq!(damaged_files(dir.path()), vec![damaged[last..].to_vec()]);
    }

    #[test]
    fn a_corrupt_middle_entry_loses_only_itself() {
        let (bytes, tickets) = five_entries();
        for i in tickets[1].end..tickets[2].end {
            let mut damaged = bytes.clone();
            damaged[i as usize] ^= 0x5A;
            let dir = with_files(&damaged, None);
            let mut spool = reopen(dir.path());
            let kept = [0, 1, 3, 4].map(entry).to_vec();
            assert_eq!((spool.depth(), pending(&mut spool)), (4, kept), "byte {i}");
        }
    }

    #[test]
    fn an_entry_damaged_while_open_is_dropped_and_the_rest_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = reopen(dir.path());
        let tickets = fill(&mut spool, 0..3);
        let path = segment_path(dir.path(), 0);
        let mut bytes = fs::read(&path).unwrap();
        bytes[tickets[0].end as usize + 20] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert_eq!(pending(&mut spool), [0, 2].map(entry).to_vec());
        assert_eq!(spool.depth(), 2);
        spool.ack(tickets[2]).unwrap();
        assert_eq!((spool.depth(), spool.bytes()), (0, 0));
    }

    #[test]
    fn a_corrupt_cursor_replays_rather_than_loses() {
        let (bytes, tickets) = five_entries();
        let mut flipped = encode_cursor(tickets[2]);
        flipped[6] ^= 1;
        for cursor in [vec![], b"garbage".to_vec(), flipped] {
            let dir = with_files(&bytes, Some(&cursor));
            assert_eq!(pending(&mut reopen(dir.path())), entries(0..5));
        }
        let dir = with_files(&bytes, Some(&encode_cursor(tickets[2])));
        assert_eq!(pending(&mut reopen(dir.path())), entries(3..5));
    }

    fn arb_entry() -> impl Strategy<Value = SpoolEntry> {
        let bytes = |n| vec(any::<u8>(), 0..n);
        let headers = vec((".{0,6}", bytes(8)), 0..3);
        let fields = (
            ".{0,12}",
            proptest::option::of(bytes(16)),
            bytes(64),
            headers,
        );
        (fields, any::<i64>()).prop_map(|((topic, key, value, headers), spooled_at_ms)| {
            SpoolEntry {
                topic,
                key,
                value,
                headers,
                spooled_at_ms,
            }
        })
    }

    fn garbage() -> impl Strategy<Value = Vec<u8>> {
        vec(any::<u8>(), 0..80)
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 48,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// A sender chooses the bytes of its event's body: a body holding what
    /// looks like a whole frame must not become an entry of its own when
    /// recovery resynchronises after that event's append was torn.
    #[test]
    fn a_frame_forged_inside_a_torn_body_is_not_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = reopen(dir.path());
        spool.append(&entry(1)).unwrap();
        let mut forged = entry(2);
        forged.topic = "ferry-offsets".into();
        let mut carrier = entry(3);
        let mut body = encode_frame(&forged, &[0; 8]).unwrap();
        body.extend_from_slice(&[0; 64]);
        carrier.value = body;
        let t = spool.append(&carrier).unwrap();
        drop(spool);
        // The carrier's append is torn after the forged bytes, before its end.
        let file = OpenOptions::new()
            .write(true)
            .open(segment_path(dir.path(), t.segment))
            .unwrap();
        file.set_len(t.end - 10).unwrap();
        let mut spool = reopen(dir.path());
        assert_eq!(pending(&mut spool), vec![entry(1)]);
    }

    proptest! {
        #![proptest_config(config())]

        /// Garbage around valid frames, any cursor bytes: no panic, and with an
        /// unreadable cursor exactly the valid frames are recovered.
        #[test]
        fn arbitrary_disk_bytes_never_panic(
            chunks in vec(prop_oneof![garbage().prop_map(Err), arb_entry().prop_map(Ok)], 0..8),
            garbage_cursor in vec(any::<u8>(), 0..40),
            valid_cursor in proptest::option::of((0u64..3, 0u64..2_000)),
        ) {
            let mut bytes = Vec::new();
            for chunk in &chunks {
                let frame = |e: &SpoolEntry| encode_frame(e, &[0; 8]).unwrap();
                bytes.extend(chunk.as_ref().map_or_else(Clone::clone, frame));
            }
            let valid = |(s, e)| encode_cursor(Ticket::new(s, e));
            let cursor = valid_cursor.map_or(garbage_cursor, valid);
            let dir = with_files(&bytes, Some(&cursor));
            let mut spool = reopen(dir.path());
            let got = spool.peek(usize::MAX).unwrap();
            if valid_cursor.is_none() {
                let valid: Vec<_> = chunks.iter().filter_map(|c| c.clone().ok()).collect();
                prop_assert_eq!(got.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(), valid);
            }
            if let Some((ticket, _)) = got.first() {
                spool.ack(*ticket).unwrap();
            }
            spool.append(&entry(1)).unwrap();
            let after = pending(&mut reopen(dir.path()));
            prop_assert_eq!(after.last(), Some(&entry(1)));
        }

        /// Entries across segments, the last segment cut anywhere: exactly the
        /// entries wholly written before the cut are recovered, in order.
        #[test]
        fn a_cut_last_segment_keeps_every_entry_written_before_it(
            written in vec(arb_entry(), 1..20),
            cut in any::<proptest::sample::Index>(),
            segment_bytes in 64u64..600,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut spool = reopen(dir.path()).with_segment_bytes(segment_bytes);
            let tickets: Vec<_> = written.iter().map(|e| spool.append(e).unwrap()).collect();
            let last = tickets.last().unwrap().segment;
            let file = OpenOptions::new().write(true).open(segment_path(dir.path(), last)).unwrap();
            let cut = cut.index(file.metadata().unwrap().len() as usize + 1) as u64;
            file.set_len(cut).unwrap();
            let mut spool = reopen(dir.path());
            let kept = tickets.iter().filter(|t| t.segment < last || t.end <= cut).count();
            prop_assert_eq!(pending(&mut spool), written[..kept].to_vec());
            spool.append(&entry(3)).unwrap();
            let mut expected = written[..kept].to_vec();
            expected.push(entry(3));
            prop_assert_eq!(pending(&mut spool), expected);
        }
    }
}
