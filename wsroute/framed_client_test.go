package wsroute_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/wsroute"
)

// frame is a wsroute.v1 frame as a client reads it
// (docs/wsroute-protocol.md).
type frame struct {
	Type       string `json:"type"`
	Stream     string `json:"stream"`
	Epoch      string `json:"epoch"`
	Offset     uint64 `json:"offset"`
	SentAt     int64  `json:"sent_at"`
	Recovered  *bool  `json:"recovered"`
	Reason     string `json:"reason"`
	Replayed   int    `json:"replayed"`
	Data       string `json:"data"`
	DataBase64 []byte `json:"data_base64"`
}

func (f frame) recovered() bool { return f.Recovered != nil && *f.Recovered }

// framedClient is a client of the wsroute.v1 protocol, as the JavaScript
// client is: it reads frames in the background and keeps the position of
// every stream it saw.
type framedClient struct {
	ws     *websocket.Conn
	frames chan frame
	closed chan error
}

// dialFramed connects to a node as clientID with the wsroute.v1
// subprotocol, presenting positions.
func dialFramed(t *testing.T, nodeURL, clientID string, positions map[string]wsroute.Position) *framedClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	query := url.Values{"client": {clientID}}
	if positions != nil {
		encoded, err := json.Marshal(positions)
		require.NoError(t, err)
		query.Set("recover", string(encoded))
	}
	ws, _, err := websocket.Dial(ctx, nodeURL+"?"+query.Encode(), &websocket.DialOptions{Subprotocols: []string{wsroute.Subprotocol}})
	require.NoError(t, err)
	require.Equal(t, wsroute.Subprotocol, ws.Subprotocol())
	ws.SetReadLimit(1 << 24)
	t.Cleanup(func() { _ = ws.CloseNow() })
	c := &framedClient{ws: ws, frames: make(chan frame, 100_000), closed: make(chan error, 1)}
	go func() {
		for {
			_, data, err := ws.Read(context.Background())
			if err != nil {
				c.closed <- err
				return
			}
			var f frame
			if err := json.Unmarshal(data, &f); err != nil {
				c.closed <- fmt.Errorf("not a wsroute.v1 frame: %q: %w", data, err)
				return
			}
			if f.Type == "ping" {
				continue // the node's keepalive, for clients that watch for it
			}
			c.frames <- f
		}
	}()
	return c
}

// next returns the next frame.
func (c *framedClient) next(t *testing.T) frame {
	t.Helper()
	select {
	case f := <-c.frames:
		return f
	case err := <-c.closed:
		t.Fatalf("the connection closed: %v", err)
	case <-time.After(waitTimeout):
		t.Fatal("no frame came")
	}
	return frame{}
}

// position reads the next frame, which must be a position frame of stream.
func (c *framedClient) position(t *testing.T, stream string) frame {
	t.Helper()
	f := c.next(t)
	require.Equal(t, "position", f.Type, "want the position of %s, got %+v", stream, f)
	require.Equal(t, stream, f.Stream)
	require.NotEmpty(t, f.Epoch)
	return f
}

// messages reads n message frames of stream, which must carry offsets
// from+1 on, in order, all recovered or all live.
func (c *framedClient) messages(t *testing.T, stream string, from uint64, n int, recovered bool) []frame {
	t.Helper()
	got := make([]frame, 0, n)
	for i := range n {
		f := c.next(t)
		require.Equal(t, "message", f.Type, "frame %d of %d: %+v", i+1, n, f)
		require.Equal(t, stream, f.Stream)
		require.Equal(t, from+uint64(i)+1, f.Offset, "frame %d of %d: offsets must follow each other", i+1, n)
		require.Equal(t, recovered, f.recovered(), "frame %d of %d (offset %d)", i+1, n, f.Offset)
		got = append(got, f)
	}
	return got
}

func (c *framedClient) close() { _ = c.ws.Close(websocket.StatusNormalClosure, "") }

// pos is where a frame leaves the client.
func pos(f frame) wsroute.Position { return wsroute.Position{Epoch: f.Epoch, Offset: f.Offset} }
