//! The monitor's history: what jobs did, as JSON lines beside the journal, so that reports
//! (`fabric report`) can be made after the workers, the scheduler or the browser are gone,
//! and from a journal without a running scheduler.
//!
//! One line per [`Record`], appended by the monitor task (never the core), written out
//! once a second and when a job ends. Files `history-NNNNNN.jsonl` in `DIR/history/`, a new one past
//! [`SEGMENT_BYTES`], the oldest deleted beyond [`KEEP_SEGMENTS`]. A torn last line (a
//! crash mid-write) is skipped when read.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use fabric_auth::{Owner, Principal};
use serde::{Deserialize, Serialize};

/// A history file grows to about this many bytes before the next is started.
const SEGMENT_BYTES: u64 = 64 << 20;
/// History files kept (the oldest beyond are deleted).
const KEEP_SEGMENTS: usize = 8;

/// One thing that happened to a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A job was accepted.
    Job {
        job: u64,
        tenant: String,
        owner: String,
        /// Tasks after culling.
        tasks: u64,
        submitted_ms: u64,
    },
    /// A unit ran to an end on a worker (named by its last task).
    Unit {
        job: u64,
        task: String,
        /// `component/export` of its last task.
        call: String,
        /// Tasks it ran (fused steps).
        steps: u32,
        worker: String,
        start_ms: f64,
        end_ms: f64,
        /// How long it ran on the worker, not counting fetches.
        duration_ms: f64,
        nbytes: u64,
        /// `None`: it succeeded; else how it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A job ended.
    End {
        job: u64,
        /// succeeded, failed, cancelled.
        state: String,
        at_ms: f64,
        /// Bytes of inputs moved to the workers that ran its units.
        moved_bytes: u64,
    },
}

impl Record {
    /// The job it is about.
    pub fn job(&self) -> u64 {
        match self {
            Record::Job { job, .. } | Record::Unit { job, .. } | Record::End { job, .. } => *job,
        }
    }
}

/// Appends records to the history files of a directory.
pub(crate) struct HistoryWriter {
    dir: PathBuf,
    file: BufWriter<File>,
    written: u64,
    segment: u64,
}

impl HistoryWriter {
    /// Continues the history in `dir` (made if missing), in a new file.
    pub fn open(dir: &Path) -> io::Result<HistoryWriter> {
        fs::create_dir_all(dir)?;
        let last = segments(dir)?.last().map_or(0, |(n, _)| *n);
        let (segment, file) = create(dir, last + 1)?;
        Ok(HistoryWriter {
            dir: dir.to_path_buf(),
            file,
            written: 0,
            segment,
        })
    }

    /// Appends a record (written out by [`HistoryWriter::flush`] or when the buffer fills).
    pub fn append(&mut self, record: &Record) {
        let mut line = serde_json::to_vec(record).expect("records serialize");
        line.push(b'\n');
        self.written += line.len() as u64;
        if let Err(e) = self.file.write_all(&line) {
            tracing::warn!("cannot write the history in {}: {e}", self.dir.display());
        }
        if self.written >= SEGMENT_BYTES
            && let Err(e) = self.rotate()
        {
            tracing::warn!(
                "cannot start a new history file in {}: {e}",
                self.dir.display()
            );
        }
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) {
        if let Err(e) = self.file.flush() {
            tracing::warn!("cannot write the history in {}: {e}", self.dir.display());
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let (segment, file) = create(&self.dir, self.segment + 1)?;
        (self.segment, self.file, self.written) = (segment, file, 0);
        let all = segments(&self.dir)?;
        for (_, old) in all.iter().take(all.len().saturating_sub(KEEP_SEGMENTS)) {
            fs::remove_file(old)?;
        }
        Ok(())
    }
}

fn create(dir: &Path, segment: u64) -> io::Result<(u64, BufWriter<File>)> {
    let path = dir.join(format!("history-{segment:06}.jsonl"));
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    Ok((segment, BufWriter::with_capacity(1 << 20, file)))
}

/// The history files of `dir`, oldest first.
fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let number = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("history-")?.strip_suffix(".jsonl"))
            .and_then(|n| n.parse().ok());
        if let Some(n) = number {
            found.push((n, path));
        }
    }
    found.sort();
    Ok(found)
}

/// The directory a journal's history is kept in.
pub fn history_dir(journal: &Path) -> PathBuf {
    journal.join("history")
}

/// The records of job `job` in the history of the journal in `journal` (torn or foreign
/// lines skipped), if `who` may see it: `None` when there is no such job or it is
/// another's.
pub fn read_job(journal: &Path, job: u64, who: &Principal) -> io::Result<Option<Vec<Record>>> {
    let dir = history_dir(journal);
    if !dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} holds no history (is it a scheduler's --journal?)",
                journal.display()
            ),
        ));
    }
    let mut records = Vec::new();
    for (_, path) in segments(&dir)? {
        for line in io::BufReader::new(File::open(&path)?).lines() {
            let line = line?;
            if let Ok(record) = serde_json::from_str::<Record>(&line)
                && record.job() == job
            {
                records.push(record);
            }
        }
    }
    // Job ids start again at 0 in a journal made anew: the last run of `job` counts.
    if let Some(start) = records
        .iter()
        .rposition(|r| matches!(r, Record::Job { .. }))
    {
        records.drain(..start);
    }
    let visible = match records.first() {
        Some(Record::Job { tenant, owner, .. }) => who.may_see(&Owner {
            tenant: tenant.as_str().into(),
            name: owner.as_str().into(),
        }),
        _ => false,
    };
    Ok(visible.then_some(records))
}
