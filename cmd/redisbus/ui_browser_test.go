//go:build browser && unix

package main

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/internal/browsertest"
)

// Run with: go test -tags browser -run Browser ./cmd/redisbus
// It needs Debian's chromium (apt-get install chromium), which .ci/run
// installs. With UI_SCREENSHOT=file.png it also saves the page as the
// test leaves it.

// TestBrowserUIReplaysADeadLetter opens `redisbus ui` in headless Chromium:
// the page shows the stream and its groups' lag, a click on a dead
// letter's Replay button moves it back into its stream, and the list
// updates; the page logs no errors meanwhile.
func TestBrowserUIReplaysADeadLetter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	e := newEnv(t)
	_, sub := e.deadLetters("orders", 3)
	require.NoError(t, sub.Close()) // else it would take the replayed entry
	require.NoError(t, e.client.XGroupCreate(ctx, "orders", "audit", "0").Err())

	url := e.runUI("--every", "200ms", "--metrics", metricsOf(t, "orders-workers", sub))
	tab := browsertest.StartChromium(t, ctx).Open(t, ctx, url+"/", "streams")

	tab.WaitFor(t, ctx, `document.querySelector('#streams td.lag[data-group="audit"]')?.textContent === '3'`,
		"group audit of orders with lag 3")
	tab.WaitFor(t, ctx, `document.querySelector('#streams tr[data-stream="orders"] polyline')?.getAttribute('points').split(' ').length >= 3`,
		"a lag chart of three samples or more")
	tab.WaitForText(t, ctx, "metrics", "orders-workers")
	tab.WaitFor(t, ctx, `document.querySelectorAll('#dead button.replay').length === 3`, "three dead letters listed")

	oldest, err := e.client.XRangeN(ctx, "orders:dead", "-", "+", 1).Result()
	require.NoError(t, err)
	id, uuid := oldest[0].ID, oldest[0].Values[redisbus.StreamsFieldUUID].(string)
	tab.Click(t, ctx, fmt.Sprintf(`#dead button.replay[data-id=%q]`, id))

	tab.WaitForText(t, ctx, "result", "Replayed 1 dead letters from orders:dead to orders (1).")
	assert.EqualValues(t, 2, e.client.XLen(ctx, "orders:dead").Val())
	assert.Empty(t, e.client.XRange(ctx, "orders:dead", id, id).Val(), "no longer a dead letter")
	assert.Equal(t, 2, e.uuids("orders")[uuid], "back in orders: the original entry and the replayed one")
	tab.WaitFor(t, ctx, fmt.Sprintf(`document.querySelectorAll('#dead button.replay').length === 2 && !document.querySelector('#dead tr[data-id=%q]')`, id),
		"the dead-letter list without the replayed entry")
	tab.WaitForText(t, ctx, "streams", "2 – show")
	tab.WaitFor(t, ctx, `document.querySelector('#streams td.lag[data-group="audit"]')?.textContent === '4'`,
		"audit's lag counting the replayed entry")

	// Replay all asks first: Cancel moves nothing, OK moves the rest.
	tab.Click(t, ctx, "#replay-all")
	assert.Equal(t, []string{"Replay every dead letter of orders to the stream it came from?"}, tab.Dialogs())
	assert.EqualValues(t, 2, e.client.XLen(ctx, "orders:dead").Val(), "cancelled: nothing replayed")
	tab.AnswerDialogs(true)
	tab.Click(t, ctx, "#replay-all")
	tab.WaitForText(t, ctx, "result", "Replayed 2 dead letters from orders:dead to orders (2).")
	assert.Len(t, tab.Dialogs(), 2)
	assert.Zero(t, e.client.XLen(ctx, "orders:dead").Val())

	if path := os.Getenv("UI_SCREENSHOT"); path != "" {
		tab.Screenshot(t, ctx, path)
	}
	assert.Empty(t, tab.Errors(), "the page logged errors")
}
