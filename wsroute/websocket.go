package wsroute

import (
	"context"
	"errors"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// HandlerConfig configures the WebSocket upgrade handler.
type HandlerConfig struct {
	// Authenticate returns the client ID of a request, from its session
	// cookie or token. Required: a client never chooses its own ID unless
	// Authenticate takes it from the request on purpose. An error answers
	// 401 Unauthorized.
	Authenticate func(r *http.Request) (clientID string, err error)

	// OriginPatterns lists the other origins (host patterns, as
	// github.com/coder/websocket takes them, e.g. "app.example.com" or
	// "*.example.com") whose pages may connect. Same-origin pages always
	// may; by default no other origin may.
	OriginPatterns []string

	// MaxMessageSize bounds a frame from a client; a larger one closes the
	// connection with StatusMessageTooBig (1009). Zero means 32 KiB.
	MaxMessageSize int64
}

// Handler returns an http.Handler that authenticates a request, upgrades it
// to a WebSocket with github.com/coder/websocket and serves it on the node.
//
// Text frames must be valid UTF-8 (otherwise: StatusInvalidPayload, 1007);
// binary frames are passed on as they are. A bad frame closes only its own
// connection.
func (n *Node) Handler(config HandlerConfig) (http.Handler, error) {
	if config.Authenticate == nil {
		return nil, errors.New("wsroute: HandlerConfig.Authenticate is required")
	}
	if config.MaxMessageSize < 0 {
		return nil, errors.New("wsroute: HandlerConfig.MaxMessageSize must not be negative")
	}
	if config.MaxMessageSize == 0 {
		config.MaxMessageSize = 32 << 10
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		clientID, err := config.Authenticate(r)
		if err != nil || clientID == "" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: config.OriginPatterns})
		if err != nil {
			return // Accept has answered (e.g. 403 for a foreign origin)
		}
		ws.SetReadLimit(config.MaxMessageSize)
		_ = n.Serve(r.Context(), &websocketConn{ws: ws}, clientID)
	}), nil
}

// websocketConn adapts a github.com/coder/websocket connection to Conn.
type websocketConn struct {
	ws *websocket.Conn
}

func (c *websocketConn) Read(ctx context.Context) ([]byte, error) {
	typ, data, err := c.ws.Read(ctx)
	if err != nil {
		return nil, err // an oversized frame was closed with 1009 by the library
	}
	if typ == websocket.MessageText && !utf8.Valid(data) {
		_ = c.ws.Close(StatusInvalidPayload, "text frame is not valid UTF-8")
		return nil, errors.New("wsroute: invalid UTF-8 in a text frame")
	}
	return data, nil
}

// Write sends UTF-8 as a text frame and anything else as binary, so that
// browsers accept both.
func (c *websocketConn) Write(ctx context.Context, data []byte) error {
	typ := websocket.MessageText
	if !utf8.Valid(data) {
		typ = websocket.MessageBinary
	}
	return c.ws.Write(ctx, typ, data)
}

// closeHandshakeTimeout bounds how long Close waits for the client to
// answer the close frame before dropping the connection; coder/websocket
// alone waits 5s.
const closeHandshakeTimeout = time.Second

func (c *websocketConn) Close(code StatusCode, reason string) error {
	done := make(chan error, 1)
	go func() { done <- c.ws.Close(code, reason) }()
	select {
	case err := <-done:
		return err
	case <-time.After(closeHandshakeTimeout):
		err := c.ws.CloseNow()
		<-done
		return err
	}
}
