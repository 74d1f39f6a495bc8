//! Delivery-id deduplication over a time window that survives a restart.
//!
//! Contract: [`Seen::contains`] answers whether an id was inserted within the
//! window; at most `max_entries` ids are remembered, the oldest forgotten
//! first. [`Seen::insert`] appends one line to a file and hands it to the OS
//! (no fsync per id): a process crash loses nothing, a power loss can lose the
//! last ids recorded, which only lets one repeat of each through (its copies
//! share the event id, so consumers can still drop it). A line that is torn or
//! garbage is skipped on load, never believed: a false "seen" would drop an
//! event. Ids are escaped (`\\`, `\n`, `\r`), so no id can break the format
//! `<ms> <id>\n`. The file is compacted (the live ids written to a temp file
//! and renamed over it, handed to the OS like the appends, not fsynced) when
//! it holds more than twice the live ids plus 1024 lines, on open when it
//! holds anything else, and after a failed write.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Longest line believed: a 1 KiB id fully escaped, its time and a space.
const MAX_LINE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SeenError {
    #[error("dedup file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> SeenError + '_ {
    move |source| SeenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The delivery ids accepted within a window, mirrored in a file.
#[derive(Debug)]
pub struct Seen {
    path: PathBuf,
    window_ms: i64,
    max_entries: usize,
    file: File,
    /// Lines in the file.
    lines: usize,
    /// A write failed part-way: the file may end in a torn line.
    torn: bool,
    /// Accepts in time order: (ms, sequence number, id).
    order: VecDeque<(i64, u64, Arc<str>)>,
    /// The latest accept of each id remembered: (sequence number, ms).
    live: HashMap<Arc<str>, (u64, i64)>,
    next_seq: u64,
}

impl Seen {
    /// Opens `path` (a file; created if missing), loading ids seen within
    /// `window` of `now_ms`; at most `max_entries` are kept (oldest evicted first).
    pub fn open(
        path: &Path,
        window: Duration,
        max_entries: usize,
        now_ms: i64,
    ) -> Result<Seen, SeenError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(at(parent))?;
        }
        let mut options = OpenOptions::new();
        let file = options
            .append(true)
            .create(true)
            .open(path)
            .map_err(at(path))?;
        let mut seen = Seen {
            path: path.to_path_buf(),
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            max_entries,
            file,
            lines: 0,
            torn: false,
            order: VecDeque::new(),
            live: HashMap::new(),
            next_seq: 0,
        };
        let cutoff = now_ms.saturating_sub(seen.window_ms);
        let mut reader = BufReader::new(File::open(path).map_err(at(path))?);
        let (mut line, mut unreadable) = (Vec::new(), 0usize);
        while let Some(whole) = next_line(&mut reader, &mut line).map_err(at(path))? {
            seen.lines += 1;
            match parse_line(&line).filter(|_| whole) {
                Some((ms, id)) if ms >= cutoff => seen.remember(&id, ms),
                Some(_) => {}
                None => unreadable += 1,
            }
        }
        if unreadable > 0 {
            tracing::warn!(file = %path.display(), lines = unreadable,
                "dedup file: torn or unreadable lines skipped");
        }
        if seen.lines != seen.live.len() {
            seen.compact()?;
        }
        Ok(seen)
    }

    /// Whether `id` was inserted within the window before `now_ms`.
    pub fn contains(&self, id: &str, now_ms: i64) -> bool {
        let cutoff = now_ms.saturating_sub(self.window_ms);
        self.live.get(id).is_some_and(|&(_, ms)| ms >= cutoff)
    }

    /// Records `id` as accepted at `now_ms`: kept in memory, and appended to
    /// the file (written to the OS, not fsynced). On error the id is still
    /// remembered until a restart, and the next insert rewrites the file.
    pub fn insert(&mut self, id: &str, now_ms: i64) -> Result<(), SeenError> {
        let cutoff = now_ms.saturating_sub(self.window_ms);
        while self.order.front().is_some_and(|o| o.0 < cutoff) {
            self.forget_oldest();
        }
        self.remember(id, now_ms);
        if self.torn || self.lines >= 2 * self.live.len() + 1024 {
            return self.compact(); // writes the live ids, this one included
        }
        let written = (&self.file).write_all(record(now_ms, id).as_bytes());
        let written = written.and_then(|()| (&self.file).flush());
        self.torn = written.is_err();
        self.lines += 1;
        written.map_err(at(&self.path))
    }

    /// Ids remembered (expired ones are dropped lazily, on insert).
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    fn remember(&mut self, id: &str, ms: i64) {
        let (id, seq) = (Arc::<str>::from(id), self.next_seq);
        self.next_seq += 1;
        self.live.insert(Arc::clone(&id), (seq, ms));
        self.order.push_back((ms, seq, id));
        while self.live.len() > self.max_entries && self.forget_oldest() {}
    }

    /// Drops the oldest accept; its id is forgotten unless accepted since.
    fn forget_oldest(&mut self) -> bool {
        let Some((_, seq, id)) = self.order.pop_front() else {
            return false;
        };
        if self.live.get(&id).is_some_and(|&(latest, _)| latest == seq) {
            self.live.remove(&id);
        }
        true
    }

    fn compact(&mut self) -> Result<(), SeenError> {
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut out = BufWriter::new(File::create(&tmp).map_err(at(&tmp))?);
        let mut lines = 0;
        for (ms, seq, id) in &self.order {
            if self.live.get(id).is_some_and(|&(latest, _)| latest == *seq) {
                out.write_all(record(*ms, id).as_bytes())
                    .map_err(at(&tmp))?;
                lines += 1;
            }
        }
        out.into_inner().map_err(|e| at(&tmp)(e.into_error()))?;
        // Not fsynced, like the appends: the window survives Ferry's
        // restarts and crashes (the OS has the bytes), not the machine's
        // (a repeat is then written again, with the same envelope id). An
        // fsync here would hold every request of the connector, waiting on
        // this lock, for the disk's flush.
        fs::rename(&tmp, &self.path).map_err(at(&self.path))?;
        let mut options = OpenOptions::new();
        self.file = options
            .append(true)
            .open(&self.path)
            .map_err(at(&self.path))?;
        (self.lines, self.torn) = (lines, false);
        Ok(())
    }
}

/// One line of the file, with `\`, newline and carriage return escaped.
fn record(ms: i64, id: &str) -> String {
    let mut out = format!("{ms} ");
    for c in id.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('\n');
    out
}

fn parse_line(line: &[u8]) -> Option<(i64, String)> {
    let space = line.iter().position(|&b| b == b' ')?;
    let (ms, escaped) = (&line[..space], &line[space + 1..]);
    let ms = std::str::from_utf8(ms).ok()?.parse().ok()?;
    let mut id = Vec::with_capacity(escaped.len());
    let mut bytes = escaped.iter();
    while let Some(&b) = bytes.next() {
        id.push(match b {
            b'\\' => match bytes.next()? {
                b'\\' => b'\\',
                b'n' => b'\n',
                b'r' => b'\r',
                _ => return None,
            },
            b'\r' => return None,
            b => b,
        });
    }
    Some((ms, String::from_utf8(id).ok()?))
}

/// Reads the next line, without its `\n`, into `line` (at most `MAX_LINE`
/// bytes kept). `None` at the end; otherwise whether the line is whole:
/// ended by `\n` and not too long.
fn next_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<Option<bool>> {
    line.clear();
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok((too_long || !line.is_empty()).then_some(false));
        }
        let end = buf.iter().position(|&b| b == b'\n');
        let chunk = &buf[..end.unwrap_or(buf.len())];
        too_long |= line.len() + chunk.len() > MAX_LINE;
        if !too_long {
            line.extend_from_slice(chunk);
        }
        let used = chunk.len() + usize::from(end.is_some());
        reader.consume(used);
        if end.is_some() {
            return Ok(Some(!too_long));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    const MIN: Duration = Duration::from_secs(60);

    fn open(path: &Path, now_ms: i64) -> Seen {
        Seen::open(path, MIN, 100, now_ms).unwrap()
    }

    #[test]
    fn inserted_ids_are_seen_within_the_window_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = open(&dir.path().join("seen"), 0);
        assert!(!seen.contains("a", 0));
        seen.insert("a", 1_000).unwrap();
        assert!(seen.contains("a", 1_000) && seen.contains("a", 61_000));
        assert!(!seen.contains("a", 61_001) && !seen.contains("b", 1_000));
        seen.insert("b", 70_000).unwrap();
        assert_eq!(seen.len(), 1, "a expired and was dropped");
        seen.insert("a", 70_000).unwrap();
        assert!(seen.contains("a", 70_000));
    }

    #[test]
    fn ids_survive_a_reopen_whatever_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/seen");
        let ids = [
            "plain",
            "with space",
            "new\nline",
            "back\\slash\\n",
            "\r\n",
            "",
            "é✓",
        ];
        let mut seen = open(&path, 0);
        for (i, id) in ids.iter().enumerate() {
            seen.insert(id, i as i64).unwrap();
        }
        drop(seen);
        let seen = open(&path, 10);
        assert_eq!(seen.len(), ids.len());
        assert!(ids.iter().all(|id| seen.contains(id, 10)));
        assert!(!seen.contains("new", 10) && !seen.contains("line", 10));
        assert_eq!(
            open(&path, 60_001).len(),
            6,
            "only `plain`, at 0, has expired"
        );
    }

    #[test]
    fn the_oldest_ids_are_evicted_beyond_max_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen");
        let mut seen = Seen::open(&path, MIN, 3, 0).unwrap();
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            seen.insert(id, i as i64).unwrap();
        }
        seen.insert("b", 5).unwrap(); // a repeat refreshes `b`
        seen.insert("e", 6).unwrap();
        let kept = |s: &Seen| ["a", "b", "c", "d", "e"].map(|id| s.contains(id, 6));
        assert_eq!(kept(&seen), [false, true, false, true, true]);
        assert_eq!(kept(&Seen::open(&path, MIN, 3, 6).unwrap()), kept(&seen));
        assert_eq!(
            kept(&Seen::open(&path, MIN, 2, 6).unwrap()),
            [false, true, false, false, true]
        );
    }

    #[test]
    fn compaction_keeps_the_live_ids_and_bounds_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen");
        let mut seen = Seen::open(&path, MIN, 10, 0).unwrap();
        for i in 0..5_000 {
            seen.insert(&format!("id-{i}"), i).unwrap();
        }
        let lines = fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= 2 * 10 + 1024 + 1, "{lines} lines");
        let seen = Seen::open(&path, MIN, 10, 5_000).unwrap();
        assert_eq!(seen.len(), 10);
        assert!((4_990..5_000).all(|i| seen.contains(&format!("id-{i}"), 5_000)));
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 10);
    }

    #[test]
    fn torn_and_garbage_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen");
        let mut text = b"1 good\nno-space\nx1 bad-time\n2 bad\\escape\n\xff\n".to_vec();
        text.extend(format!("1 {}\n3 also\\ngood\n4 torn", "x".repeat(MAX_LINE)).bytes());
        fs::write(&path, text).unwrap();
        let mut seen = open(&path, 10);
        assert_eq!(seen.len(), 2);
        assert!(seen.contains("good", 10) && seen.contains("also\ngood", 10));
        assert!(!seen.contains("torn", 10) && !seen.contains("to", 10));
        seen.insert("after", 11).unwrap();
        let seen = open(&path, 12);
        assert!(["good", "also\ngood", "after"]
            .iter()
            .all(|id| seen.contains(id, 12)));
        assert_eq!(
            seen.len(),
            3,
            "the torn tail did not merge into the next line"
        );
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 128,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn arbitrary_file_bytes_never_panic(bytes in vec(any::<u8>(), 0..600)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("seen");
            fs::write(&path, &bytes).unwrap();
            let mut seen = Seen::open(&path, MIN, 8, 100).unwrap();
            prop_assert!(seen.len() <= 8);
            seen.insert("fresh", 100).unwrap();
            prop_assert!(open(&path, 100).contains("fresh", 100));
        }
    }
}
