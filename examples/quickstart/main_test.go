package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

func TestMain(m *testing.M) { pubsubtest.Main(m) }

// Two subscribers, as two terminals would run them, receive what a third
// run publishes; Ctrl-C ends them cleanly.
func TestTwoSubscribersReceiveWhatAPublisherSends(t *testing.T) {
	url := pubsubtest.Redis(t).URL
	ctx, cancel := context.WithCancel(t.Context())
	var outs [2]*pubsubtest.SyncBuffer
	done := make(chan error, 2)
	for i := range outs {
		outs[i] = &pubsubtest.SyncBuffer{}
		subscribed := make(chan struct{})
		go func() { done <- run(ctx, outs[i], url, nil, subscribed) }()
		select {
		case <-subscribed:
		case err := <-done:
			t.Fatalf("subscriber: %v", err)
		}
	}
	var published bytes.Buffer
	require.NoError(t, run(t.Context(), &published, url, []string{"hi", "there"}, nil))
	assert.Equal(t, "published \"hi there\" to 2 subscriber(s)\n", published.String())
	for _, out := range outs {
		require.Eventually(t, func() bool { return strings.Contains(out.String(), "[hello:world] received: hi there\n") },
			10*time.Second, time.Millisecond)
	}
	cancel()
	require.NoError(t, <-done)
	require.NoError(t, <-done)
}

// A Redis that cannot be reached ends the subscriber with the reason,
// instead of leaving it waiting for a subscription that never comes.
func TestUnreachableRedisIsReported(t *testing.T) {
	err := run(t.Context(), &pubsubtest.SyncBuffer{}, "redis://127.0.0.1:1/0", nil, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "connection refused")
}
