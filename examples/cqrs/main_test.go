package main

import (
	"testing"

	"github.com/redisbus/watermill-redisbus/internal/exampletest"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

func TestMain(m *testing.M) { pubsubtest.Main(m) }

const wantOutput = `send-confirmation: emailed ada about order 1
send-confirmation: emailed grace about order 2
send-confirmation: emailed linus about order 3
sales-report: order 1 adds 10.00
sales-report: order 2 adds 20.00
sales-report: order 3 adds 30.00
both handlers saw all 3 events
`

// Run twice against one Redis, the example prints the same lines: each run
// has topics and groups of its own, and deletes them.
func TestEveryRunEveryHandlerSeesEveryEvent(t *testing.T) {
	exampletest.SameOutputEveryRun(t, run, wantOutput, "*cqrs-example:*")
}
