package localcache

import (
	"slices"
	"sort"
	"strings"
)

// kind says what an invalidation covers.
type kind uint8

const (
	kindKey kind = iota + 1
	kindPrefix
	kindTag
	// kindAll covers everything: InvalidateAll, and every loss (the
	// subscription lost or back, an inbox overflow, a message that cannot
	// be read), after which nothing stored before can be vouched for.
	kindAll
	// kindSync is a Sync's marker: it covers nothing.
	kindSync
)

// invalidation is one message on the topic. The wire format is text, so
// that any Redis client can invalidate with a plain PUBLISH:
//
//	key:<key>          the entry of <key>
//	prefix:<prefix>    every entry whose key starts with <prefix>
//	tag:<tag>          every entry stored under <tag>
//	all                every entry
//	sync:<id>          a Sync's marker, for the node that sent it
//
// Everything after the first colon is the name, colons and all. A payload
// that is none of these is applied as "all": it may have meant to
// invalidate something, and what is not understood cannot be vouched for.
type invalidation struct {
	kind kind
	name string
}

var prefixes = [...]struct {
	kind kind
	text string
}{{kindKey, "key:"}, {kindPrefix, "prefix:"}, {kindTag, "tag:"}, {kindSync, "sync:"}}

// encode returns the payload of inv.
func (inv invalidation) encode() []byte {
	if inv.kind == kindAll {
		return []byte("all")
	}
	for _, p := range prefixes {
		if p.kind == inv.kind {
			return append([]byte(p.text), inv.name...)
		}
	}
	panic("localcache: unknown invalidation kind")
}

// parse reads a payload; ok is false when it is none of the formats.
func parse(payload []byte) (inv invalidation, ok bool) {
	if string(payload) == "all" {
		return invalidation{kind: kindAll}, true
	}
	for _, p := range prefixes {
		if len(payload) >= len(p.text) && string(payload[:len(p.text)]) == p.text {
			return invalidation{kind: p.kind, name: string(payload[len(p.text):])}, true
		}
	}
	return invalidation{}, false
}

// covers reports whether an invalidation applies to an entry of key with
// tags.
func (inv invalidation) covers(key string, tags []string) bool {
	switch inv.kind {
	case kindKey:
		return inv.name == key
	case kindPrefix:
		return strings.HasPrefix(key, inv.name)
	case kindTag:
		return slices.Contains(tags, inv.name)
	case kindAll:
		return true
	}
	return false
}

// Limits of the invalidation log. A load in flight longer than the log
// reaches back is not stored (see invalidationLog): 1,024 invalidations
// during one load, or 1 MiB of their names.
const (
	logRecords = 1024
	logBytes   = 1 << 20
)

// record is an invalidation applied, numbered.
type record struct {
	seq uint64
	invalidation
}

// invalidationLog keeps the last invalidations applied, so that a load can
// tell, when it ends, whether one that covers its key and tags was applied
// since it began: its value may then predate the change, and must not be
// stored. A load's tags are known only once it has its value, which is why
// the log keeps the invalidations rather than each load noting those that
// concern it. It is bounded by count and bytes; floor says up to which
// number records were dropped, and a load that began before that is not
// stored, since what it missed is unknown.
type invalidationLog struct {
	ring  [logRecords]record
	head  int // the oldest record
	n     int
	bytes int
	floor uint64
}

// add appends r. A name larger than the whole log is kept as "all", which
// covers what it covered.
func (l *invalidationLog) add(r record) {
	if len(r.name) > logBytes {
		r.invalidation = invalidation{kind: kindAll}
	}
	for l.n > 0 && (l.n == logRecords || l.bytes+len(r.name) > logBytes) {
		oldest := &l.ring[l.head]
		l.floor = oldest.seq
		l.bytes -= len(oldest.name)
		*oldest = record{}
		l.head = (l.head + 1) % logRecords
		l.n--
	}
	l.ring[(l.head+l.n)%logRecords] = r
	l.n++
	l.bytes += len(r.name)
}

// firstCover returns the number of the first invalidation after since
// that covers key and tags, or zero when none did. When records after
// since were dropped, it returns since+1: the load cannot be vouched for.
func (l *invalidationLog) firstCover(since uint64, key string, tags []string) uint64 {
	if l.floor > since {
		return since + 1
	}
	at := func(i int) *record { return &l.ring[(l.head+i)%logRecords] }
	// Records are in order: skip those up to since.
	first := sort.Search(l.n, func(i int) bool { return at(i).seq > since })
	for i := first; i < l.n; i++ {
		if r := at(i); r.covers(key, tags) {
			return r.seq
		}
	}
	return 0
}
