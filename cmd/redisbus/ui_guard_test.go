package main

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// get GETs path of url with host as the Host header, when set.
func get(t *testing.T, url, path, host string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url+path, nil)
	require.NoError(t, err)
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp
}

func TestUIForbidsFramingAndServesOnlyLoopbackHostsOnEveryEndpoint(t *testing.T) {
	e := newEnv(t)
	e.xadd("orders:dead", "payload", "x")
	url := e.startUI()
	for _, path := range []string{"/", "/api/state", "/api/dead?topic=orders", "/nosuchpage"} {
		resp := get(t, url, path, "")
		assert.Equal(t, "frame-ancestors 'none'", resp.Header.Get("Content-Security-Policy"), path)
		assert.Equal(t, "DENY", resp.Header.Get("X-Frame-Options"), path)
		if path != "/nosuchpage" {
			assert.Equal(t, http.StatusOK, resp.StatusCode, path)
		}
		// A DNS rebinding page reads nothing.
		resp = get(t, url, path, "rebind.example:8090")
		assert.Equal(t, http.StatusForbidden, resp.StatusCode, path)
		assert.Equal(t, "DENY", resp.Header.Get("X-Frame-Options"), path)
	}
	assert.Equal(t, http.StatusOK, get(t, url, "/api/state", "localhost:8090").StatusCode)
}

func TestUIReplayRefusesUnknownFieldsAndTopicsWithoutDeadLetters(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.xadd("orders:dead", "payload", "x", "redisbus_origin_stream", "orders")
	url := e.startUI()

	code, answer := postReplay(t, url, `{"topic":"orders","all":true,"to":"elsewhere"}`, true)
	assert.Equal(t, http.StatusBadRequest, code, answer)
	assert.Contains(t, answer, `unknown field "to"`)
	assert.EqualValues(t, 1, e.client.XLen(ctx, "orders:dead").Val(), "refused: nothing moved")

	code, answer = postReplay(t, url, `{"topic":"odrers","all":true}`, true)
	assert.Equal(t, http.StatusNotFound, code, answer)
	assert.Contains(t, answer, "there is no stream odrers:dead")
}

func TestUIStateKeepsTheTimeOfTheLastGoodViewWhileRedisIsDown(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	client := server.Client(t)
	require.NoError(t, client.XAdd(context.Background(), &redis.XAddArgs{Stream: "orders", Values: []any{"payload", "x"}}).Err())
	u := newUI(client, uiOptions{match: "*", deadSuffix: ":dead", maxStreams: 100, every: 100 * time.Millisecond, window: time.Second})
	u.sample(context.Background())
	good := u.state.ViewedAt
	require.False(t, good.IsZero())
	require.Empty(t, u.state.Error)

	server.Kill(t)
	u.sample(context.Background())
	assert.NotEmpty(t, u.state.Error)
	assert.True(t, u.state.SampledAt.After(good), "the failed attempt")
	assert.Equal(t, good, u.state.ViewedAt, "the view shown is the last good one, and says when it was read")
	require.Len(t, u.state.Topics, 1)
}
