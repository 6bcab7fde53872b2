package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Each node's page carries what it shows from the first paint (the node,
// its colour, whose page it is, the other node it may move to), and the
// node serves what the page loads and asks: the JavaScript client and who
// is in a room.
func TestEachNodesPageKnowsItsNodeAndThePeer(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	out := &lineWaiter{line: "open ", seen: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- run(ctx, out, options{addrA: "127.0.0.1:0", addrB: "127.0.0.1:0"}) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	select {
	case <-out.seen:
	case err := <-done:
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	urls := regexp.MustCompile(`node (node-[ab]) listening on (\S+)`).FindAllStringSubmatch(out.String(), -1)
	require.Len(t, urls, 2)
	urlA, urlB := urls[0][2], urls[1][2]

	for _, c := range []struct {
		url  string
		want pageInfo
	}{
		{urlA, pageInfo{Node: "node-a", User: "alice", Room: "lobby", Nodes: []nodeLink{{"node-a", urlA, "#2563eb"}, {"node-b", urlB, "#ea580c"}}}},
		{urlB, pageInfo{Node: "node-b", User: "bob", Room: "lobby", Nodes: []nodeLink{{"node-b", urlB, "#ea580c"}, {"node-a", urlA, "#2563eb"}}}},
	} {
		page := get(t, c.url+"/", "text/html; charset=utf-8")
		info := regexp.MustCompile(`<script type="application/json" id="page-info">(.*?)</script>`).FindStringSubmatch(page)
		require.NotNil(t, info, "the page has its info")
		var got pageInfo
		require.NoError(t, json.Unmarshal([]byte(info[1]), &got))
		assert.Equal(t, c.want, got)
		assert.Contains(t, page, `import { WsrouteClient } from '/wsroute.js'`)
		assert.Contains(t, get(t, c.url+"/wsroute.js", "text/javascript; charset=utf-8"), "export class WsrouteClient")
		assert.JSONEq(t, `{"room": "lobby", "members": []}`, get(t, c.url+"/presence?room=lobby", "application/json"))

		resp, err := http.Get(c.url + "/presence")
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "which room?")
		resp, err = http.Get(c.url + "/favicon.ico")
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusNotFound, resp.StatusCode, "the page is at / only")
	}
}

// get returns the body of url, which must answer 200 with contentType.
func get(t *testing.T, url, contentType string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", url, body)
	assert.Equal(t, contentType, resp.Header.Get("Content-Type"), url)
	return string(body)
}
