package wsroute_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

func TestMain(m *testing.M) { pubsubtest.Main(m) }

const waitTimeout = 10 * time.Second

// testNode is a node serving WebSockets on an httptest server. Clients
// name themselves with ?client= (a test-only Authenticate).
type testNode struct {
	*wsroute.Node
	url     string
	inbound <-chan *message.Message // frames from its clients
}

func startNode(t *testing.T, client redis.UniversalClient, config wsroute.Config) *testNode {
	t.Helper()
	return startLoggedNode(t, client, config, nil)
}

// startLoggedNode is startNode with the node logging to logger.
func startLoggedNode(t *testing.T, client redis.UniversalClient, config wsroute.Config, logger watermill.LoggerAdapter) *testNode {
	t.Helper()
	return startNodeWith(t, client, config, nodeOptions{logger: logger})
}

// nodeOptions are what startNodeWith takes beyond the node's Config.
type nodeOptions struct {
	// handler configures the node's Handler; its Authenticate and
	// MaxMessageSize are the tests' own.
	handler wsroute.HandlerConfig
	logger  watermill.LoggerAdapter
	// inboundWaitsForAck makes publishing a frame to Inbound wait until
	// the test acks it, as a slow Inbound would.
	inboundWaitsForAck bool
}

// startNodeWith is startNode with handler settings, a logger or a slow
// Inbound.
func startNodeWith(t *testing.T, client redis.UniversalClient, config wsroute.Config, options nodeOptions) *testNode {
	t.Helper()
	frames := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 1024, BlockPublishUntilSubscriberAck: options.inboundWaitsForAck}, watermill.NopLogger{})
	t.Cleanup(func() { _ = frames.Close() })
	config.Client = client
	config.Inbound = frames
	config.InboundTopic = "frames"
	inbound, err := frames.Subscribe(context.Background(), config.InboundTopic)
	require.NoError(t, err)
	node, err := wsroute.NewNode(config, options.logger)
	require.NoError(t, err)
	handlerConfig := options.handler
	handlerConfig.Authenticate = func(r *http.Request) (string, error) {
		if id := r.URL.Query().Get("client"); id != "" {
			return id, nil
		}
		return "", errors.New("no client")
	}
	handlerConfig.MaxMessageSize = 1024
	handler, err := node.Handler(handlerConfig)
	require.NoError(t, err)
	server := httptest.NewServer(handler)
	t.Cleanup(func() {
		require.NoError(t, node.Close())
		server.Close()
	})
	return &testNode{Node: node, url: "ws" + strings.TrimPrefix(server.URL, "http"), inbound: inbound}
}

// connect opens a WebSocket as clientID and returns once the node has
// registered it: the node reads frames only after registering, so the
// hello frame coming out of Inbound proves it.
func (n *testNode) connect(t *testing.T, clientID string) *websocket.Conn {
	t.Helper()
	return n.connectWith(t, n.url, clientID, nil)
}

// connectWith is connect through url (a proxy in front of the node) with
// options.
func (n *testNode) connectWith(t *testing.T, url, clientID string, options *websocket.DialOptions) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url+"?client="+clientID, options)
	require.NoError(t, err)
	ws.SetReadLimit(1 << 24)
	t.Cleanup(func() { _ = ws.CloseNow() })
	hello := "hello " + watermill.NewUUID()
	require.NoError(t, ws.Write(ctx, websocket.MessageText, []byte(hello)))
	for {
		select {
		case msg := <-n.inbound:
			msg.Ack()
			if string(msg.Payload) == hello {
				require.Equal(t, clientID, msg.Metadata.Get(wsroute.MetadataFrom))
				return ws
			}
		case <-ctx.Done():
			t.Fatalf("%s was not registered", clientID)
		}
	}
}

// read returns the next text frame.
func read(t *testing.T, ws *websocket.Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, data, err := ws.Read(ctx)
	require.NoError(t, err)
	return string(data)
}

// closeStatus reads until the connection closes and returns its code.
func closeStatus(t *testing.T, ws *websocket.Conn) websocket.StatusCode {
	t.Helper()
	code, _ := closeReason(t, ws)
	return code
}

// closeReason reads until the connection closes and returns its code and
// reason.
func closeReason(t *testing.T, ws *websocket.Conn) (websocket.StatusCode, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for {
		if _, _, err := ws.Read(ctx); err != nil {
			require.NoError(t, ctx.Err(), "the connection was not closed")
			var closeErr websocket.CloseError
			errors.As(err, &closeErr)
			return websocket.CloseStatus(err), closeErr.Reason
		}
	}
}

// background reads a connection until it closes, as a client's reading
// loop does: it answers the node's pings meanwhile.
type background struct {
	frames chan string
	closed chan error // the error that ended reading
}

func readInBackground(ws *websocket.Conn) *background {
	b := &background{frames: make(chan string, 1024), closed: make(chan error, 1)}
	go func() {
		for {
			_, data, err := ws.Read(context.Background())
			if err != nil {
				b.closed <- err
				return
			}
			b.frames <- string(data)
		}
	}()
	return b
}

// next returns the next frame read.
func (b *background) next(t *testing.T) string {
	t.Helper()
	select {
	case frame := <-b.frames:
		return frame
	case err := <-b.closed:
		t.Fatalf("the connection closed: %v", err)
	case <-time.After(waitTimeout):
		t.Fatal("no frame came")
	}
	return ""
}

// awaitOffline sends to clientID from sender until the route reports it
// Offline: until its registrations are gone from Redis.
func awaitOffline(t *testing.T, sender *testNode, clientID string) {
	t.Helper()
	require.Eventually(t, func() bool {
		result, err := sender.SendToClient(context.Background(), clientID, []byte("anyone there?"))
		return err == nil && result.Status == wsroute.Offline
	}, waitTimeout, 5*time.Millisecond, "%s stays registered", clientID)
}

// passThroughHooks are the go-redis hooks a test hook that watches single
// commands leaves alone.
type passThroughHooks struct{}

func (passThroughHooks) DialHook(next redis.DialHook) redis.DialHook { return next }

func (passThroughHooks) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
