package history

import (
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"baton/messages"
)

// maxIndexedCmd is how much of a command the index keeps: enough for a row
// of `node jobs` and most --grep matches, little enough that a hundred
// thousand jobs take tens of megabytes. A longer command is read from the
// store when it is needed.
const maxIndexedCmd = 256

// entry is what the index knows of one job: its record without output,
// the command cut to maxIndexedCmd, and where the record is stored.
type entry struct {
	sum    messages.JobSummary
	cmdCut bool
	seq    uint64    // the record's stream sequence
	size   int64     // what the record takes in the stream, about
	stored time.Time // when the record was last written
}

// recordOverhead is what a stored record takes besides its subject and
// body: the message header and checksum of the file store.
const recordOverhead = 40

func newEntry(sum *messages.JobSummary, seq uint64, size int, stored time.Time) *entry {
	e := &entry{sum: *sum, seq: seq, stored: stored,
		size: int64(size + len(messages.JobSubject(sum.ID)) + recordOverhead)}
	if len(e.sum.Cmd) > maxIndexedCmd {
		cut := maxIndexedCmd
		for cut > 0 && !utf8.RuneStart(e.sum.Cmd[cut]) {
			cut--
		}
		e.sum.Cmd, e.cmdCut = strings.Clone(e.sum.Cmd[:cut]), true
	}
	return e
}

// index holds every stored job's entry, by ID and in ID order (which is
// submission order). It is not safe for concurrent use.
type index struct {
	byID    map[string]*entry
	order   []*entry // by ID
	bytes   int64    // the entries' sizes, summed
	running int      // the entries of jobs running
	// refs counts the entries that name each archive of the file store.
	refs map[string]int
}

func newIndex() *index { return &index{byID: make(map[string]*entry), refs: make(map[string]int)} }

// count adds d to the count of each archive e names.
func (x *index) count(e *entry, d int) {
	for _, sha := range e.sum.Bundles() {
		if x.refs[sha] += d; x.refs[sha] <= 0 {
			delete(x.refs, sha)
		}
	}
}

func (x *index) get(id string) *entry { return x.byID[id] }

// put adds e, replacing the entry of the same ID.
func (x *index) put(e *entry) {
	id := e.sum.ID
	if !e.sum.Finished() {
		x.running++
	}
	x.count(e, 1)
	if old, ok := x.byID[id]; ok {
		x.count(old, -1)
		x.bytes -= old.size
		if !old.sum.Finished() {
			x.running--
		}
		i, _ := x.find(id)
		x.order[i] = e
	} else if n := len(x.order); n == 0 || x.order[n-1].sum.ID < id {
		x.order = append(x.order, e) // the common case: the newest job
	} else {
		i, _ := x.find(id)
		x.order = slices.Insert(x.order, i, e)
	}
	x.byID[id] = e
	x.bytes += e.size
}

// find is where id is or would be in order.
func (x *index) find(id string) (int, bool) {
	return slices.BinarySearchFunc(x.order, id, func(e *entry, id string) int { return strings.Compare(e.sum.ID, id) })
}

// remove drops the entries of ids.
func (x *index) remove(ids map[string]bool) {
	if len(ids) == 0 {
		return
	}
	x.order = slices.DeleteFunc(x.order, func(e *entry) bool { return ids[e.sum.ID] })
	for id := range ids {
		if e, ok := x.byID[id]; ok {
			x.count(e, -1)
			x.bytes -= e.size
			if !e.sum.Finished() {
				x.running--
			}
			delete(x.byID, id)
		}
	}
}

// matches reports whether e passes q's filters, but for grep and before.
func (e *entry) matches(q *messages.JobQuery) bool {
	s := &e.sum
	switch {
	case q.State != "" && s.State != q.State:
		return false
	case q.Node != "" && s.Master != q.Node && s.Submitter != q.Node:
		return false
	case q.Since != nil && (s.SubmittedAt == nil || s.SubmittedAt.Before(*q.Since)):
		return false
	}
	return true
}

// newestFirst calls yield with the entries whose ID sorts before before
// (all when before is empty), newest first, until yield returns false.
func (x *index) newestFirst(before string, yield func(*entry) bool) {
	end := len(x.order)
	if before != "" {
		end, _ = x.find(before)
	}
	for i := end - 1; i >= 0; i-- {
		if !yield(x.order[i]) {
			return
		}
	}
}
