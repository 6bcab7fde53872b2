package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

// sample is one measurement of one contender in one workload.
type sample struct {
	contender string
	family    string
	workload  string
	size      int

	pubRate, subRate float64 // messages per second
	cmdsPerMsg       float64 // Redis commands per message
	cpuPerMsg        float64 // Redis CPU, microseconds per message
	tripsPerMsg      float64 // client round trips per message
	topCommands      string

	p50, p99, p999 time.Duration // latency workloads

	drain  time.Duration // workload 6: how long the backlog took
	shares []int64       // workload 6: messages each consumer handled

	// Per Redis server (a cluster's masters): CPU in microseconds and
	// commands per message of the run, and how many of the run's topics
	// each master owns (cluster section only).
	masterCPU, masterCmds []float64
	masterTopics          []int

	lost, dups, pending int64
	peer                bool // a compared library: its failures are reported, not fatal
}

func (s sample) failed() string {
	switch {
	case s.lost > 0:
		return fmt.Sprintf("%d lost", s.lost)
	case s.dups > 0:
		return fmt.Sprintf("%d duplicates", s.dups)
	case s.pending > 0:
		return fmt.Sprintf("%d left pending", s.pending)
	}
	return ""
}

// Payloads carry their sequence number and the time they were sent.
func payload(seq int, size int) []byte {
	p := make([]byte, max(size, 16))
	binary.BigEndian.PutUint64(p, uint64(seq))
	for i := 16; i < len(p); i++ {
		p[i] = 'x'
	}
	return p
}

func stamp(p []byte) { binary.BigEndian.PutUint64(p[8:], uint64(time.Now().UnixNano())) }

func sentAt(p []byte) time.Time { return time.Unix(0, int64(binary.BigEndian.Uint64(p[8:]))) }

// tracker counts deliveries by sequence number: unique, duplicates, and
// when all n have arrived.
type tracker struct {
	seen   []atomic.Uint32
	unique atomic.Int64
	dups   atomic.Int64
	n      int64
	done   chan struct{}
	first  atomic.Int64 // unix nanos of the first delivery
	last   atomic.Int64
}

func newTracker(n int) *tracker {
	return &tracker{seen: make([]atomic.Uint32, n), n: int64(n), done: make(chan struct{})}
}

func (t *tracker) record(p []byte) {
	if len(p) < 16 {
		return
	}
	seq := binary.BigEndian.Uint64(p)
	if seq >= uint64(len(t.seen)) {
		return
	}
	now := time.Now().UnixNano()
	t.first.CompareAndSwap(0, now)
	if t.seen[seq].Add(1) > 1 {
		t.dups.Add(1)
		return
	}
	if t.unique.Add(1) == t.n {
		t.last.Store(now)
		close(t.done)
	}
}

// tally records in s what was lost and duplicated.
func (t *tracker) tally(s *sample) {
	s.lost, s.dups = t.n-t.unique.Load(), t.dups.Load()
}

func (t *tracker) wait(ctx context.Context, timeout time.Duration) error {
	select {
	case <-t.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(timeout):
		return fmt.Errorf("%d of %d messages arrived", t.unique.Load(), t.n)
	}
}

// workloadTimeout bounds any one run; a run that hits it reports loss.
const workloadTimeout = 3 * time.Minute

// publishers runs publish(i) for i in [0, n) on workers goroutines and
// returns how long it took.
func publishers(n, workers int, publish func(i int) error) (time.Duration, error) {
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := publish(i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// publishAll is publishers for a Watermill publisher. A publisher that
// queues (redisbus Pub/Sub with Async) is flushed before the clock stops:
// the time is until Redis has every message.
func publishAll(ctx context.Context, pub message.Publisher, n, workers int, publish func(i int) error) (time.Duration, error) {
	d, err := publishers(n, workers, publish)
	if err != nil {
		return 0, err
	}
	if f, ok := pub.(interface{ Flush(context.Context) error }); ok {
		start := time.Now()
		if err := f.Flush(ctx); err != nil {
			return 0, err
		}
		d += time.Since(start)
	}
	return d, nil
}

func messages(n, size int) []*message.Message {
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), payload(i, size))
	}
	return msgs
}

// initTopic makes sure the subscriber will see what is published next:
// subscribed (Pub/Sub), or its consumer group created (Streams).
func initTopic(c *contender, e *env, sub message.Subscriber, topic string) error {
	if init, ok := sub.(message.SubscribeInitializer); ok {
		return init.SubscribeInitialize(topic)
	}
	// As watermill-benchmark does: subscribe once with a throwaway
	// instance, which creates the group.
	_, throwaway, release := c.watermill(e, 0)
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := throwaway.Subscribe(ctx, topic)
	return err
}

// consume runs a Router whose handlers (one per topic) only record (and so
// ack) each message, until the tracker has all of them; it returns the
// time from starting the Router.
func consume(ctx context.Context, sub message.Subscriber, topics []string, t *tracker, latencies *latencyLog) (time.Duration, error) {
	start := time.Now()
	stop, err := startRouter(ctx, sub, topics, t, latencies)
	if err != nil {
		return 0, err
	}
	defer stop()
	if err := t.wait(ctx, workloadTimeout); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// startRouter starts a Router recording the topics' messages and returns
// once it runs.
func startRouter(ctx context.Context, sub message.Subscriber, topics []string, t *tracker, latencies *latencyLog) (func(), error) {
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, watermill.NopLogger{})
	if err != nil {
		return nil, err
	}
	for i, topic := range topics {
		router.AddConsumerHandler("bench-"+strconv.Itoa(i), topic, sub, func(msg *message.Message) error {
			if latencies != nil {
				latencies.add(time.Since(sentAt(msg.Payload)))
			}
			// Ack before recording: when the last message is recorded the
			// run ends and the Router closes, and every ack must have been
			// given.
			msg.Ack()
			t.record(msg.Payload)
			return nil
		})
	}
	go func() { _ = router.Run(context.Background()) }()
	select {
	case <-router.Running():
		return func() { _ = router.Close() }, nil
	case <-ctx.Done():
		_ = router.Close()
		return nil, ctx.Err()
	}
}

// measure wraps a run with the Redis cost accounting.
func measure(ctx context.Context, e *env, s *sample, n int, run func() error) error {
	return measureOn(ctx, []*redis.Client{e.admin}, e.trips, s, n, run)
}

// measureOn is measure on several servers, a cluster's masters: their
// costs are summed, and kept per server in masterCPU and masterCmds.
func measureOn(ctx context.Context, servers []*redis.Client, trips *roundTrips, s *sample, n int, run func() error) error {
	read := func() ([]redisCost, error) {
		costs := make([]redisCost, len(servers))
		for i, server := range servers {
			var err error
			if costs[i], err = readCost(ctx, server); err != nil {
				return nil, err
			}
		}
		return costs, nil
	}
	before, err := read()
	if err != nil {
		return err
	}
	startTrips := trips.n.Load()
	if err := run(); err != nil {
		return err
	}
	after, err := read()
	if err != nil {
		return err
	}
	total := redisCost{calls: map[string]int64{}}
	for i := range servers {
		cost := after[i].since(before[i])
		// INFO itself is a command; the accounting should not count it.
		s.masterCPU = append(s.masterCPU, cost.cpu*1e6/float64(n))
		s.masterCmds = append(s.masterCmds, float64(cost.total()-cost.calls["info"])/float64(n))
		total.cpu += cost.cpu
		for name, calls := range cost.calls {
			total.calls[name] += calls
		}
	}
	s.cmdsPerMsg = float64(total.total()-total.calls["info"]) / float64(n)
	s.cpuPerMsg = total.cpu * 1e6 / float64(n)
	s.tripsPerMsg = float64(trips.n.Load()-startTrips) / float64(n)
	s.topCommands = total.top(float64(n))
	return nil
}

// Workload 1, watermill-benchmark's procedure: publish n messages from 64
// goroutines, one per Publish; then consume them through a Router.
func publishThenConsume(ctx context.Context, e *env, c *contender, n, size int) (sample, error) {
	e = e.of(c)
	s := sample{contender: c.name, family: c.family, workload: "publish then consume", size: size, peer: c.peer}
	topic := "bench-" + watermill.NewShortUUID()
	if c.raw != nil {
		err := measure(ctx, e, &s, n, func() error {
			pub, sub, t, err := c.raw.publishThenConsume(ctx, e, topic, n, size)
			s.pubRate, s.subRate = rate(n, pub), rate(n, sub)
			if t != nil {
				t.tally(&s)
			}
			return err
		})
		s.pending = pendingIf(ctx, e, c, topic)
		cleanup(ctx, e, topic)
		return s, err
	}

	pub, sub, release := c.watermill(e, n)
	msgs := messages(n, size)
	t := newTracker(n)
	err := measure(ctx, e, &s, n, func() error {
		if err := initTopic(c, e, sub, topic); err != nil {
			return err
		}
		pubDur, err := publishAll(ctx, pub, n, 64, func(i int) error { return pub.Publish(topic, msgs[i]) })
		if err != nil {
			return err
		}
		subDur, err := consume(ctx, sub, []string{topic}, t, nil)
		s.pubRate, s.subRate = rate(n, pubDur), rate(n, subDur)
		return err
	})
	release() // flushes acks
	t.tally(&s)
	s.pending = pendingIf(ctx, e, c, topic)
	cleanup(ctx, e, topic)
	return s, err
}

// Workload 2: publish and consume at the same time; the rate is n over the
// time from the first publish to the last delivery.
func concurrent(ctx context.Context, e *env, c *contender, n, size int) (sample, error) {
	e = e.of(c)
	s := sample{contender: c.name, family: c.family, workload: "publish and consume at once", size: size, peer: c.peer}
	topic := "bench-" + watermill.NewShortUUID()
	if c.raw != nil {
		err := measure(ctx, e, &s, n, func() error {
			d, t, err := c.raw.concurrent(ctx, e, topic, n, size)
			s.subRate = rate(n, d)
			if t != nil {
				t.tally(&s)
			}
			return err
		})
		s.pending = pendingIf(ctx, e, c, topic)
		cleanup(ctx, e, topic)
		return s, err
	}

	pub, sub, release := c.watermill(e, n)
	msgs := messages(n, size)
	t := newTracker(n)
	err := measure(ctx, e, &s, n, func() error {
		if err := initTopic(c, e, sub, topic); err != nil {
			return err
		}
		start := time.Now()
		consumed := make(chan error, 1)
		go func() {
			_, err := consume(ctx, sub, []string{topic}, t, nil)
			consumed <- err
		}()
		if _, err := publishAll(ctx, pub, n, 64, func(i int) error { return pub.Publish(topic, msgs[i]) }); err != nil {
			return err
		}
		err := <-consumed
		s.subRate = rate(n, time.Since(start))
		return err
	})
	release()
	t.tally(&s)
	s.pending = pendingIf(ctx, e, c, topic)
	cleanup(ctx, e, topic)
	return s, err
}

// Workload 3: Publish(topic, 100 messages) from 16 goroutines.
func batched(ctx context.Context, e *env, c *contender, n, size int) (sample, error) {
	e = e.of(c)
	const batch = 100
	s := sample{contender: c.name, family: c.family, workload: "batched publish (100 per call)", size: size, peer: c.peer}
	topic := "bench-" + watermill.NewShortUUID()
	n = (n / batch) * batch
	if c.raw != nil {
		err := measure(ctx, e, &s, n, func() error {
			d, err := c.raw.publish(ctx, e, topic, n, size)
			s.pubRate = rate(n, d)
			return err
		})
		cleanup(ctx, e, topic)
		return s, err
	}
	pub, sub, release := c.watermill(e, n)
	defer release()
	msgs := messages(n, size)
	err := measure(ctx, e, &s, n, func() error {
		if err := initTopic(c, e, sub, topic); err != nil {
			return err
		}
		d, err := publishAll(ctx, pub, n/batch, 16, func(i int) error { return pub.Publish(topic, msgs[i*batch:(i+1)*batch]...) })
		s.pubRate = rate(n, d)
		return err
	})
	cleanup(ctx, e, topic)
	return s, err
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func pendingIf(ctx context.Context, e *env, c *contender, topic string) int64 {
	if !c.stream {
		return 0
	}
	return pendingEntries(ctx, e, topic)
}

func cleanup(ctx context.Context, e *env, topic string) {
	_ = e.admin.Del(ctx, topic, topic+":dead").Err()
}

// latencyLog collects latencies, up to a bound.
type latencyLog struct {
	mu     sync.Mutex
	values []time.Duration
}

func (l *latencyLog) add(d time.Duration) {
	l.mu.Lock()
	if len(l.values) < 1_000_000 {
		l.values = append(l.values, d)
	}
	l.mu.Unlock()
}

func (l *latencyLog) percentiles() (p50, p99, p999 time.Duration, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.values) == 0 {
		return 0, 0, 0, errors.New("no latency measured")
	}
	sort.Slice(l.values, func(i, j int) bool { return l.values[i] < l.values[j] })
	at := func(q float64) time.Duration { return l.values[min(len(l.values)-1, int(q*float64(len(l.values))))] }
	return at(0.50), at(0.99), at(0.999), nil
}

// openLoop calls send for n messages at a fixed rate, from a few workers so
// that one slow send does not delay the schedule.
func openLoop(ctx context.Context, perSecond, n int, send func(i int) error) error {
	jobs := make(chan int, n)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range 8 {
		wg.Go(func() {
			for i := range jobs {
				if err := send(i); err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	start := time.Now()
	interval := time.Second / time.Duration(perSecond)
	for i := range n {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	return ctx.Err()
}

// Workload 4: latency from Publish to the handler at a fixed rate.
func latency(ctx context.Context, e *env, c *contender, perSecond int, duration time.Duration, size int) (sample, error) {
	e = e.of(c)
	s := sample{contender: c.name, family: c.family, workload: fmt.Sprintf("latency at %d msg/s", perSecond), size: size, peer: c.peer}
	topic := "bench-" + watermill.NewShortUUID()
	n := int(float64(perSecond) * duration.Seconds())
	log := &latencyLog{}
	var err error
	if c.raw != nil {
		err = c.raw.latency(ctx, e, topic, perSecond, n, size, log)
	} else {
		pub, sub, release := c.watermill(e, n)
		t := newTracker(n)
		err = initTopic(c, e, sub, topic)
		var stop func()
		if err == nil {
			stop, err = startRouter(ctx, sub, []string{topic}, t, log)
		}
		if err == nil {
			err = openLoop(ctx, perSecond, n, func(i int) error {
				p := payload(i, size)
				stamp(p)
				return pub.Publish(topic, message.NewMessage(watermill.NewUUID(), p))
			})
			if err == nil {
				err = t.wait(ctx, workloadTimeout)
			}
			stop()
		}
		release()
		t.tally(&s)
	}
	cleanup(ctx, e, topic)
	if err != nil {
		return s, err
	}
	s.p50, s.p99, s.p999, err = log.percentiles()
	return s, err
}
