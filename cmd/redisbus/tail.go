package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
)

// TailMessage is a message tail printed: from a stream (ID is its entry
// ID) or a Pub/Sub channel (Channel is set).
type TailMessage struct {
	Stream  string `json:"stream,omitempty"`
	ID      string `json:"id,omitempty"`
	Channel string `json:"channel,omitempty"`
	Message
}

func newTailCommand(c *console) *cobra.Command {
	var (
		pubsub, sharded bool
		from            string
		count           int
	)
	cmd := &cobra.Command{
		Use:   "tail TOPIC",
		Short: "Print a stream's new entries, or a Pub/Sub channel's messages, decoded",
		Long: `Print a stream's new entries, or with --pubsub a Pub/Sub channel's messages,
as they arrive, decoded as redisbus subscribers decode them (UUID,
metadata, payload). With --json, one JSON object per line.

TOPIC must be a stream unless --pubsub is given: a channel is not a key,
so nothing in Redis tells a channel from a stream not created yet.`,
		Args: cobra.ExactArgs(1),
	}
	cmd.Flags().BoolVar(&pubsub, "pubsub", false, "TOPIC is a Pub/Sub channel (SUBSCRIBE)")
	cmd.Flags().BoolVar(&sharded, "sharded", false, "TOPIC is a sharded Pub/Sub channel (SSUBSCRIBE, Redis 7+); implies --pubsub")
	cmd.Flags().StringVar(&from, "from", "$", "stream entry ID to start after: $ for new entries only, 0 for the whole stream")
	cmd.Flags().IntVar(&count, "count", 0, "exit after this many messages (0: run until interrupted)")
	cmd.RunE = c.command(nil, func(ctx context.Context, args []string) error {
		topic := args[0]
		var err error
		if pubsub || sharded {
			err = c.tailPubSub(ctx, topic, sharded, count)
		} else {
			missing := failf(exitNotFound, "no stream named %q (for a Pub/Sub channel, add --pubsub)", topic)
			if err := c.requireStream(ctx, topic, missing); err != nil {
				return err
			}
			err = c.tailStream(ctx, topic, from, count)
		}
		if errors.Is(err, context.Canceled) {
			return nil // Ctrl-C is how tail ends
		}
		return err
	})
	return cmd
}

// tailStream prints the entries of stream after from.
func (c *console) tailStream(ctx context.Context, stream, from string, count int) error {
	if from == "$" { // resolve it once: "$" on every read would skip what came between reads
		last, err := c.client.XInfoStream(ctx, stream).Result()
		if err != nil {
			return err
		}
		from = last.LastGeneratedID
	}
	c.notef("Tailing stream %s after %s (Ctrl-C to stop)", stream, from)
	// A blocked XREAD does not see ctx end; closing the connection ends it.
	stop := context.AfterFunc(ctx, func() { _ = c.client.Close() })
	defer stop()
	printed := 0
	for {
		read, err := c.client.XRead(ctx, &redis.XReadArgs{Streams: []string{stream, from}, Count: 100, Block: 5 * time.Second}).Result()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, redis.Nil):
			continue
		case err != nil:
			return err
		}
		for _, e := range read[0].Messages {
			from = e.ID
			if err := c.printTail(TailMessage{Stream: stream, ID: e.ID, Message: decodeEntry(e.Values)}); err != nil {
				return err
			}
			if printed++; printed == count {
				return nil
			}
		}
	}
}

// tailPubSub prints the messages published to channel.
func (c *console) tailPubSub(ctx context.Context, channel string, sharded bool, count int) error {
	subscribe := c.client.Subscribe
	if sharded {
		subscribe = c.client.SSubscribe
	}
	sub := subscribe(ctx, channel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription's confirmation
		return err
	}
	c.notef("Tailing Pub/Sub channel %s (Ctrl-C to stop)", channel)
	printed := 0
	// A blocked ReceiveMessage would not see ctx end. The subscriptions'
	// confirmations tell when the client subscribed again after losing
	// its connection: Pub/Sub keeps nothing for the time in between.
	received := sub.ChannelWithSubscriptions()
	lastHeard := time.Now()
	for {
		var next any
		select {
		case <-ctx.Done():
			return ctx.Err()
		case next = <-received:
		}
		if next == nil {
			return errors.New("the subscription ended")
		}
		if _, ok := next.(*redis.Subscription); ok {
			now := time.Now()
			c.notef("redisbus: reconnected to Redis; messages published between %s and %s, if any, were missed (Pub/Sub keeps none)",
				lastHeard.Format("15:04:05.000"), now.Format("15:04:05.000"))
			lastHeard = now
			continue
		}
		msg, ok := next.(*redis.Message)
		if !ok {
			continue
		}
		lastHeard = time.Now()
		if err := c.printTail(TailMessage{Channel: channel, Message: decodePubSub([]byte(msg.Payload))}); err != nil {
			return err
		}
		if printed++; printed == count {
			return nil
		}
	}
}

// printTail prints one message on one line.
func (c *console) printTail(m TailMessage) error {
	if c.json {
		return json.NewEncoder(c.stdout).Encode(m) // one object per line
	}
	where := m.ID
	if m.Channel != "" {
		where = time.Now().Format("15:04:05.000")
	}
	line := where + "  uuid=" + dash(m.UUID)
	if md := metadataText(m.Metadata); md != "" {
		line += "  " + md
	}
	_, err := fmt.Fprintln(c.stdout, line+"  "+payloadText(m.Message, 0))
	return err
}
