package redisbus

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/redisbus/watermill-redisbus/internal/slotmap"
)

// heldEntries are the entries a topic holds: read and not yet acked,
// dead-lettered or handed back. Holding is atomic: an entry read twice
// (own pending list and a claim racing) is held, and queued, once.
type heldEntries struct {
	mu      sync.Mutex
	entries map[string]*inboxEntry
}

// tryHold holds e unless an entry with its ID is held already.
func (h *heldEntries) tryHold(e *inboxEntry) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.entries[e.id]; ok {
		return false
	}
	h.entries[e.id] = e
	return true
}

func (h *heldEntries) has(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.entries[id]
	return ok
}

func (h *heldEntries) release(id string) {
	h.mu.Lock()
	delete(h.entries, id)
	h.mu.Unlock()
}

// releaseAll stops holding the entries of ops.
func (h *heldEntries) releaseAll(ops []ackOp) {
	h.mu.Lock()
	for _, op := range ops {
		delete(h.entries, op.id)
	}
	h.mu.Unlock()
}

func (h *heldEntries) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.entries)
}

// unacked returns the entries held and not acked by a handler: the ones
// that must stay this consumer's.
func (h *heldEntries) unacked() []*inboxEntry {
	h.mu.Lock()
	defer h.mu.Unlock()
	entries := make([]*inboxEntry, 0, len(h.entries))
	for _, e := range h.entries {
		if !e.acked.Load() {
			entries = append(entries, e)
		}
	}
	return entries
}

// lose forgets the entries with these IDs and marks them lost, so that
// the inbox drops those still waiting; it returns how many were held.
func (h *heldEntries) lose(ids []string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, id := range ids {
		if e, ok := h.entries[id]; ok {
			e.lost.Store(true)
			delete(h.entries, id)
			n++
		}
	}
	return n
}

// renew resets the idle time of every entry the topic holds, so that no
// other consumer claims them while they wait or a handler runs long, and
// renews the consumer name's lease. Entries that turn out to be someone
// else's are dropped; the others may be handed out for freshFor more.
func (t *streamsTopic) renew() {
	id := t.identity.Load()
	if id == nil {
		t.reacquireName()
		return
	}
	entries := t.held.unacked()
	start := time.Now()
	for chunk := range chunks(entries, 512) {
		args := t.scriptArgs(id, 2*len(chunk))
		for _, e := range chunk {
			args = append(args, e.id, "-")
		}
		lost, err := touchScript.Run(context.Background(), t.s.config.Client, []string{t.name, id.key}, args...).StringSlice()
		if err != nil {
			slotmap.Refresh(err, t.s.config.Client)
			if holder, taken := leaseLost(err); taken {
				t.nameLost(id, holder)
				return
			}
			if !t.isClosing() && t.renewErrorLog.allow() {
				t.logger.Error("Cannot renew held entries; they are handed out only once Redis confirms they are still ours", err, nil)
			}
			return
		}
		freshUntil := start.Add(t.freshFor()).UnixNano()
		for _, e := range chunk {
			e.freshUntil.Store(freshUntil)
		}
		t.lost(lost)
	}
	t.inbox.poke()
}

// chunks splits entries into runs of at most size, and yields one empty
// run when there are none, so that the lease is renewed all the same.
func chunks(entries []*inboxEntry, size int) func(yield func([]*inboxEntry) bool) {
	return func(yield func([]*inboxEntry) bool) {
		if len(entries) == 0 {
			yield(nil)
			return
		}
		for chunk := range slices.Chunk(entries, size) {
			if !yield(chunk) {
				return
			}
		}
	}
}

// lost forgets entries that are no longer this consumer's. Those still
// waiting here are dropped; those a handler has are processed twice, which
// at-least-once allows for messages in flight.
func (t *streamsTopic) lost(ids []string) {
	if len(ids) == 0 {
		return
	}
	if n := t.held.lose(ids); n > 0 {
		t.s.stats.lost.Add(uint64(n))
		t.logger.Error("Held entries were claimed by another consumer; those not yet handed out are dropped here", errClaimedElsewhere,
			watermill.LogFields{"entries": n})
		t.inbox.poke()
	}
}
