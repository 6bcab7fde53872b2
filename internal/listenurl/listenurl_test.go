package listenurl

import (
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHTTP(t *testing.T) {
	for _, c := range []struct{ requested, listener, want string }{
		{":8081", "[::]:8081", "http://localhost:8081"},
		{"0.0.0.0:8081", "0.0.0.0:8081", "http://localhost:8081"},
		{"[::]:8081", "[::]:8081", "http://localhost:8081"},
		{"127.0.0.1:0", "127.0.0.1:40123", "http://127.0.0.1:40123"},
		{"[::1]:8081", "[::1]:8081", "http://[::1]:8081"},
		{"localhost:8081", "127.0.0.1:8081", "http://localhost:8081"},
		{"localhost:0", "127.0.0.1:40123", "http://localhost:40123"},
		{"chat.internal:80", "192.0.2.7:80", "http://chat.internal:80"},
	} {
		assert.Equal(t, c.want, HTTP(c.requested, fakeAddr(c.listener)), "%s listening on %s", c.requested, c.listener)
	}
}

// A listener on every interface, as -addr :0 makes, gets a URL a browser
// opens.
func TestHTTPOfARealListenerOnEveryInterface(t *testing.T) {
	l, err := net.Listen("tcp", ":0")
	require.NoError(t, err)
	defer l.Close()
	assert.Regexp(t, `^http://localhost:\d+$`, HTTP(":0", l.Addr()))
	assert.Positive(t, Port(l.Addr()))
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }
