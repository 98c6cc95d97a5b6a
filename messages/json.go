package messages

// ResultJSON is a result as JSON: one line of `node --json` and `node exec
// --json`, and a master's answer to a JSON request (such as `nats req
// exec.request '{"cmd":"uname -a"}'`). Dropped counts are in bytes, 0 when
// nothing was dropped.
type ResultJSON struct {
	ID            string `json:"id"`
	Cmd           string `json:"cmd"`
	ExitCode      int32  `json:"exit_code"`
	Stdout        string `json:"stdout"`
	Stderr        string `json:"stderr"`
	StdoutDropped uint64 `json:"stdout_dropped"`
	StderrDropped uint64 `json:"stderr_dropped"`
	Error         string `json:"error"`
	TimedOut      bool   `json:"timed_out"`
	Master        string `json:"master"`
	Epoch         uint64 `json:"epoch"`
	DurationMs    int64  `json:"duration_ms"`
	// Job is the ID of the command's job in the history, empty when the
	// command ran nowhere.
	Job string `json:"job"`
	// ResultBundle, for a request that named files to collect, is a zip
	// of them with stdout.txt and stderr.txt (base64), and Outputs lists
	// them.
	ResultBundle []byte     `json:"result_bundle,omitempty"`
	Outputs      []FileJSON `json:"outputs,omitempty"`
}

// NewResultJSON is the JSON of r, the result of request id running cmd.
func NewResultJSON(id, cmd string, r *ExecResult) ResultJSON {
	return ResultJSON{
		ID: id, Cmd: cmd, ExitCode: r.ExitCode, Stdout: r.Stdout, Stderr: r.Stderr,
		StdoutDropped: r.StdoutDropped, StderrDropped: r.StderrDropped,
		Error: r.Error, TimedOut: r.TimedOut, Master: r.Master, Epoch: r.Epoch, DurationMs: r.DurationMs, Job: r.Job,
		ResultBundle: r.ResultZip, Outputs: FilesJSON(r.Outputs),
	}
}
