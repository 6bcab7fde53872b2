package main

import (
	"testing"

	"github.com/redisbus/watermill-redisbus/internal/exampletest"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

func TestMain(m *testing.M) { pubsubtest.Main(m) }

const wantOutput = `publishing 5 orders; the publish of order 3 is retried, as after a timeout
the stream holds 5 orders
a producer without the guard sends order 4 again
charged order 1: 19.99
charged order 2: 20.00
charged order 3: 30.00
charged order 4: 40.00
charged order 5: 50.00
copies dropped: 1
revenue 159.99: each order charged once
`

// Run twice against one Redis, and twice on the embedded Redis, the
// example prints the same lines: each run has a stream, marks and a
// revenue of its own, and deletes them.
func TestEveryRunChargesEachOrderOnce(t *testing.T) {
	exampletest.SameOutputEveryRun(t, run, wantOutput, "*dedup-example:*")
}
