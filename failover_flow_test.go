package redisbus_test

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
)

// flow publishes numbered messages from any number of goroutines, as an
// application would (retrying a failed Publish after a pause), and records
// when each was acknowledged and when it first reached each receiver (a
// Pub/Sub subscriber, or a whole consumer group), for the failover tests.
type flow struct {
	mu        sync.Mutex
	next      int                 // the number the next publish takes
	acked     map[int]time.Time   // when Publish returned nil
	receivers []map[int]time.Time // first arrival at each receiver
	repeats   int                 // arrivals of a number the receiver had
}

func newFlow(receivers int) *flow {
	f := &flow{acked: map[int]time.Time{}}
	for range receivers {
		f.receivers = append(f.receivers, map[int]time.Time{})
	}
	return f
}

// publish publishes until ctx ends. A number whose Publish failed is
// published again (as a new message: the failed one may have been stored
// anyway, so it may arrive twice).
func (f *flow) publish(ctx context.Context, pub message.Publisher, topic string) {
	for ctx.Err() == nil {
		f.mu.Lock()
		n := f.next
		f.next++
		f.mu.Unlock()
		for ctx.Err() == nil {
			msg := message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(n)))
			if err := pub.Publish(topic, msg); err != nil {
				time.Sleep(20 * time.Millisecond) // Redis is failing over
				continue
			}
			f.mu.Lock()
			f.acked[n] = time.Now()
			f.mu.Unlock()
			break
		}
		time.Sleep(time.Millisecond)
	}
}

// consume acks messages as receiver number receiver.
func (f *flow) consume(receiver int, messages <-chan *message.Message) {
	for msg := range messages {
		n, _ := strconv.Atoi(string(msg.Payload))
		f.mu.Lock()
		if _, seen := f.receivers[receiver][n]; seen {
			f.repeats++
		} else {
			f.receivers[receiver][n] = time.Now()
		}
		f.mu.Unlock()
		msg.Ack()
	}
}

// longestPause returns the longest time since start that a receiver went
// without an arrival.
func (f *flow) longestPause(start time.Time) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var longest time.Duration
	for _, received := range f.receivers {
		var arrivals []time.Time
		for _, at := range received {
			if at.After(start) {
				arrivals = append(arrivals, at)
			}
		}
		slices.SortFunc(arrivals, time.Time.Compare)
		last := start
		for _, at := range arrivals {
			longest = max(longest, at.Sub(last))
			last = at
		}
	}
	return longest
}

// mark returns the number the next publish takes.
func (f *flow) mark() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.next
}

// recoveryBound is how soon messages must flow again after Redis failed
// over: far above what the failover tests measure (about a second), and
// below what a component that does not follow a failover by itself waits
// for something else to rescue it: 60 s until go-redis reads a cluster's
// slot map again, about 10 s until Sentinel turns a replaced primary into
// a replica (its connections then work again).
const recoveryBound = 6 * time.Second

// awaitFlowSince waits until a message numbered from on arrives at every
// receiver (Pub/Sub loses those published while a subscriber reconnects,
// so any of them will do) and returns how long after start the last
// receiver got one: the interruption. It fails the test after
// recoveryBound.
func (f *flow) awaitFlowSince(t *testing.T, start time.Time, from int, what string) time.Duration {
	t.Helper()
	var arrived time.Time
	require.Eventually(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		arrived = time.Time{}
	receivers:
		for _, received := range f.receivers {
			for n := from; n < f.next; n++ {
				if at, ok := received[n]; ok {
					if at.After(arrived) {
						arrived = at
					}
					continue receivers
				}
			}
			return false
		}
		return true
	}, recoveryBound, 5*time.Millisecond, "messages stopped after %s", what)
	return arrived.Sub(start)
}

// ackedAt returns when the Publish of number n returned.
func (f *flow) ackedAt(n int) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.acked[n]
}

// unreceived returns the numbers acknowledged by a Publish that returned
// before `before` and never reached receiver 0.
func (f *flow) unreceived(before time.Time) []int {
	return f.unreceivedBetween(time.Time{}, before)
}

// unreceivedBetween returns the numbers acknowledged by a Publish that
// returned between from and to and never reached receiver 0.
func (f *flow) unreceivedBetween(from, to time.Time) []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var missing []int
	for n, at := range f.acked {
		if _, ok := f.receivers[0][n]; !ok && at.After(from) && at.Before(to) {
			missing = append(missing, n)
		}
	}
	slices.Sort(missing)
	return missing
}
