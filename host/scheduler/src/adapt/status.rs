//! What the batch systems' status commands (`squeue`, `qstat`, `bjobs`) say of the jobs the
//! batch providers submitted: the command for a set of job ids, and its answer read.

use std::collections::HashMap;
use std::process::Command;

use super::jobscript::System;

/// What the batch system says of one job (or Kubernetes of one pod,
/// [`super::kubernetes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Queued, held or running, in the batch system's words (`PD`, `R`, `Q`, `qw`,
    /// `PEND`...).
    Active(String),
    /// Over: completed, failed, cancelled, out of time, its node lost (`CD`, `F`, `TO`,
    /// `NF`, `F`, `EXIT`...).
    Over(String),
    /// Still listed, in a state it leaves only when someone steps in (Grid Engine's error
    /// states such as `Eqw`, Slurm's `SE`): as good as over, and better cancelled.
    Stuck(String),
}

/// The status command's name, for messages.
pub fn program(system: System) -> &'static str {
    match system {
        System::Slurm => "squeue",
        System::Pbs | System::Sge => "qstat",
        System::Lsf => "bjobs",
    }
}

/// The command that lists the states of jobs `ids`: `squeue --noheader --states=all
/// --jobs=IDS --format="%i %t"`,
/// `qstat IDS` (PBS), `qstat -u USER` (Grid Engine's lists only take users), `bjobs -a -w
/// IDS`.
pub fn command(system: System, ids: &[String]) -> Command {
    let mut cmd = Command::new(program(system));
    match system {
        System::Slurm => {
            // `--jobs=`: `-j` takes its list only when attached (`-j42`).
            cmd.args(["--noheader", "--states=all"])
                .arg(format!("--jobs={}", ids.join(",")))
                .arg("--format=%i %t");
        }
        System::Pbs => {
            cmd.args(ids);
        }
        System::Sge => {
            if let Ok(user) = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
                cmd.args(["-u", &user]);
            }
        }
        System::Lsf => {
            cmd.args(["-a", "-w"]).args(ids);
        }
    }
    cmd
}

/// The states of those of `ids` that the status command's answer lists; a job it does not
/// list is one the batch system no longer knows (over). An error (the command's) when it
/// failed for another reason than not knowing some of the jobs.
pub fn parse(
    system: System,
    ids: &[String],
    success: bool,
    stdout: &str,
    stderr: &str,
) -> Result<HashMap<String, JobState>, String> {
    // Its column of states: `%i %t`; PBS's `Job id, Name, User, Time Use, S, Queue`; Grid
    // Engine's `job-ID, prior, name, user, state, ...`; LSF's `JOBID, USER, STAT, ...`.
    let column = match system {
        System::Slurm => 1,
        System::Pbs | System::Sge => 4,
        System::Lsf => 2,
    };
    let mut states = HashMap::new();
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Headers and rules start otherwise than with a digit.
        let Some(&first) = fields
            .first()
            .filter(|f| f.starts_with(|c: char| c.is_ascii_digit()))
        else {
            continue;
        };
        let (Some(state), Some(id)) = (
            fields.get(column),
            ids.iter().find(|id| same_job(system, id, first)),
        ) else {
            continue;
        };
        states.insert(id.clone(), classify(system, state));
    }
    if success {
        return Ok(states);
    }
    // Failed: fine when all it says is that it does not know some of the jobs (Slurm, asked
    // of one job it forgot; PBS, of any such; LSF, likewise) or that they finished (PBS
    // Pro without -x).
    let mut complaints = stderr.lines().map(str::trim).filter(|l| !l.is_empty());
    let forgotten = |line: &str| {
        let l = line.to_ascii_lowercase();
        match system {
            System::Slurm => l.contains("invalid job id specified"),
            System::Pbs => l.contains("unknown job id") || l.contains("job has finished"),
            System::Sge => false,
            System::Lsf => l.contains("is not found"),
        }
    };
    if stderr.trim().is_empty() || !complaints.all(forgotten) {
        return Err(if stderr.trim().is_empty() {
            "(nothing on stderr)".to_string()
        } else {
            stderr.trim().to_string()
        });
    }
    if system == System::Pbs {
        for line in stderr.lines().filter(|l| l.contains("has finished")) {
            for word in line.split_whitespace() {
                if let Some(id) = ids.iter().find(|id| same_job(system, id, word)) {
                    states.insert(id.clone(), JobState::Over("F".into()));
                }
            }
        }
    }
    Ok(states)
}

/// Whether `listed` (as the status command prints it) is job `id`. PBS prints ids cut to
/// its column, ending in `*`, and a server name may differ in form: its number decides.
fn same_job(system: System, id: &str, listed: &str) -> bool {
    match system {
        System::Pbs => {
            let number = |s: &str| s.split(['.', '*']).next().unwrap_or_default().to_string();
            !listed.is_empty() && number(id) == number(listed.trim_end_matches(':'))
        }
        _ => id == listed,
    }
}

/// Active, over or stuck, by the batch system's state codes.
fn classify(system: System, state: &str) -> JobState {
    let s = state.to_string();
    match system {
        System::Slurm => match state {
            // Boot failure, cancelled, completed, completing, deadline, failed, node
            // failure, out of memory, preempted, revoked, timeout.
            "BF" | "CA" | "CD" | "CG" | "DL" | "F" | "NF" | "OOM" | "PR" | "RV" | "TO" => {
                JobState::Over(s)
            }
            // Requeued in a special exit state: held until someone releases it.
            "SE" => JobState::Stuck(s),
            _ => JobState::Active(s),
        },
        // Completed (Torque), exiting, finished (PBS Pro with history), subjob finished.
        System::Pbs => match state {
            "C" | "E" | "F" | "X" => JobState::Over(s),
            _ => JobState::Active(s),
        },
        // `E`: an error keeps the job from starting (`Eqw`); `d`: being deleted.
        System::Sge if state.contains('E') => JobState::Stuck(s),
        System::Sge if state.contains('d') => JobState::Over(s),
        System::Sge => JobState::Active(s),
        System::Lsf => match state {
            "DONE" | "EXIT" | "ZOMBI" => JobState::Over(s),
            _ => JobState::Active(s),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn active(s: &str) -> JobState {
        JobState::Active(s.into())
    }

    fn over(s: &str) -> JobState {
        JobState::Over(s.into())
    }

    #[test]
    fn slurm() {
        let asked = ids(&["101", "102", "103"]);
        let out = "101 PD\n102 F\n";
        let states = parse(System::Slurm, &asked, true, out, "").unwrap();
        assert_eq!(states["101"], active("PD"));
        assert_eq!(states["102"], over("F"));
        assert!(!states.contains_key("103"), "not listed: forgotten");
        // Asked of one job it forgot, squeue fails.
        let states = parse(
            System::Slurm,
            &ids(&["103"]),
            false,
            "",
            "slurm_load_jobs error: Invalid job id specified\n",
        )
        .unwrap();
        assert!(states.is_empty());
        let err = parse(
            System::Slurm,
            &asked,
            false,
            "",
            "squeue: error: Unable to contact slurm controller (connect failure)\n",
        )
        .unwrap_err();
        assert!(err.contains("Unable to contact"), "{err}");
        assert!(parse(System::Slurm, &asked, false, "", "").is_err());
        let command = command(System::Slurm, &asked);
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(
            args,
            [
                "--noheader",
                "--states=all",
                "--jobs=101,102,103",
                "--format=%i %t"
            ]
        );
    }

    #[test]
    fn pbs() {
        let asked = ids(&[
            "7.pbs-server",
            "1234567.pbs-server-long-name",
            "9.pbs-server",
        ]);
        let out = "\
Job id            Name             User              Time Use S Queue
----------------  ---------------- ----------------  -------- - -----
7.pbs-server      fabric-worker    me                00:00:00 R workq
1234567.pbs-serv* fabric-worker    me                       0 Q workq
";
        let stderr = "qstat: 9.pbs-server Job has finished, use -x or -H to obtain historical \
                      job information\n";
        let states = parse(System::Pbs, &asked, false, out, stderr).unwrap();
        assert_eq!(states["7.pbs-server"], active("R"));
        assert_eq!(states["1234567.pbs-server-long-name"], active("Q"));
        assert_eq!(states["9.pbs-server"], over("F"));
        let states = parse(
            System::Pbs,
            &asked,
            false,
            "",
            "qstat: Unknown Job Id 7.pbs-server\n",
        )
        .unwrap();
        assert!(states.is_empty());
        assert!(
            parse(
                System::Pbs,
                &asked,
                false,
                "",
                "Connection refused\nqstat: cannot connect to server pbs-server (errno=15010)\n"
            )
            .is_err()
        );
    }

    #[test]
    fn sge_and_lsf() {
        let out = "\
job-ID  prior   name       user         state submit/start at     queue                          slots ja-task-ID
-----------------------------------------------------------------------------------------------------------------
     42 0.55500 fabric-wor me           r     01/01/2024 10:00:00 all.q@node1                        1
     43 0.00000 fabric-wor me           qw    01/01/2024 10:00:01                                    1
     44 0.00000 fabric-wor me           Eqw   01/01/2024 10:00:02                                    1
";
        let states = parse(System::Sge, &ids(&["42", "43", "44", "45"]), true, out, "").unwrap();
        assert_eq!(states["42"], active("r"));
        assert_eq!(states["43"], active("qw"));
        assert_eq!(states["44"], JobState::Stuck("Eqw".into()));
        assert!(!states.contains_key("45"));

        let out = "\
JOBID   USER    STAT  QUEUE      FROM_HOST   EXEC_HOST   JOB_NAME   SUBMIT_TIME
5       me      RUN   normal     login1      node7       fabric-worker Jan  1 10:00
6       me      EXIT  normal     login1      node8       fabric-worker Jan  1 10:00
";
        let asked = ids(&["5", "6", "7"]);
        let states = parse(System::Lsf, &asked, false, out, "Job <7> is not found\n").unwrap();
        assert_eq!(states["5"], active("RUN"));
        assert_eq!(states["6"], over("EXIT"));
        assert!(!states.contains_key("7"));
        assert!(parse(System::Lsf, &asked, false, "", "LSF is down\n").is_err());
    }
}
