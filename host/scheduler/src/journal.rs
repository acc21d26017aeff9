//! The scheduler's journal: an append-only file of the jobs it accepted and let go, from
//! which a restarted scheduler continues them (`fabric scheduler --journal DIR`).
//!
//! A record is `[length: u32 LE][checksum: 4 bytes of blake3][JournalRecord (protobuf)]`.
//! Records are written as they happen (a scheduler that dies loses none: they are in the
//! operating system's cache) and made durable by a background thread that syncs the file
//! every [`SYNC_EVERY`] when something was written (a machine that dies loses at most
//! that). A torn or corrupt tail, from a crash in the middle of a write, ends the replay
//! there and is cut off. On open, the journal is compacted to the records of jobs still
//! alive.
//!
//! What each job used is recorded when it is let go, and kept by compaction, for
//! `fabric usage` across restarts.
//!
//! Finished values are not journaled: after a restart, workers report what they hold,
//! and that is the truth (see `Scheduler::on_job_restored`).

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use fabric_proto::v1;
use fabric_proto::v1::journal_record::Record;
use prost::Message;

/// How often written records are synced to disk.
const SYNC_EVERY: Duration = Duration::from_millis(50);
/// The largest record a journal may hold (a graph document and its code).
const MAX_RECORD: u32 = 1 << 30;
const FILE: &str = "journal";

/// What a journal held when it was opened.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    /// The cluster it belongs to.
    pub cluster_id: String,
    /// Jobs accepted and not gone, by id, with their dataset name.
    pub jobs: Vec<(v1::JobCode, String)>,
    /// The tenants each persisted job's dataset is shared with (jobs not gone only).
    pub shares: std::collections::BTreeMap<u64, Vec<String>>,
    /// What jobs let go used, in the order they went.
    pub usage: Vec<v1::JobUsage>,
    /// A torn or corrupt tail was cut off at this offset.
    pub truncated_at: Option<u64>,
}

/// An open journal, appending.
pub(crate) struct Journal {
    file: Arc<File>,
    dirty: Arc<AtomicBool>,
    stop: Option<mpsc::Sender<()>>,
    syncer: Option<JoinHandle<()>>,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`: replays it, compacts it to the live jobs,
    /// and starts appending. A new journal gets a new cluster id.
    pub(crate) fn open(dir: &Path) -> io::Result<(Journal, Replayed)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE);
        let mut replayed = match File::open(&path) {
            Ok(file) => replay(file)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Replayed::default(),
            Err(e) => return Err(e),
        };
        if replayed.cluster_id.is_empty() {
            replayed.cluster_id = new_cluster_id();
        }
        compact(dir, &path, &replayed)?;
        let file = Arc::new(OpenOptions::new().append(true).open(&path)?);
        let dirty = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel::<()>();
        let syncer = {
            let (file, dirty) = (file.clone(), dirty.clone());
            std::thread::Builder::new()
                .name("fabric-journal-sync".into())
                .spawn(move || {
                    while let Err(mpsc::RecvTimeoutError::Timeout) =
                        stopped.recv_timeout(SYNC_EVERY)
                    {
                        if dirty.swap(false, Ordering::AcqRel)
                            && let Err(e) = file.sync_data()
                        {
                            tracing::error!("cannot sync the journal: {e}");
                        }
                    }
                })?
        };
        let journal = Journal {
            file,
            dirty,
            stop: Some(stop),
            syncer: Some(syncer),
        };
        Ok((journal, replayed))
    }

    /// Records an accepted job.
    pub(crate) fn job(&self, code: &v1::JobCode, persist: &str) {
        self.append(Record::Job(v1::JournalJob {
            code: Some(code.clone()),
            persist: persist.to_string(),
        }));
    }

    /// Records the tenants a persisted job's dataset is shared with now.
    pub(crate) fn shares(&self, job_id: u64, tenants: Vec<String>) {
        self.append(Record::Shares(v1::JournalShares { job_id, tenants }));
    }

    /// Records what a job let go used.
    pub(crate) fn usage(&self, usage: &v1::JobUsage) {
        self.append(Record::Usage(usage.clone()));
    }

    /// Records that a job is gone (released, cancelled, forgotten).
    pub(crate) fn gone(&self, job_id: u64) {
        self.append(Record::Gone(v1::JournalJobGone { job_id }));
    }

    fn append(&self, record: Record) {
        let bytes = frame(&record);
        // A journal that cannot be written loses restarts, not work: say so and go on.
        if let Err(e) = (&*self.file).write_all(&bytes) {
            tracing::error!("cannot write the journal: {e}");
        }
        self.dirty.store(true, Ordering::Release);
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.syncer.take() {
            let _ = t.join();
        }
        let _ = self.file.sync_data();
    }
}

/// A record as written: length, checksum, protobuf.
fn frame(record: &Record) -> Vec<u8> {
    let body = v1::JournalRecord {
        record: Some(record.clone()),
    }
    .encode_to_vec();
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(&body));
    out.extend_from_slice(&body);
    out
}

fn checksum(body: &[u8]) -> [u8; 4] {
    let hash = blake3::hash(body);
    hash.as_bytes()[..4].try_into().expect("4 bytes")
}

/// Reads records until the end or the first torn or corrupt one.
fn replay(file: File) -> io::Result<Replayed> {
    let len = file.metadata()?.len();
    let mut reader = BufReader::new(file);
    let mut out = Replayed::default();
    let mut jobs: std::collections::BTreeMap<u64, (v1::JobCode, String)> = Default::default();
    let mut offset = 0u64;
    while offset < len {
        let mut head = [0u8; 8];
        let good = read_exact_or_eof(&mut reader, &mut head)?
            && u32::from_le_bytes(head[..4].try_into().expect("4")) <= MAX_RECORD;
        let body = if good {
            let n = u32::from_le_bytes(head[..4].try_into().expect("4")) as usize;
            let mut body = vec![0u8; n];
            (read_exact_or_eof(&mut reader, &mut body)? && checksum(&body) == head[4..])
                .then_some(body)
        } else {
            None
        };
        let record = body.and_then(|b| v1::JournalRecord::decode(b.as_slice()).ok());
        let Some(record) = record else {
            out.truncated_at = Some(offset);
            break;
        };
        offset += 8 + u64::from(u32::from_le_bytes(head[..4].try_into().expect("4")));
        match record.record {
            Some(Record::Start(s)) => out.cluster_id = s.cluster_id,
            Some(Record::Job(j)) => {
                if let Some(code) = j.code {
                    jobs.insert(code.job_id, (code, j.persist));
                }
            }
            Some(Record::Gone(g)) => {
                jobs.remove(&g.job_id);
                out.shares.remove(&g.job_id);
            }
            Some(Record::Shares(s)) if jobs.contains_key(&s.job_id) => {
                if s.tenants.is_empty() {
                    out.shares.remove(&s.job_id);
                } else {
                    out.shares.insert(s.job_id, s.tenants);
                }
            }
            Some(Record::Shares(_)) => {}
            Some(Record::Usage(u)) => out.usage.push(u),
            None => {}
        }
    }
    out.jobs = jobs.into_values().collect();
    Ok(out)
}

/// Fills `buf`; false at a clean or torn end of file.
fn read_exact_or_eof(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Rewrites the journal with only what `replayed` holds, atomically (a new file renamed
/// over the old one).
fn compact(dir: &Path, path: &Path, replayed: &Replayed) -> io::Result<()> {
    let tmp: PathBuf = dir.join(format!("{FILE}.new"));
    {
        let mut f = File::create(&tmp)?;
        let mut bytes = frame(&Record::Start(v1::JournalStart {
            cluster_id: replayed.cluster_id.clone(),
        }));
        for (code, persist) in &replayed.jobs {
            bytes.extend(frame(&Record::Job(v1::JournalJob {
                code: Some(code.clone()),
                persist: persist.clone(),
            })));
        }
        for (&job_id, tenants) in &replayed.shares {
            bytes.extend(frame(&Record::Shares(v1::JournalShares {
                job_id,
                tenants: tenants.clone(),
            })));
        }
        for usage in &replayed.usage {
            bytes.extend(frame(&Record::Usage(usage.clone())));
        }
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename itself is durable once the directory is synced.
    File::open(dir)?.sync_all()
}

/// A cluster id: random enough never to repeat.
pub(crate) fn new_cluster_id() -> String {
    let seed = format!(
        "{:?} {} {:?}",
        std::time::SystemTime::now(),
        std::process::id(),
        std::thread::current().id()
    );
    blake3::hash(seed.as_bytes()).to_hex()[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(job_id: u64) -> v1::JobCode {
        v1::JobCode {
            job_id,
            graph_json: format!("{{\"job\": {job_id}}}"),
            tenant: "t".into(),
            ..v1::JobCode::default()
        }
    }

    #[test]
    fn replays_live_jobs_and_keeps_the_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, first) = Journal::open(dir.path()).unwrap();
        assert!(first.jobs.is_empty());
        assert_eq!(first.cluster_id.len(), 16);
        journal.job(&code(0), "");
        journal.job(&code(1), "prep");
        journal.job(&code(2), "");
        journal.gone(0);
        drop(journal);

        let (journal, again) = Journal::open(dir.path()).unwrap();
        assert_eq!(again.cluster_id, first.cluster_id);
        let ids: Vec<(u64, &str)> = again
            .jobs
            .iter()
            .map(|(c, p)| (c.job_id, p.as_str()))
            .collect();
        assert_eq!(ids, [(1, "prep"), (2, "")]);
        assert_eq!(again.jobs[0].0, code(1));
        assert_eq!(again.truncated_at, None);
        drop(journal);
        // Compacted: a start and two jobs.
        let (_, third) = Journal::open(dir.path()).unwrap();
        assert_eq!(third.jobs.len(), 2);
    }

    #[test]
    fn a_datasets_last_shares_are_kept_while_its_job_lives() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        journal.job(&code(1), "prep");
        journal.job(&code(2), "raw");
        journal.shares(1, vec!["b".into()]);
        journal.shares(1, vec!["b".into(), "c".into()]);
        journal.shares(2, vec!["b".into()]);
        journal.shares(2, vec![]);
        journal.shares(9, vec!["b".into()]); // not a job of this journal
        drop(journal);
        for _ in 0..2 {
            // Replayed, then compacted and replayed again: the same.
            let (journal, replayed) = Journal::open(dir.path()).unwrap();
            let shares: Vec<_> = replayed.shares.into_iter().collect();
            assert_eq!(shares, [(1, vec!["b".to_string(), "c".to_string()])]);
            drop(journal);
        }
        let (journal, _) = Journal::open(dir.path()).unwrap();
        journal.gone(1);
        drop(journal);
        let (_, replayed) = Journal::open(dir.path()).unwrap();
        assert!(replayed.shares.is_empty());
    }

    #[test]
    fn what_jobs_used_outlives_them_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        journal.job(&code(1), "");
        let used = |job_id, cpu_seconds| v1::JobUsage {
            job_id,
            tenant: "a".into(),
            owner: "alice".into(),
            submitted_ms: 1,
            ended_ms: 2,
            usage: Some(v1::Usage {
                cpu_seconds,
                ..v1::Usage::default()
            }),
        };
        journal.usage(&used(1, 2.5));
        journal.gone(1);
        journal.usage(&used(7, 1.0));
        drop(journal);
        for _ in 0..2 {
            let (journal, replayed) = Journal::open(dir.path()).unwrap();
            assert!(replayed.jobs.is_empty());
            assert_eq!(replayed.usage, [used(1, 2.5), used(7, 1.0)]);
            drop(journal);
        }
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, first) = Journal::open(dir.path()).unwrap();
        journal.job(&code(5), "");
        drop(journal);
        let path = dir.path().join(FILE);
        let good = std::fs::metadata(&path).unwrap().len();
        // Half a record, as a crash in the middle of a write leaves it.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        let torn = frame(&Record::Job(v1::JournalJob {
            code: Some(code(6)),
            persist: String::new(),
        }));
        f.write_all(&torn[..torn.len() / 2]).unwrap();
        drop(f);
        let (journal, replayed) = Journal::open(dir.path()).unwrap();
        assert_eq!(replayed.truncated_at, Some(good));
        assert_eq!(replayed.cluster_id, first.cluster_id);
        assert_eq!(replayed.jobs.len(), 1);
        journal.job(&code(7), "");
        drop(journal);

        // A flipped byte in the middle: that record and everything after it go.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (_, replayed) = Journal::open(dir.path()).unwrap();
        let ids: Vec<u64> = replayed.jobs.iter().map(|(c, _)| c.job_id).collect();
        assert_eq!(ids, [5]);
        // Garbage instead of a journal: nothing replays, nothing panics.
        std::fs::write(&path, b"\xff\xff\xff\xffgarbage").unwrap();
        let (_, replayed) = Journal::open(dir.path()).unwrap();
        assert!(replayed.jobs.is_empty());
        assert_eq!(replayed.truncated_at, Some(0));
    }
}
