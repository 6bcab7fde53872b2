package wsroute

import (
	"context"
	"fmt"
	"strconv"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Metadata keys that address a message to WebSocket clients. A message
// with one of them, produced by a Router handler wrapped in Deliver or
// consumed by DeliveryHandler, is written to the recipients' sockets
// wherever they are connected. Its payload is what is written.
const (
	MetadataToClient = "wsroute_to_client" // a client ID
	MetadataToRoom   = "wsroute_to_room"   // a room
	MetadataToAll    = "wsroute_to_all"    // "true": every connection on every node
)

// Addressed reports whether msg carries a wsroute address.
func Addressed(msg *message.Message) bool {
	return msg.Metadata.Get(MetadataToClient) != "" || msg.Metadata.Get(MetadataToRoom) != "" ||
		msg.Metadata.Get(MetadataToAll) == "true"
}

// Send routes an addressed message. Recipients that are offline are not an
// error (see Stats); a Redis failure is.
func (n *Node) Send(ctx context.Context, msg *message.Message) (Result, error) {
	var opts []SendOption
	if value := msg.Metadata.Get(MetadataHistory); value != "" {
		keep, err := strconv.ParseBool(value)
		switch {
		case err != nil:
			// Sent as Config.History says: failing would make Deliver's
			// Router retry the handler's input for ever.
			n.logger.Error("Metadata wsroute_history is not true or false; sending as Config.History says", err,
				watermill.LogFields{"message_uuid": msg.UUID, "value": value})
		case keep:
			opts = append(opts, WithHistory())
		default:
			opts = append(opts, WithoutHistory())
		}
	}
	switch {
	case msg.Metadata.Get(MetadataToClient) != "":
		return n.SendToClient(ctx, msg.Metadata.Get(MetadataToClient), msg.Payload, opts...)
	case msg.Metadata.Get(MetadataToRoom) != "":
		return n.Broadcast(ctx, msg.Metadata.Get(MetadataToRoom), msg.Payload, opts...)
	case msg.Metadata.Get(MetadataToAll) == "true":
		return n.BroadcastAll(ctx, msg.Payload)
	}
	return Result{}, fmt.Errorf("wsroute: message %s has no %s, %s or %s metadata", msg.UUID, MetadataToClient, MetadataToRoom, MetadataToAll)
}

// Deliver is Router middleware: of the messages a handler produces, those
// addressed to WebSocket clients are routed to them and not published;
// the others pass through. If routing fails, the handler's input is nacked
// and retried.
func (n *Node) Deliver(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		produced, err := h(msg)
		if err != nil {
			return produced, err
		}
		rest := produced[:0:0]
		for _, out := range produced {
			if !Addressed(out) {
				rest = append(rest, out)
				continue
			}
			if _, err := n.Send(msg.Context(), out); err != nil {
				return nil, err
			}
		}
		return rest, nil
	}
}

// DeliveryHandler consumes a topic of addressed messages (from any
// service) and routes each to its recipients; use it with
// Router.AddConsumerHandler.
func (n *Node) DeliveryHandler() message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		_, err := n.Send(msg.Context(), msg)
		return err
	}
}
