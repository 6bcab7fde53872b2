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
	frames := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 1024}, watermill.NopLogger{})
	t.Cleanup(func() { _ = frames.Close() })
	config.Client = client
	config.Inbound = frames
	config.InboundTopic = "frames"
	inbound, err := frames.Subscribe(context.Background(), config.InboundTopic)
	require.NoError(t, err)
	node, err := wsroute.NewNode(config, logger)
	require.NoError(t, err)
	handler, err := node.Handler(wsroute.HandlerConfig{
		Authenticate: func(r *http.Request) (string, error) {
			if id := r.URL.Query().Get("client"); id != "" {
				return id, nil
			}
			return "", errors.New("no client")
		},
		MaxMessageSize: 1024,
	})
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
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, n.url+"?client="+clientID, nil)
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
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for {
		if _, _, err := ws.Read(ctx); err != nil {
			require.NoError(t, ctx.Err(), "the connection was not closed")
			return websocket.CloseStatus(err)
		}
	}
}
