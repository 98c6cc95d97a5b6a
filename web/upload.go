package web

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"baton/bundle"
)

// isMultipart reports whether r's body is a multipart form.
func isMultipart(r *http.Request) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt == "multipart/form-data"
}

// uploadTimeout bounds the reading of a form with files: a slow link
// sends 64 MiB in minutes, a stalled one is cut.
const uploadTimeout = 10 * time.Minute

// readExecForm reads a multipart exec request, its files into a fresh
// directory under tmp (the caller removes it); the error is a one-line
// answer, 413 for a body too large and 400 for the rest. Files go as
// they come, never held in memory; their total is bounded by
// cfg.MaxUpload before anything is stored.
func (s *Server) readExecForm(w http.ResponseWriter, r *http.Request, dir string) (ExecRequest, int, error) {
	var req ExecRequest
	if s.cfg.MaxUpload == 0 || s.files == nil {
		return req, http.StatusBadRequest, errors.New("this broker keeps no files (it runs with --no-history): send the command as JSON, without files")
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(uploadTimeout))
	// The files, and room for the fields and the parts' headers.
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxUpload+maxExecBody+64<<10)
	r.Body = body
	mr, err := r.MultipartReader()
	if err != nil {
		return req, http.StatusBadRequest, fmt.Errorf("body is not a multipart form: %v", err)
	}
	seen := make(map[string]bool)
	var total int64
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return req, formStatus(err), fmt.Errorf("read the form: %v", err)
		}
		field := part.FormName()
		switch field {
		case "cmd", "timeout_ms", "collect":
			b, err := io.ReadAll(io.LimitReader(part, maxField+1))
			switch {
			case err != nil:
				return req, formStatus(err), fmt.Errorf("read %s: %v", field, err)
			case len(b) > maxField:
				return req, http.StatusBadRequest, fmt.Errorf("%s is longer than the %d bytes allowed", field, maxField)
			case !utf8.Valid(b):
				return req, http.StatusBadRequest, fmt.Errorf("%s is not UTF-8 text", field)
			}
			v := string(b)
			switch field {
			case "cmd":
				req.Cmd = v
			case "timeout_ms":
				if strings.TrimSpace(v) == "" {
					break
				}
				if req.TimeoutMs, err = strconv.ParseInt(strings.TrimSpace(v), 10, 64); err != nil {
					return req, http.StatusBadRequest, fmt.Errorf("timeout_ms %q: want a whole number of milliseconds", v)
				}
			case "collect":
				// One pattern per field, or one per line.
				for _, g := range strings.Split(v, "\n") {
					if g = strings.TrimSpace(g); g != "" {
						req.Collect = append(req.Collect, g)
					}
				}
			}
		case "file":
			name := part.FileName()
			if name == "" {
				// An empty file input sends a part with no file.
				continue
			}
			name = filepath.Base(strings.ReplaceAll(name, "\\", "/"))
			switch {
			case name == "." || name == ".." || name == "/" || strings.ContainsRune(name, 0):
				return req, http.StatusBadRequest, fmt.Errorf("a file named %q cannot be placed", part.FileName())
			case seen[name]:
				return req, http.StatusBadRequest, fmt.Errorf("two files are named %s: each is placed under its name", name)
			}
			seen[name] = true
			if len(seen) > s.cfg.MaxUploadFiles {
				// Counted before each is stored: tiny parts must not make
				// a temporary directory of a million files.
				return req, http.StatusRequestEntityTooLarge, fmt.Errorf("more than %d files, over the broker's --max-bundle-files of %d; nothing was stored",
					s.cfg.MaxUploadFiles, s.cfg.MaxUploadFiles)
			}
			path := filepath.Join(dir, name)
			// A browser sends no mode: a plain file's, readable (the
			// directory is the broker's alone).
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
			if err != nil {
				return req, http.StatusInternalServerError, fmt.Errorf("store %s: %v", name, err)
			}
			n, err := io.Copy(f, part)
			total += n
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if code := formStatus(err); code == http.StatusRequestEntityTooLarge {
				return req, code, fmt.Errorf("the files are larger than the broker's --max-bundle-bytes of %s; nothing was stored", bundle.Size(s.cfg.MaxUpload))
			}
			if err != nil {
				return req, http.StatusBadRequest, fmt.Errorf("receive %s: %v", name, err)
			}
			req.files = append(req.files, path)
		default:
			return req, http.StatusBadRequest, fmt.Errorf("unknown field %q (want cmd, timeout_ms, collect and file)", field)
		}
	}
	if total > s.cfg.MaxUpload {
		return req, http.StatusRequestEntityTooLarge, fmt.Errorf("the files come to %s, over the broker's --max-bundle-bytes of %s; nothing was stored", bundle.Size(total), bundle.Size(s.cfg.MaxUpload))
	}
	return checkExec(req)
}

// maxField bounds a form field: the longest command, whatever its
// characters.
const maxField = maxExecBody

// formStatus is the answer to a form that could not be read: 413 when it
// was over its bound.
func formStatus(err error) int {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadRequest
}
