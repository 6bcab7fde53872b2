package listenurl

import (
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHTTP(t *testing.T) {
	for addr, want := range map[string]string{
		"[::]:8081":       "http://localhost:8081",
		"0.0.0.0:8081":    "http://localhost:8081",
		"127.0.0.1:8081":  "http://127.0.0.1:8081",
		"[::1]:8081":      "http://[::1]:8081",
		"192.0.2.7:80":    "http://192.0.2.7:80",
		"example.org:443": "http://example.org:443",
	} {
		assert.Equal(t, want, HTTP(fakeAddr(addr)), addr)
	}
}

// A listener on every interface, as -addr :0 makes, gets a URL a browser
// opens.
func TestHTTPOfARealListenerOnEveryInterface(t *testing.T) {
	l, err := net.Listen("tcp", ":0")
	require.NoError(t, err)
	defer l.Close()
	url := HTTP(l.Addr())
	assert.Regexp(t, `^http://localhost:\d+$`, url)
	assert.Positive(t, Port(l.Addr()))
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }
