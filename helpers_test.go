package redisbus_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// waitTimeout bounds every wait for something that should happen at once on
// loopback; it is only reached when the code under test is broken.
const waitTimeout = 10 * time.Second

func newPublisher(t *testing.T, config redisbus.PublisherConfig) *redisbus.Publisher {
	t.Helper()
	if config.Client == nil {
		config.Client = pubsubtest.NewClient(t)
	}
	pub, err := redisbus.NewPublisher(config, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, pub.Close()) })
	return pub
}

func newSubscriber(t *testing.T, config redisbus.SubscriberConfig, logger watermill.LoggerAdapter) *redisbus.Subscriber {
	t.Helper()
	if config.Client == nil {
		config.Client = pubsubtest.NewClient(t)
	}
	sub, err := redisbus.NewSubscriber(config, logger)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, sub.Close()) })
	return sub
}

func publish(t *testing.T, pub message.Publisher, topic string, payloads ...string) []*message.Message {
	t.Helper()
	msgs := make([]*message.Message, len(payloads))
	for i, p := range payloads {
		msgs[i] = message.NewMessage(watermill.NewUUID(), []byte(p))
	}
	require.NoError(t, pub.Publish(topic, msgs...))
	return msgs
}

// next returns the next message from ch without acking it.
func next(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case msg, ok := <-ch:
		require.True(t, ok, "subscription channel closed")
		return msg
	case <-time.After(waitTimeout):
		t.Fatal("no message within", waitTimeout)
		return nil
	}
}

// receive reads n messages from ch, acking each, and returns their payloads.
func receive(t *testing.T, ch <-chan *message.Message, n int) []string {
	t.Helper()
	payloads := make([]string, 0, n)
	for range n {
		msg := next(t, ch)
		payloads = append(payloads, string(msg.Payload))
		msg.Ack()
	}
	return payloads
}

// flush returns when sub has read everything published to its connection so
// far: Redis answers a SUBSCRIBE on a connection after the messages already
// queued on it, and the read loop handles them in order. Not for Sharded
// subscribers, which have a connection per topic.
func flush(t *testing.T, sub *redisbus.Subscriber) {
	t.Helper()
	require.NoError(t, sub.SubscribeInitialize(pubsubtest.Topic(t)+"-barrier"))
}

// pipelineCounter is a go-redis hook counting the round trips that carry a
// given command, and how many of it they carry. (Connection set-up commands
// such as HELLO pass through hooks too.)
type pipelineCounter struct {
	command    string
	roundTrips atomic.Int64
	commands   atomic.Int64
}

func (c *pipelineCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *pipelineCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.count([]redis.Cmder{cmd})
		return next(ctx, cmd)
	}
}

func (c *pipelineCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.count(cmds)
		return next(ctx, cmds)
	}
}

func (c *pipelineCounter) count(cmds []redis.Cmder) {
	n := 0
	for _, cmd := range cmds {
		if cmd.Name() == c.command {
			n++
		}
	}
	if n > 0 {
		c.roundTrips.Add(1)
		c.commands.Add(int64(n))
	}
}
