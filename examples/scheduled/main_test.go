package main

import (
	"testing"

	"github.com/redisbus/watermill-redisbus/internal/exampletest"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

func TestMain(m *testing.M) { pubsubtest.Main(m) }

// Run twice against one Redis and twice on its embedded Redis, the example
// prints the same lines: the delayed job runs when due, the failing one is
// retried after its delay, and neither holds a pending entry meanwhile.
func TestEveryRunRunsTheJobsWhenDue(t *testing.T) {
	exampletest.SameOutputEveryRun(t, run, `scheduled "send the welcome email" for 3s from now; "charge the card" for now
charge the card: failed (card declined); retrying in 2s
1s in, both jobs wait in Redis: 2 scheduled, 0 pending in the group
charge the card: done on attempt 2, 2s after the first
send the welcome email: done 3s after it was scheduled
`, "*scheduled-example:*")
}
