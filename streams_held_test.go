package redisbus

import (
	"sync"
	"sync/atomic"
	"testing"
)

// An entry read twice at once (its consumer's own pending list and a claim
// racing) is held, and so queued, once.
func TestHeldEntriesTakeAnEntryOnce(t *testing.T) {
	for range 100 {
		held := heldEntries{entries: map[string]*inboxEntry{}}
		var taken atomic.Int32
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if held.tryHold(&inboxEntry{id: "1-0"}) {
					taken.Add(1)
				}
			})
		}
		wg.Wait()
		if taken.Load() != 1 {
			t.Fatalf("held %d times", taken.Load())
		}
	}
}
