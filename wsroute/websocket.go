package wsroute

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	redisbus "github.com/redisbus/watermill-redisbus"
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

	// PingInterval is how long the node waits after a connection's last
	// ping before it pings it again (a WebSocket ping, which browsers
	// answer by themselves). A connection that does not answer within
	// PongTimeout is closed with StatusPingTimeout (4408), counted in
	// Stats.PingTimeouts and removed from the registry, so that senders
	// see its client Offline: a half-open connection (the client's network
	// gone without a word, a load balancer that lost the path) is gone at
	// most PingInterval + PongTimeout + 1s (the close handshake it is
	// given) and one Redis round trip after it went silent. Pings also keep
	// an idle connection open through proxies and load balancers that
	// close idle ones (after 60s by default on AWS ALB and nginx): keep
	// PingInterval well below that. Zero means 25s; a negative value turns
	// pings off.
	PingInterval time.Duration

	// PongTimeout is how long a ping waits for its pong. Pongs are read with
	// the connection's frames: while the node waits for Config.Inbound to
	// take a frame of the connection, a ping that times out is not held
	// against the client, and the next one asks again. Zero means 10s.
	PongTimeout time.Duration
}

const (
	defaultMaxMessageSize = 32 << 10
	defaultPingInterval   = 25 * time.Second
	defaultPongTimeout    = 10 * time.Second
)

// Validate reports the first invalid field, if any.
func (c HandlerConfig) Validate() error {
	field := func(name, problem string) error {
		return &redisbus.ConfigError{Field: "wsroute.HandlerConfig." + name, Problem: problem}
	}
	switch {
	case c.Authenticate == nil:
		return field("Authenticate", "is required")
	case c.MaxMessageSize < 0:
		return field("MaxMessageSize", "must not be negative")
	case c.PingInterval > 0 && c.PingInterval < 10*time.Millisecond:
		return field("PingInterval", "must be at least 10ms, or negative to turn pings off")
	case c.PongTimeout < 0:
		return field("PongTimeout", "must not be negative")
	case c.PongTimeout > 0 && c.PongTimeout < time.Millisecond:
		return field("PongTimeout", "must be at least 1ms")
	}
	return nil
}

func (c *HandlerConfig) setDefaults() {
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = defaultMaxMessageSize
	}
	if c.PingInterval == 0 {
		c.PingInterval = defaultPingInterval
	}
	if c.PongTimeout == 0 {
		c.PongTimeout = defaultPongTimeout
	}
}

// Handler returns an http.Handler that authenticates a request, upgrades it
// to a WebSocket with github.com/coder/websocket and serves it on the node.
//
// Text frames must be valid UTF-8 (otherwise: StatusInvalidPayload, 1007);
// binary frames are passed on as they are. A bad frame closes only its own
// connection.
func (n *Node) Handler(config HandlerConfig) (http.Handler, error) {
	if err := config.Validate(); err != nil {
		return nil, err
	}
	config.setDefaults()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		clientID, err := config.Authenticate(r)
		if err != nil || clientID == "" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		var opts ServeOptions
		if asksFor(r, Subprotocol) {
			// Answered before the upgrade, where a browser can see why.
			if opts.Recover, err = ParseRecover(r.URL.Query().Get("recover")); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		hijacked := &hijackRecorder{ResponseWriter: w}
		ws, err := websocket.Accept(hijacked, r, &websocket.AcceptOptions{
			OriginPatterns: config.OriginPatterns,
			Subprotocols:   []string{Subprotocol},
		})
		if err != nil {
			return // Accept has answered (e.g. 403 for a foreign origin)
		}
		opts.Framed = ws.Subprotocol() == Subprotocol
		if !opts.Framed {
			opts.Recover = nil
		}
		ws.SetReadLimit(config.MaxMessageSize)
		var pings *keepalive
		if config.PingInterval > 0 {
			pings = &keepalive{interval: config.PingInterval, timeout: config.PongTimeout, ping: ws.Ping}
		}
		_ = n.serve(r.Context(), &websocketConn{ws: ws, socket: hijacked.conn}, clientID, opts, pings)
	}), nil
}

// asksFor reports whether a WebSocket request offers a subprotocol.
func asksFor(r *http.Request, subprotocol string) bool {
	for _, header := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, offered := range strings.Split(header, ",") {
			if strings.TrimSpace(offered) == subprotocol {
				return true
			}
		}
	}
	return false
}

// hijackRecorder keeps the socket websocket.Accept takes over, so that a
// close handshake the peer does not answer can be cut short.
type hijackRecorder struct {
	http.ResponseWriter
	conn net.Conn
}

func (h *hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	h.conn = conn
	return conn, rw, err
}

func (h *hijackRecorder) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// websocketConn adapts a github.com/coder/websocket connection to Conn.
type websocketConn struct {
	ws     *websocket.Conn
	socket net.Conn // under ws
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
	timer := time.NewTimer(closeHandshakeTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		// ws.CloseNow would wait for the Close in progress; closing the
		// socket under it ends the handshake's wait at once.
		if c.socket != nil {
			_ = c.socket.Close()
		}
		<-done
		return errors.New("wsroute: the client did not answer the close frame; connection dropped")
	}
}
