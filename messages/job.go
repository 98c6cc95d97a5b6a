package messages

import (
	"crypto/rand"
	"encoding/binary"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// The history's subjects (the broker answers them) and its stream.
const (
	// SubjectJobRecord carries JobRecords from masters to the broker
	// (request-reply; the reply is a JobRecordsAck).
	SubjectJobRecord = "jobs.record"
	// SubjectJobList answers a JobQuery (JSON) with a JobList (JSON).
	SubjectJobList = "jobs.list"
	// SubjectJobGet answers {"id": ID} (JSON) with a Job (JSON), or with
	// {"error": …}.
	SubjectJobGet = "jobs.get"
	// JobStream is the JetStream stream that holds the history, in the
	// broker's own account: one subject per job, JobSubject(id), holding
	// the job's latest Job as JSON.
	JobStream = "BATON_JOBS"
	// JobSubjectPrefix prefixes the subject of each job in JobStream.
	JobSubjectPrefix = "baton.jobs."
)

// JobReadSubjects are the JetStream API subjects through which the history
// readers read JobStream with the stock nats CLI (`nats stream ls`, `nats
// stream get`): listing and reading, never writing, deleting or consuming.
func JobReadSubjects() []string {
	s := JobStream
	return []string{
		"$JS.API.INFO",
		"$JS.API.STREAM.NAMES",
		"$JS.API.STREAM.LIST",
		"$JS.API.STREAM.INFO." + s,
		"$JS.API.STREAM.MSG.GET." + s,
		"$JS.API.DIRECT.GET." + s,
		"$JS.API.DIRECT.GET." + s + ".>",
	}
}

// JobSubject is the subject of job id in JobStream.
func JobSubject(id string) string { return JobSubjectPrefix + id }

// The job states, as the history shows them (see JobState).
const (
	StateRunning   = "running"
	StateSucceeded = "succeeded"
	StateFailed    = "failed"
	StateTimedOut  = "timed_out"
	StateCancelled = "cancelled"
	StateRejected  = "rejected"
	StateLost      = "lost"
)

// JobStates lists the states in the order of a job's life.
func JobStates() []string {
	return []string{StateRunning, StateSucceeded, StateFailed, StateTimedOut, StateCancelled, StateRejected, StateLost}
}

var stateNames = map[JobState]string{
	JobState_JOB_STATE_RUNNING:   StateRunning,
	JobState_JOB_STATE_SUCCEEDED: StateSucceeded,
	JobState_JOB_STATE_FAILED:    StateFailed,
	JobState_JOB_STATE_TIMED_OUT: StateTimedOut,
	JobState_JOB_STATE_CANCELLED: StateCancelled,
	JobState_JOB_STATE_REJECTED:  StateRejected,
	JobState_JOB_STATE_LOST:      StateLost,
}

// Name is the state as the history shows it, empty for an unspecified one.
func (s JobState) Name() string { return stateNames[s] }

// StateOf is the state a job with result r ends in; false for a result
// that ends no job (a stale master's refusal: the request goes elsewhere).
func StateOf(r *ExecResult) (JobState, bool) {
	switch r.ErrorKind {
	case ErrorKind_ERROR_KIND_NONE:
		if r.ExitCode == 0 {
			return JobState_JOB_STATE_SUCCEEDED, true
		}
		return JobState_JOB_STATE_FAILED, true
	case ErrorKind_ERROR_KIND_TIMEOUT:
		return JobState_JOB_STATE_TIMED_OUT, true
	case ErrorKind_ERROR_KIND_START_FAILED, ErrorKind_ERROR_KIND_COLLECT_FAILED, ErrorKind_ERROR_KIND_MEMORY_LIMIT:
		// A command whose files could not come back failed, whatever
		// its exit code (which the record keeps).
		return JobState_JOB_STATE_FAILED, true
	case ErrorKind_ERROR_KIND_REJECTED, ErrorKind_ERROR_KIND_BUSY:
		return JobState_JOB_STATE_REJECTED, true
	case ErrorKind_ERROR_KIND_CANCELED:
		return JobState_JOB_STATE_CANCELLED, true
	}
	return JobState_JOB_STATE_UNSPECIFIED, false
}

// The ways a command is submitted (JobRecord.via).
const (
	ViaPrompt = "prompt"
	ViaExec   = "exec"
	ViaNATS   = "nats"
	ViaWeb    = "web"
)

// JobSummary is a job's record without its output: one line of `node jobs
// --json`. Times are RFC 3339 in UTC, null when the job never got there.
type JobSummary struct {
	ID       string `json:"id"`
	Cmd      string `json:"cmd"`
	State    string `json:"state"`
	ExitCode int32  `json:"exit_code"`
	Error    string `json:"error"`
	TimedOut bool   `json:"timed_out"`
	// TimeoutMs is the run time the requester asked for, 0 for the
	// master's default.
	TimeoutMs     uint32     `json:"timeout_ms"`
	SubmittedAt   *time.Time `json:"submitted_at"`
	StartedAt     *time.Time `json:"started_at"`
	FinishedAt    *time.Time `json:"finished_at"`
	DurationMs    int64      `json:"duration_ms"`
	Master        string     `json:"master"`
	Epoch         uint64     `json:"epoch"`
	Submitter     string     `json:"submitter"`
	Role          string     `json:"role"`
	Via           string     `json:"via"`
	StdoutDropped uint64     `json:"stdout_dropped"`
	StderrDropped uint64     `json:"stderr_dropped"`
	// Note says what else the history knows, such as that the job's
	// master was lost before it reported this outcome.
	Note string `json:"note"`
	// InputBundles and OutputBundle are the SHA-256s of the archives in
	// the broker's file store that hold the files the job was given and
	// brought back; Collect is what it asked to bring back.
	InputBundles []string `json:"input_bundles,omitempty"`
	OutputBundle string   `json:"output_bundle,omitempty"`
	Collect      []string `json:"collect,omitempty"`
}

// Bundles are the archives j's files are in.
func (j *JobSummary) Bundles() []string {
	if j.OutputBundle == "" {
		return j.InputBundles
	}
	return append(slices.Clip(j.InputBundles), j.OutputBundle)
}

// Job is a job's whole record: what the history stores (as JSON, on
// JobSubject(id)) and `node job ID --json` prints.
type Job struct {
	JobSummary
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
	// Inputs and Outputs list the files the job was given and brought
	// back.
	Inputs  []FileJSON `json:"inputs,omitempty"`
	Outputs []FileJSON `json:"outputs,omitempty"`
	// OutputTicket, in an answer to jobs.get, grants reading the archive
	// of the outputs (files.get) for a while; it is never stored.
	OutputTicket string `json:"output_ticket,omitempty"`
}

// Finished reports whether the job has reached a state that ends it.
func (j *JobSummary) Finished() bool { return j.State != StateRunning }

// JobOf is the record r says.
func JobOf(r *JobRecord) *Job {
	via := r.Via
	if via == "" {
		via = ViaNATS
	}
	return &Job{
		JobSummary: JobSummary{
			ID: r.Id, Cmd: r.Cmd, State: r.State.Name(), ExitCode: r.ExitCode, Error: r.Error, TimedOut: r.TimedOut, TimeoutMs: r.TimeoutMs,
			SubmittedAt: timeOf(r.SubmittedAt), StartedAt: timeOf(r.StartedAt), FinishedAt: timeOf(r.FinishedAt),
			DurationMs: r.DurationMs, Master: r.Master, Epoch: r.Epoch,
			Submitter: r.Submitter, Role: r.Role, Via: via,
			StdoutDropped: r.StdoutDropped, StderrDropped: r.StderrDropped,
			InputBundles: r.InputBundles, OutputBundle: r.OutputBundle, Collect: r.Collect,
		},
		Stdout: r.Stdout, Stderr: r.Stderr,
		Inputs: FilesJSON(r.Inputs), Outputs: FilesJSON(r.Outputs),
	}
}

// timeOf is ts in UTC, nil when ts is unset.
func timeOf(ts *timestamppb.Timestamp) *time.Time {
	if ts == nil {
		return nil
	}
	t := ts.AsTime().UTC()
	return &t
}

// JobQuery asks the history for jobs (jobs.list), newest first. Every set
// field must match.
type JobQuery struct {
	// State is one of JobStates.
	State string `json:"state,omitempty"`
	// Node matches the master that ran the job or the submitter.
	Node string `json:"node,omitempty"`
	// Since keeps jobs submitted at or after it.
	Since *time.Time `json:"since,omitempty"`
	// Grep is text that the command, stdout or stderr contains.
	Grep string `json:"grep,omitempty"`
	// Before keeps jobs whose ID sorts before it: the next page after a
	// page whose last job it is.
	Before string `json:"before,omitempty"`
	// Limit is how many jobs to return at most; 0 means DefaultJobLimit.
	Limit int `json:"limit,omitempty"`
}

// DefaultJobLimit and MaxJobLimit bound a JobQuery's answer.
const (
	DefaultJobLimit = 20
	MaxJobLimit     = 1000
)

// JobList answers a JobQuery. More is set when the answer stopped short of
// Limit to fit one message: ask again with Before set to the last ID.
type JobList struct {
	Jobs  []JobSummary `json:"jobs"`
	More  bool         `json:"more,omitempty"`
	Error string       `json:"error,omitempty"`
}

// JobGet asks the history for one job (jobs.get); the answer is a
// JobAnswer.
type JobGet struct {
	ID string `json:"id"`
}

// JobAnswer answers a JobGet: the job, or why there is none.
type JobAnswer struct {
	Job   *Job   `json:"job,omitempty"`
	Error string `json:"error,omitempty"`
}

// jobIDAlphabet is Crockford's base32 in lower case, whose order is its
// characters' ASCII order: IDs sort as their times do.
const jobIDAlphabet = "0123456789abcdefghjkmnpqrstvwxyz"

// JobIDLen is the length of a job ID: nine characters of milliseconds since
// 1970 (enough for 1,100 years), six of randomness (30 bits: two jobs in
// one millisecond collide once in a billion).
const JobIDLen = 15

// NewJobID returns a new job ID for a job submitted at t: short, unique and
// sorting as the times do.
func NewJobID(t time.Time) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	r := binary.BigEndian.Uint64(b[:])
	ms := uint64(t.UnixMilli())
	var id [JobIDLen]byte
	for i := 8; i >= 0; i-- {
		id[i] = jobIDAlphabet[ms&31]
		ms >>= 5
	}
	for i := JobIDLen - 1; i >= 9; i-- {
		id[i] = jobIDAlphabet[r&31]
		r >>= 5
	}
	return string(id[:])
}

// FirstJobID is the smallest ID of a job submitted at t (to the
// millisecond): the jobs submitted before t are those whose IDs sort
// before it.
func FirstJobID(t time.Time) string {
	ms := uint64(max(t.UnixMilli(), 0))
	id := []byte(strings.Repeat("0", JobIDLen))
	for i := 8; i >= 0; i-- {
		id[i] = jobIDAlphabet[ms&31]
		ms >>= 5
	}
	return string(id)
}

// ValidJobID reports whether id could be a job ID, so that nothing else
// ever becomes part of a subject.
func ValidJobID(id string) bool {
	if len(id) != JobIDLen {
		return false
	}
	for _, c := range id {
		if !strings.ContainsRune(jobIDAlphabet, c) {
			return false
		}
	}
	return true
}
