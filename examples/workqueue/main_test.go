package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/redisbus/watermill-redisbus/internal/exampletest"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

func TestMain(m *testing.M) { pubsubtest.Main(m) }

// wantOutput is what every run prints.
var wantOutput = func() string {
	var b strings.Builder
	b.WriteString("publishing 10 orders to 2 workers; order 2 has a negative amount\n")
	for attempt := 1; attempt <= 3; attempt++ {
		fmt.Fprintf(&b, "order 2 failed (attempt %d of 3): amount must be positive\n", attempt)
	}
	b.WriteString(`dead letter: {"id":2,"amount":-5} (nacked 3 times (MaxDeliveries 3))` + "\n")
	b.WriteString("processed order 1: charged 19.99\n")
	b.WriteString("processed order 3: charged 42.00\n")
	for id := 4; id <= 10; id++ {
		fmt.Fprintf(&b, "processed order %d: charged %d.00\n", id, id*10)
	}
	b.WriteString("both workers took a share of the orders\n")
	return b.String()
}()

// Run twice against one Redis, the example prints the same lines: each run
// has a queue of its own, and deletes it.
func TestEveryRunRetriesThenDeadLettersTheFailingOrder(t *testing.T) {
	exampletest.SameOutputEveryRun(t, run, wantOutput, "*workqueue-example:*")
}
