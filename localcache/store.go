package localcache

import (
	"math"
	"strings"
	"sync/atomic"
	"time"
)

// entryOverhead is what an entry costs beyond its key, tags and value, for
// MaxBytes: the entry, its map and slot cells, its tag index cells. About.
const entryOverhead = 100

// never is the expiry of an entry with no TTL.
const never = time.Duration(math.MaxInt64)

// entry is a value stored under a key.
type entry[V any] struct {
	key     string
	value   V
	tags    []string
	expires time.Duration // on the cache's clock
	cost    int
	slot    int // index in store.slots
	// referenced is set by reads, under the read lock, and cleared by the
	// clock hand: an entry read since the hand last passed it is spared.
	referenced atomic.Bool
}

func (e *entry[V]) expired(now time.Duration) bool { return now >= e.expires }

// store holds the entries, bounded by count and bytes, with a CLOCK
// eviction policy: an approximation of least-recently-used in which a
// read only sets a bit, so that reads share a read lock instead of taking
// turns to move their entry to the front of a list. The hand sweeps the
// slots: an expired entry goes at once, a referenced one loses its bit
// and stays, the first one neither is evicted. The caller holds the
// cache's write lock for every method but lookup, which a read lock
// suffices for.
type store[V any] struct {
	maxEntries, maxBytes int

	entries map[string]*entry[V]
	tags    map[string]map[*entry[V]]struct{}
	slots   []*entry[V] // nil where an entry was removed; free lists them
	free    []int
	hand    int
	bytes   int
}

func newStore[V any](maxEntries, maxBytes int) *store[V] {
	s := &store[V]{maxEntries: maxEntries, maxBytes: maxBytes}
	s.reset()
	return s
}

// reset forgets every entry. It allocates anew rather than deleting one by
// one, so that a clear costs the same whatever the cache holds: it runs on
// the subscription's read loop when the connection is lost.
func (s *store[V]) reset() {
	s.entries = map[string]*entry[V]{}
	s.tags = map[string]map[*entry[V]]struct{}{}
	s.slots, s.free, s.hand, s.bytes = nil, nil, 0, 0
}

func (s *store[V]) len() int { return len(s.entries) }

// lookup returns the entry of key unless it expired, marking it read.
func (s *store[V]) lookup(key string, now time.Duration) (*entry[V], bool) {
	e := s.entries[key]
	if e == nil || e.expired(now) {
		return nil, false
	}
	if !e.referenced.Load() { // a write only when it changes: no cache-line ping-pong between readers
		e.referenced.Store(true)
	}
	return e, true
}

// fits reports whether an entry of cost can be stored at all.
func (s *store[V]) fits(cost int) bool {
	return s.maxEntries > 0 && (s.maxBytes < 0 || cost <= s.maxBytes)
}

// put stores e in place of any entry of its key, evicting as the bounds
// require; e must fit. It returns how many entries it evicted, and how
// many of those had expired.
func (s *store[V]) put(e *entry[V], now time.Duration) (evicted, expired int) {
	if old := s.entries[e.key]; old != nil {
		s.remove(old)
	}
	for len(s.entries) >= s.maxEntries || (s.maxBytes >= 0 && s.bytes+e.cost > s.maxBytes) {
		victim := s.victim(now)
		if victim.expired(now) {
			expired++
		} else {
			evicted++
		}
		s.remove(victim)
	}
	if n := len(s.free); n > 0 {
		e.slot, s.free = s.free[n-1], s.free[:n-1]
		s.slots[e.slot] = e
	} else {
		e.slot = len(s.slots)
		s.slots = append(s.slots, e)
	}
	s.entries[e.key] = e
	for _, tag := range e.tags {
		set := s.tags[tag]
		if set == nil {
			set = map[*entry[V]]struct{}{}
			s.tags[tag] = set
		}
		set[e] = struct{}{}
	}
	s.bytes += e.cost
	return evicted, expired
}

// victim moves the hand to the entry to evict. There is one: put calls it
// only while the store holds entries (an entry that fits does not exceed
// the bounds alone). Two turns at most: the first clears every bit.
func (s *store[V]) victim(now time.Duration) *entry[V] {
	for {
		if s.hand >= len(s.slots) {
			s.hand = 0
		}
		e := s.slots[s.hand]
		s.hand++
		switch {
		case e == nil:
		case e.expired(now) || !e.referenced.Load():
			return e
		default:
			e.referenced.Store(false)
		}
	}
}

// remove forgets e.
func (s *store[V]) remove(e *entry[V]) {
	delete(s.entries, e.key)
	for _, tag := range e.tags {
		set := s.tags[tag]
		delete(set, e)
		if len(set) == 0 {
			delete(s.tags, tag)
		}
	}
	s.slots[e.slot] = nil
	s.free = append(s.free, e.slot)
	s.bytes -= e.cost
}

// removeKey forgets key's entry; it reports whether there was one.
func (s *store[V]) removeKey(key string) bool {
	e := s.entries[key]
	if e != nil {
		s.remove(e)
	}
	return e != nil
}

// removePrefix forgets every entry whose key starts with prefix, and
// returns how many. It visits every entry: a prefix invalidation costs
// the cache's size, where a key or a tag costs what it removes.
func (s *store[V]) removePrefix(prefix string) int {
	if prefix == "" {
		n := len(s.entries)
		s.reset()
		return n
	}
	n := 0
	for key, e := range s.entries {
		if strings.HasPrefix(key, prefix) {
			s.remove(e)
			n++
		}
	}
	return n
}

// removeTag forgets every entry stored under tag, and returns how many.
func (s *store[V]) removeTag(tag string) int {
	set := s.tags[tag]
	n := len(set)
	for e := range set {
		s.remove(e)
	}
	return n
}

// removeExpired forgets key's entry if it expired; it reports whether it
// did.
func (s *store[V]) removeExpired(key string, now time.Duration) bool {
	e := s.entries[key]
	if e != nil && e.expired(now) {
		s.remove(e)
		return true
	}
	return false
}
