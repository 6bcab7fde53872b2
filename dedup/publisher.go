package dedup

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
)

// Publisher is a message.Publisher that publishes a message once per topic
// within the Window: a Publish of a message whose UUID it published to the
// topic within the Window (in this process or another) leaves that message
// out. A retried Publish, after an error or a crash, is then stored once.
//
// Over a *redisbus.StreamsPublisher it uses StreamsPublisher.PublishOnce:
// the check and the XADD (or, for a delayed message, the scheduling) are
// one Lua script, so a message is stored once per Window whatever happens
// (a lost reply, a crash at any point, two processes at once). Its marks
// are kept beside the stream (see PublishOnce); Prefix and Lease do not
// apply.
//
// Over any other publisher, it claims each message's key (SET NX, for
// Lease, renewed while Publish runs), publishes the messages it claimed,
// and marks them published for the Window once Publish returned nil. A
// Publish that fails deletes its claims, so its retry publishes; a message
// another Publish holds makes Publish fail with ErrInProgress, publishing
// nothing. No message is dropped that was not published. A message is
// published twice only when the inner Publish stored it and returned an
// error (its retry publishes it again), or when the process died between
// the inner Publish and the mark (another process publishes it once the
// claim lapses). Two round trips per Publish call, besides the inner one.
//
// A copy left out is not acked: Publish acks nothing it publishes.
// (Watermill's Deduplicator.PublisherDecorator marks a message before it
// publishes and acks the copies it drops: a Publish that fails leaves the
// mark, and the retry drops the message.)
type Publisher struct {
	pub     message.Publisher
	streams *redisbus.StreamsPublisher
	client  redis.UniversalClient
	prefix  string
	window  time.Duration
	lease   time.Duration
	logger  watermill.LoggerAdapter

	published, duplicates, inProgress, errors atomic.Uint64
}

// PublisherStats are counters since the Publisher was created.
type PublisherStats struct {
	Published  uint64 // messages published
	Duplicates uint64 // messages left out: published within the Window
	InProgress uint64 // messages another Publish held (the call failed with ErrInProgress)
	// Errors counts claims and marks that Redis failed; a failed claim
	// fails the Publish, a failed mark leaves the claim to lapse.
	Errors uint64
}

// NewPublisher wraps pub. A nil logger means no logging. Config.Key is not
// used: a message is known by its topic and UUID.
func NewPublisher(pub message.Publisher, config Config, logger watermill.LoggerAdapter) (*Publisher, error) {
	if pub == nil {
		return nil, errors.New("dedup: cannot wrap a nil publisher")
	}
	config.setDefaults()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	streams, _ := pub.(*redisbus.StreamsPublisher)
	return &Publisher{
		pub: pub, streams: streams, client: config.Client, prefix: config.Prefix,
		window: config.Window, lease: config.Lease, logger: logger,
	}, nil
}

// PublisherDecorator returns NewPublisher as a message.PublisherDecorator,
// for Router.AddPublisherDecorators and the like.
func PublisherDecorator(config Config, logger watermill.LoggerAdapter) message.PublisherDecorator {
	return func(pub message.Publisher) (message.Publisher, error) {
		return NewPublisher(pub, config, logger)
	}
}

// Publish publishes those of msgs not published to topic within the Window.
// The first message's context bounds the claims' and marks' round trips.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if len(msgs) == 0 {
		return p.pub.Publish(topic)
	}
	if p.streams != nil {
		results, err := p.streams.PublishOnce(topic, p.window, msgs...)
		if err != nil {
			return err
		}
		for _, r := range results {
			if r.Duplicate {
				p.duplicates.Add(1)
			} else {
				p.published.Add(1)
			}
		}
		return nil
	}

	ctx := msgs[0].Context()
	value := claimValue(newToken())
	keys := make([]string, len(msgs))
	for i, msg := range msgs {
		keys[i] = key(p.prefix, "topic", topic, msg.UUID)
	}
	fresh, freshKeys, err := p.claim(ctx, keys, value, msgs)
	if err != nil {
		return err
	}
	if len(fresh) == 0 {
		return nil
	}
	stop := p.keepClaims(freshKeys, value)
	err = p.pub.Publish(topic, fresh...)
	stop()
	if err != nil {
		p.release(freshKeys, value)
		return err
	}
	p.published.Add(uint64(len(fresh)))
	p.markPublished(freshKeys)
	return nil
}

// claim claims every message's key in one round trip, and returns the
// messages to publish: all but those published within the Window. When
// another Publish holds one of them, it releases its claims and fails.
func (p *Publisher) claim(ctx context.Context, keys []string, value string, msgs []*message.Message) ([]*message.Message, []string, error) {
	cmds := make([]*redis.Cmd, len(keys))
	_, err := p.client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = pipe.Do(ctx, "set", k, value, "nx", "get", "px", p.lease.Milliseconds())
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		p.errors.Add(1)
		p.release(keys, value)
		return nil, nil, fmt.Errorf("dedup: claim messages: %w", err)
	}
	var fresh []*message.Message
	var freshKeys []string
	claimed := make(map[string]bool, len(keys))
	var busy error
	for i, cmd := range cmds {
		found, err := cmd.Text()
		switch {
		case claimed[keys[i]]:
			p.duplicates.Add(1) // a repeat within the call: its claim is the earlier one's
			continue
		case errors.Is(err, redis.Nil), err == nil && found == value:
			fresh, freshKeys = append(fresh, msgs[i]), append(freshKeys, keys[i])
			claimed[keys[i]] = true
		case err != nil:
			p.errors.Add(1)
			busy = fmt.Errorf("dedup: claim message %s: %w", msgs[i].UUID, err)
		case isDone(found):
			p.duplicates.Add(1)
		default:
			p.inProgress.Add(1)
			busy = fmt.Errorf("%w: message %s", ErrInProgress, msgs[i].UUID)
		}
	}
	if busy != nil {
		p.release(keys, value) // only what holds this call's claim goes
		return nil, nil, busy
	}
	return fresh, freshKeys, nil
}

// keepClaims renews the claims every third of Lease until stop is called,
// so that a Publish slower than Lease keeps its messages to itself.
func (p *Publisher) keepClaims(keys []string, value string) (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		ticker := time.NewTicker(p.lease / 3)
		defer ticker.Stop()
		for {
			select {
			case <-done:
				return
			case <-ticker.C:
				ctx, cancel := context.WithTimeout(context.Background(), p.lease/3)
				_, err := p.client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
					for _, k := range keys {
						// EVAL: rare (a Publish slower than Lease/3), and a
						// pipeline cannot fall back from EVALSHA.
						pipe.Eval(ctx, renewSource, []string{k}, value, p.lease.Milliseconds())
					}
					return nil
				})
				cancel()
				if err != nil {
					p.errors.Add(1)
				}
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

// markPublished marks the keys published for the Window, in one round
// trip. A mark Redis fails leaves the claim, which lapses after Lease.
func (p *Publisher) markPublished(keys []string) {
	ctx, cancel := context.WithTimeout(context.Background(), finishTimeout)
	defer cancel()
	_, err := p.client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, k := range keys {
			pipe.Set(ctx, k, done, p.window)
		}
		return nil
	})
	if err != nil {
		p.errors.Add(1)
		p.logger.Error("Cannot mark messages published; their copies are kept out only until the claims lapse", err, watermill.LogFields{"messages": len(keys)})
	}
}

// release deletes the claims, in one round trip.
func (p *Publisher) release(keys []string, value string) {
	if len(keys) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), finishTimeout)
	defer cancel()
	_, err := p.client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, k := range keys {
			pipe.Eval(ctx, releaseSource, []string{k}, value)
		}
		return nil
	})
	if err != nil {
		p.errors.Add(1)
		p.logger.Error("Cannot release messages' claims; their retries wait until the claims lapse", err, watermill.LogFields{"messages": len(keys)})
	}
}

// Stats returns the Publisher's counters. Over a StreamsPublisher, only
// Published and Duplicates count.
func (p *Publisher) Stats() PublisherStats {
	return PublisherStats{
		Published: p.published.Load(), Duplicates: p.duplicates.Load(),
		InProgress: p.inProgress.Load(), Errors: p.errors.Load(),
	}
}

// Close closes the inner publisher.
func (p *Publisher) Close() error { return p.pub.Close() }

// String names the publisher in logs and metrics.
func (p *Publisher) String() string { return fmt.Sprintf("dedup.Publisher(%v)", p.pub) }
