package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/wsroute"
)

//go:embed page.html
var page []byte

// framesTopic is the in-process topic on which a node's wsroute.Node
// publishes the frames its clients send.
const framesTopic = "chat.frames"

// Frame is what a browser sends: join or leave a room, or say something
// in one.
type Frame struct {
	Op   string `json:"op"` // "join", "leave" or "say"
	Room string `json:"room"`
	Text string `json:"text,omitempty"`
}

// Event is what a browser receives.
type Event struct {
	Kind string `json:"kind"` // "joined", "left", "message" or "error"
	Room string `json:"room,omitempty"`
	From string `json:"from,omitempty"` // who joined, left or said it
	Node string `json:"node,omitempty"` // the node the sender is connected to
	Text string `json:"text,omitempty"`
}

// Server is one chat node: it serves the page and the WebSocket endpoint,
// and a Watermill Router handles what its clients send. Run as many as you
// like against one Redis, behind a load balancer: a message said in a
// room reaches the room's members on every node, and only the nodes that
// have members.
type Server struct {
	node   *wsroute.Node
	frames *gochannel.GoChannel
	router *message.Router
	mux    *http.ServeMux
}

// NewServer starts a chat node named nodeID (unique among the live nodes)
// on client's Redis. Close stops it; the client stays open.
func NewServer(ctx context.Context, client redis.UniversalClient, nodeID string) (_ *Server, err error) {
	s := &Server{mux: http.NewServeMux()}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	logger := watermill.NopLogger{}
	// Frames are handled on the node their client is connected to. The
	// in-process channel returns from Publish once the handler is done
	// with a frame, so one client's frames are handled in the order sent.
	s.frames = gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, logger)
	if s.node, err = wsroute.NewNode(wsroute.Config{
		Client:       client,
		NodeID:       nodeID,
		Inbound:      s.frames,
		InboundTopic: framesTopic,
	}, logger); err != nil {
		return nil, err
	}
	if s.router, err = message.NewRouter(message.RouterConfig{CloseTimeout: time.Second}, logger); err != nil {
		return nil, err
	}
	s.router.AddConsumerHandler("chat", framesTopic, s.frames, s.handleFrame)
	// Run fails when a subscription does: wait for that too, not only
	// for Running, which then never comes.
	runErr := make(chan error, 1)
	go func() { runErr <- s.router.Run(context.WithoutCancel(ctx)) }()
	select {
	case <-s.router.Running():
	case err := <-runErr:
		return nil, fmt.Errorf("cannot start: %w", err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}

	ws, err := s.node.Handler(wsroute.HandlerConfig{
		// The client ID is the name the page asks for. A real application
		// takes it from its session cookie or token instead: whoever
		// connects as "bob" receives bob's messages.
		Authenticate: func(r *http.Request) (string, error) {
			if name := r.URL.Query().Get("name"); name != "" {
				return name, nil
			}
			return "", errors.New("no name")
		},
	})
	if err != nil {
		return nil, err
	}
	s.mux.Handle("/ws", ws)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(page)
	})
	return s, nil
}

// ServeHTTP serves the page at / and the WebSocket endpoint at /ws.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// handleFrame does what a client's frame asks. A frame it cannot carry
// out is answered with an error event rather than returned as an error,
// which would have the Router hand the same frame back at once, again and
// again.
func (s *Server) handleFrame(msg *message.Message) error {
	ctx := msg.Context()
	from := msg.Metadata.Get(wsroute.MetadataFrom)
	var f Frame
	if err := json.Unmarshal(msg.Payload, &f); err != nil || f.Room == "" {
		return s.reply(ctx, from, "frames are JSON with an op and a room")
	}
	event := Event{Room: f.Room, From: from, Node: s.node.ID()}
	switch f.Op {
	case "join":
		// Membership belongs to the client's connections on this node;
		// Redis learns only that this node has members in the room.
		if err := s.node.Join(ctx, from, f.Room); err != nil {
			return s.reply(ctx, from, "cannot join "+f.Room+": "+err.Error())
		}
		event.Kind = "joined" // told to the room, the new member included
	case "leave":
		if err := s.node.Leave(ctx, from, f.Room); err != nil {
			return s.reply(ctx, from, "cannot leave "+f.Room+": "+err.Error())
		}
		event.Kind = "left" // told to the room and to the one who left
		if _, err := s.node.SendToClient(ctx, from, mustJSON(event)); err != nil {
			return s.reply(ctx, from, err.Error())
		}
	case "say":
		// Anyone may speak in any room here; check your own membership
		// data first if rooms are private.
		event.Kind, event.Text = "message", f.Text
	default:
		return s.reply(ctx, from, "unknown op "+f.Op)
	}
	// One round trip to Redis; the message goes to the nodes with members
	// in the room, and each writes it to its members' sockets.
	if _, err := s.node.Broadcast(ctx, f.Room, mustJSON(event)); err != nil {
		return s.reply(ctx, from, "not delivered: "+err.Error())
	}
	return nil
}

// reply sends an error event to one client.
func (s *Server) reply(ctx context.Context, clientID, text string) error {
	_, _ = s.node.SendToClient(ctx, clientID, mustJSON(Event{Kind: "error", Text: text}))
	return nil
}

// Close closes the client connections (1001, going away), deletes the
// node's registrations and stops the Router.
func (s *Server) Close() {
	if s.node != nil {
		_ = s.node.Close()
	}
	if s.router != nil {
		_ = s.router.Close()
	}
	if s.frames != nil {
		_ = s.frames.Close()
	}
}

func mustJSON(v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return data
}
