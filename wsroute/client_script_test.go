package wsroute_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/wsroute"
)

// ClientScript serves the repository's client/wsroute.js as JavaScript, as
// a module script requires (a browser refuses one served as text/plain),
// and lets a browser revalidate it instead of downloading it again.
func TestClientScriptServesTheModule(t *testing.T) {
	want, err := os.ReadFile("client/wsroute.js")
	require.NoError(t, err)
	server := httptest.NewServer(wsroute.ClientScript())
	defer server.Close()

	resp, err := http.Get(server.URL + "/wsroute.js")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "text/javascript; charset=utf-8", resp.Header.Get("Content-Type"))
	assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
	assert.Equal(t, string(want), string(body))
	assert.Contains(t, string(body), "export class WsrouteClient")
	etag := resp.Header.Get("ETag")
	assert.Regexp(t, `^"[0-9a-f]{16}"$`, etag)

	request, err := http.NewRequest(http.MethodGet, server.URL+"/wsroute.js", nil)
	require.NoError(t, err)
	request.Header.Set("If-None-Match", etag)
	resp, err = http.DefaultClient.Do(request)
	require.NoError(t, err)
	body, _ = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusNotModified, resp.StatusCode)
	assert.Empty(t, body)

	resp, err = http.Head(server.URL + "/wsroute.js")
	require.NoError(t, err)
	body, _ = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Empty(t, body)

	resp, err = http.Post(server.URL+"/wsroute.js", "text/plain", nil)
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	assert.Equal(t, "GET, HEAD", resp.Header.Get("Allow"))
}
