package messages

import (
	"encoding/hex"
	"io/fs"
)

// The broker's file store: the archives sent with commands and brought
// back (see Bundle, FilePut, FileGet).
const (
	// SubjectFilePut carries FilePuts (request-reply; the reply is a
	// FilePutReply).
	SubjectFilePut = "files.put"
	// SubjectFileGet carries FileGets (request-reply; the reply is a
	// FileChunk).
	SubjectFileGet = "files.get"
	// FileBucket is the JetStream object store that holds the archives,
	// in the broker's own account, each named by its SHA-256.
	FileBucket = "BATON_FILES"
	// FileChunkBytes is how much of an archive one FilePut or FileChunk
	// carries at most.
	FileChunkBytes = 1 << 20
)

// ValidSHA256 reports whether s is a hex SHA-256 as the file store names
// archives: 64 lower-case hex digits.
func ValidSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && s == lowerHex(s)
}

func lowerHex(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'F' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// FileJSON is a FileEntry in a job's record (`node job ID --json`) and in
// a JSON result.
type FileJSON struct {
	Name   string `json:"name"`
	Size   uint64 `json:"size"`
	Mode   string `json:"mode"`
	SHA256 string `json:"sha256,omitempty"`
}

// FilesJSON is entries as JSON, nil for none.
func FilesJSON(entries []*FileEntry) []FileJSON {
	if len(entries) == 0 {
		return nil
	}
	out := make([]FileJSON, len(entries))
	for i, e := range entries {
		out[i] = FileJSON{Name: e.Name, Size: e.Size, Mode: fs.FileMode(e.Mode).String(), SHA256: e.Sha256}
	}
	return out
}
