package redisbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/internal/sendonce"
	"github.com/redisbus/watermill-redisbus/internal/slotmap"
)

// StreamTrim bounds a stream.
//
// The zero StreamTrim trims only what is safe: the entries that every
// consumer group of the stream has read and acked (below each group's
// oldest pending entry and its last-delivered ID). A group that falls
// behind keeps its backlog, however old or long; a stream without groups
// is not trimmed, since its entries wait for the first group. Fan-out
// readers (no group) are not waited for.
//
// MaxLen and MaxAge are hard caps instead: the stream keeps at most that
// many entries, or none older, whether groups consumed them or not, and
// consumed entries are kept up to the caps (a history new groups can
// read). What a cap removes before some group consumed it is counted
// (StreamsPublisherStats.TrimmedUnconsumed) and logged.
type StreamTrim struct {
	// MaxLen caps the stream at about this many entries.
	MaxLen int64
	// MaxAge caps the age of entries.
	MaxAge time.Duration
	// Unbounded turns trimming off for the stream.
	Unbounded bool
}

// trimInterval is how often a publisher trims each topic it publishes to.
// A trim is one script run, not a cost on every publish.
const trimInterval = time.Second

// StreamsPublisherConfig configures a StreamsPublisher.
type StreamsPublisherConfig struct {
	// Client runs the XADDs. Required; never closed by the publisher.
	Client redis.UniversalClient

	// Marshaler encodes messages as entry fields. Nil means
	// DefaultStreamsMarshaler.
	Marshaler StreamsMarshaler

	// Trim bounds every stream the publisher writes to, unless TopicTrim
	// names the topic. The zero value trims what every consumer group has
	// consumed; see StreamTrim.
	Trim StreamTrim
	// TopicTrim overrides Trim per topic.
	TopicTrim map[string]StreamTrim

	// MaxBatchSize bounds how many XADDs go in one pipeline when concurrent
	// Publish calls are coalesced. Zero means 512.
	MaxBatchSize int

	// CloseTimeout bounds how long Close waits for publishes that Redis has
	// not answered yet; those still unanswered then fail with an error
	// saying their entries may or may not be stored. Zero means 5 seconds.
	CloseTimeout time.Duration

	// WaitReplicas makes Publish return only once this many replicas have
	// every entry of the call: Redis replicates asynchronously, so an
	// entry the primary acknowledged is lost if it fails over before a
	// replica got it. Each pipeline of coalesced publishes ends with one
	// WAIT (not one per message). When fewer replicas confirm within
	// WaitTimeout, Publish fails with ErrNotReplicated: the entries are
	// stored on the primary, and publishing them again may store them
	// twice. Zero means no waiting. Not with Redis Cluster, where WAIT
	// would confirm only one master's writes.
	WaitReplicas int
	// WaitTimeout bounds each WAIT. Zero means 1 second; it must be at
	// least a millisecond and stay below the client's ReadTimeout. The
	// ACL user needs +wait.
	WaitTimeout time.Duration
}

func (c *StreamsPublisherConfig) setDefaults() {
	if c.Marshaler == nil {
		c.Marshaler = DefaultStreamsMarshaler{}
	}
	if c.MaxBatchSize == 0 {
		c.MaxBatchSize = 512
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = 5 * time.Second
	}
	if c.WaitReplicas > 0 && c.WaitTimeout == 0 {
		c.WaitTimeout = time.Second
	}
}

// Validate reports the first invalid field, if any.
func (c StreamsPublisherConfig) Validate() error {
	switch {
	case c.Client == nil:
		return configError("StreamsPublisherConfig.Client", "is required")
	case c.MaxBatchSize < 0:
		return configError("StreamsPublisherConfig.MaxBatchSize", "must not be negative")
	case c.CloseTimeout < 0:
		return configError("StreamsPublisherConfig.CloseTimeout", "must not be negative")
	case c.WaitReplicas < 0:
		return configError("StreamsPublisherConfig.WaitReplicas", "must not be negative")
	case c.WaitTimeout < 0:
		return configError("StreamsPublisherConfig.WaitTimeout", "must not be negative")
	case c.WaitTimeout > 0 && c.WaitTimeout < time.Millisecond:
		// WAIT counts in milliseconds, and WAIT … 0 waits forever.
		return configError("StreamsPublisherConfig.WaitTimeout", "must be at least 1ms (WAIT counts in milliseconds; 0 would wait forever)")
	}
	if c.WaitReplicas > 0 {
		switch client := c.Client.(type) {
		case *redis.ClusterClient, *redis.Ring:
			return configError("StreamsPublisherConfig.WaitReplicas", "is not supported with Redis Cluster or a Ring: WAIT confirms the writes of one node only")
		case *redis.Client:
			wait := c.WaitTimeout
			if wait == 0 {
				wait = time.Second // the default, so that Validate agrees with NewStreamsPublisher
			}
			if read := client.Options().ReadTimeout; read > 0 && wait >= read {
				return configError("StreamsPublisherConfig.WaitTimeout",
					fmt.Sprintf("must be below the client's ReadTimeout (%s), or the client gives up on WAIT first", read))
			}
		}
	}
	for topic, trim := range c.TopicTrim {
		if err := trim.validate(fmt.Sprintf("StreamsPublisherConfig.TopicTrim[%q]", topic)); err != nil {
			return err
		}
	}
	return c.Trim.validate("StreamsPublisherConfig.Trim")
}

func (t StreamTrim) validate(field string) error {
	switch {
	case t.MaxLen < 0:
		return configError(field+".MaxLen", "must not be negative")
	case t.MaxAge < 0:
		return configError(field+".MaxAge", "must not be negative")
	case t.Unbounded && (t.MaxLen > 0 || t.MaxAge > 0):
		return configError(field+".Unbounded", "cannot go with MaxLen or MaxAge")
	}
	return nil
}

// StreamsPublisher is an at-least-once Watermill Publisher over Redis
// Streams (XADD). Publish returns once Redis has stored every message; with
// AOF and appendfsync always, a message acknowledged to the publisher
// survives a Redis crash.
//
// Concurrent Publish calls are coalesced as [Publisher] coalesces them: many goroutines
// publishing one message each share round trips, while a lone call is sent
// at once.
type StreamsPublisher struct {
	config    StreamsPublisherConfig
	logger    watermill.LoggerAdapter
	coalescer *coalescer

	// mu is held for reading by every publish in progress, so Close waits
	// for them and nothing is sent after Close returns.
	mu        sync.RWMutex
	closing   atomic.Bool
	closeOnce sync.Once
	closed    chan struct{} // closed when Close has finished
	closeErr  error

	trimMu sync.Mutex
	trims  map[string]*topicTrim
	// Trims fail, or cut into a lagging group, on every attempt: logged
	// at most once per logInterval.
	trimErrorLog, trimLossLog logThrottle

	trimmed, trimmedUnconsumed atomic.Uint64
	scheduled                  atomic.Uint64
	// retries sends a schedule script again only when Redis did not run it.
	retries sendonce.Policy
}

// topicTrim is when a topic was last trimmed and what was published since.
type topicTrim struct {
	last      time.Time
	published int64
}

// StreamsPublisherStats are counters since the publisher was created.
type StreamsPublisherStats struct {
	// Scheduled counts the messages stored to enter their stream later
	// (Watermill's delay metadata; see docs/streams.md, Delayed messages).
	Scheduled uint64
	Trimmed   uint64 // entries trimmed from streams
	// TrimmedUnconsumed counts entries a MaxLen or MaxAge cap trimmed
	// before some consumer group of the stream had read and acked them.
	TrimmedUnconsumed uint64
}

// NewStreamsPublisher creates a StreamsPublisher. A nil logger means no
// logging.
func NewStreamsPublisher(config StreamsPublisherConfig, logger watermill.LoggerAdapter) (*StreamsPublisher, error) {
	config.setDefaults()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	p := &StreamsPublisher{
		config:    config,
		logger:    logger,
		coalescer: newCoalescer(config.Client, config.MaxBatchSize, config.MaxBatchSize, false),
		trims:     map[string]*topicTrim{},
		closed:    make(chan struct{}),
		retries:   sendonce.PolicyOf(config.Client),
	}
	if config.WaitReplicas > 0 {
		// Before the first call: the flushers read it only after receiving one.
		p.coalescer.wait = &replicaWait{replicas: config.WaitReplicas, timeout: config.WaitTimeout}
	}
	return p, nil
}

// Publish appends msgs to the topic's stream and returns once Redis has
// stored all of them. The messages of one call go in one pipeline, in
// order. It fails when any message's context is done first.
func (p *StreamsPublisher) Publish(topic string, msgs ...*message.Message) error {
	ctx, release := messagesContext(msgs)
	defer release()
	_, err := p.publish(ctx, topic, msgs, 0)
	return err
}

// PublishIDs is Publish with a context, returning the stream entry ID Redis
// gave each message (e.g. "1779520329297-0"); "" for a delayed message,
// which gets its ID when it falls due.
func (p *StreamsPublisher) PublishIDs(ctx context.Context, topic string, msgs ...*message.Message) ([]string, error) {
	call, err := p.publish(ctx, topic, msgs, 0)
	if call == nil || err != nil {
		return nil, err
	}
	ids := make([]string, len(msgs))
	for i, cmd := range call.cmds {
		ids[call.index(i)] = cmd.Val()
	}
	return ids, nil
}

// PublishedOnce is what PublishOnce did with one message.
type PublishedOnce struct {
	// ID is the message's stream entry ID: of the entry stored now or, for
	// a duplicate, of the entry stored earlier.
	ID string
	// Duplicate reports that the stream had stored a message of the same
	// UUID within the window, so that nothing was stored now.
	Duplicate bool
}

// PublishOnce is Publish for messages that must be stored once: a message
// whose UUID the topic's stream stored, through PublishOnce, within window
// is not stored again, and its result names the earlier entry. It returns
// once Redis has answered for every message, with a result per message.
//
// The check and the XADD are one Lua script (lua/xadd_once.lua), so "once"
// holds however the call is repeated: by another process, concurrently, or
// after an error that left its outcome unknown (a lost reply, Close giving
// up, ErrNotReplicated). Publish makes no such promise: retrying it after
// such an error may store the messages twice.
//
// A delayed message is checked and scheduled in one step the same way
// (lua/delayed_schedule.lua); its result has no ID (it gets one when it
// falls due), nor has a later duplicate's. A delayed message and one
// without a delay share the mark: either one stored first keeps the other
// out. The mark runs from the scheduling: a copy published after the
// window, even before the first falls due, is stored again.
//
// Each message leaves a mark of about 150 bytes in Redis for window
// ({topic}:redisbus:dedup:<uuid>, in the stream's hash slot; a UUID over
// 128 bytes is hashed). The ACL user needs +get and +set on those keys
// besides what Publish needs. window must be at least a millisecond.
func (p *StreamsPublisher) PublishOnce(topic string, window time.Duration, msgs ...*message.Message) ([]PublishedOnce, error) {
	if window < time.Millisecond {
		return nil, fmt.Errorf("redisbus: PublishOnce window %s is below a millisecond", window)
	}
	ctx, release := messagesContext(msgs)
	defer release()
	call, err := p.publish(ctx, topic, msgs, window)
	if isRedisError(err, "NOSCRIPT") {
		// Redis does not have the script (it restarted, or failed over):
		// no append ran (the delayed messages' script, which go-redis
		// loads itself, did). Load it, on every master of a cluster, and
		// send the call again; doing so is safe whatever ran, as the
		// scripts find the marks of what did.
		if loadErr := p.config.Client.ScriptLoad(ctx, xaddOnceSource).Err(); loadErr != nil {
			return nil, fmt.Errorf("redisbus: publish to %q: load the publish-once script: %w", topic, loadErr)
		}
		first := call
		call, err = p.publish(ctx, topic, msgs, window)
		if err == nil && first != nil {
			// The delayed ones were scheduled by the first attempt, before
			// its appends failed: the second found their marks.
			call.laterResults = first.laterResults
		}
	}
	if call == nil || err != nil {
		return nil, err
	}
	results := make([]PublishedOnce, len(msgs))
	for i, cmd := range call.onceCmds {
		reply, err := cmd.Slice()
		if err != nil || len(reply) != 2 {
			return nil, fmt.Errorf("redisbus: publish to %q: unexpected reply %v: %w", topic, reply, err)
		}
		id, _ := reply[0].(string)
		duplicate, _ := reply[1].(int64)
		results[call.index(i)] = PublishedOnce{ID: id, Duplicate: duplicate == 1}
	}
	for i, r := range call.laterResults {
		results[call.laterIndexes[i]] = r
	}
	for _, r := range call.repeats {
		results[r[0]] = PublishedOnce{ID: results[r[1]].ID, Duplicate: true}
	}
	return results, nil
}

// publish appends msgs, or schedules those with a delay still ahead, and
// returns the commands of those appended, all successful. A positive once
// makes each XADD a PublishOnce with that window.
func (p *StreamsPublisher) publish(ctx context.Context, topic string, msgs []*message.Message, once time.Duration) (*xaddCall, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closing.Load() {
		return nil, ErrPublisherClosed
	}

	call := &xaddCall{ctx: ctx, stream: topic}
	call.fields = call.one[:0]
	switch {
	case once > 0:
		call.fields = make([][]any, 0, len(msgs))
		call.onceWindow, call.onceKeys = once.Milliseconds(), make([]string, 0, len(msgs))
	case len(msgs) > 1:
		call.fields = make([][]any, 0, len(msgs))
	}
	var later []scheduled
	var firstOf map[string]int // PublishOnce: a UUID's first message in the call
	if once > 0 {
		firstOf = make(map[string]int, len(msgs))
	}
	now := time.Now()
	for i, msg := range msgs {
		if once > 0 {
			// A repeat within the call is the first copy's duplicate,
			// whether either is delayed or not: decided here, in the
			// call's order, as delayed ones are stored before the others.
			if first, repeated := firstOf[msg.UUID]; repeated {
				call.repeats = append(call.repeats, [2]int{i, first})
				call.leaveOut(i)
				continue
			}
			firstOf[msg.UUID] = i
		}
		due, delayed, err := dueOf(msg, now)
		if err != nil {
			return nil, err
		}
		if until := msg.Metadata.Get(delayedUntilKey); delayed && !strings.Contains(until, ".") {
			msg.Metadata.Set(metadataDue, until+"|"+msg.Metadata.Get(delayedForKey)+"|"+strconv.FormatInt(due.UnixMilli(), 10))
		}
		f, err := p.config.Marshaler.Marshal(topic, msg)
		if err != nil {
			return nil, fmt.Errorf("redisbus: marshal message %s: %w", msg.UUID, err)
		}
		if delayed && due.After(now) {
			later = append(later, scheduled{due: due, fields: f})
			if once > 0 {
				later[len(later)-1].mark = dedupKey(topic, msg.UUID)
				call.laterIndexes = append(call.laterIndexes, i)
			}
			call.leaveOut(i)
			continue
		}
		if call.indexes != nil {
			call.indexes = append(call.indexes, i)
		}
		call.fields = append(call.fields, f)
		if once > 0 {
			call.onceKeys = append(call.onceKeys, dedupKey(topic, msg.UUID))
		}
	}
	if len(later) > 0 {
		// Stored before the others are appended: a Publish that fails
		// may have stored some, never appended one out of turn.
		results, err := schedule(ctx, p.config.Client, p.retries, p.coalescer.wait, topic, later, once)
		if err != nil {
			slotmap.Refresh(err, p.config.Client)
			return nil, fmt.Errorf("redisbus: publish to %q: schedule %d delayed messages: %w", topic, len(later), err)
		}
		stored := 0
		for _, r := range results {
			if !r.Duplicate {
				stored++
			}
		}
		p.scheduled.Add(uint64(stored))
		if once > 0 {
			call.laterResults = results
		}
		if len(call.fields) == 0 {
			return call, nil
		}
	}
	if once == 0 {
		call.cmds = call.oneCmd[:]
		if len(call.fields) > 1 {
			call.cmds = make([]*redis.StringCmd, len(call.fields))
		}
	} else {
		call.onceCmds = make([]*redis.Cmd, len(call.fields))
	}
	call.trim = p.trimDue(topic, len(call.fields))

	if err := p.coalescer.do(ctx, len(call.fields), call); err != nil {
		if errors.Is(err, ErrNotReplicated) {
			if cmdErr := call.firstErr(); cmdErr != nil {
				err = cmdErr // not stored at all: that is the news
			}
		}
		// The entries may still be written: at-least-once.
		return nil, fmt.Errorf("redisbus: publish to %q: %w", topic, err)
	}
	if err := call.firstErr(); err != nil {
		// With the call: what it scheduled stands (see PublishOnce).
		return call, fmt.Errorf("redisbus: publish to %q: %w", topic, err)
	}
	if call.trimCmd != nil {
		p.trimDone(topic, call.trimCmd)
	}
	return call, nil
}

// xaddCall is one publish's commands on their way through the coalescer.
// Most calls publish one message, which one and oneCmd hold without
// allocating slices.
type xaddCall struct {
	ctx    context.Context
	stream string
	fields [][]any
	// laterIndexes are the PublishOnce call's messages that were
	// scheduled, and laterResults what became of them; repeats, its
	// messages left out as repeats of an earlier one: {index, first}.
	laterIndexes []int
	laterResults []PublishedOnce
	repeats      [][2]int
	// indexes maps fields to the messages of the Publish call when some
	// of them were delayed; nil when they are all here.
	indexes []int
	trim    []any // when set, lua/trim.lua's arguments: the stream is trimmed after the entries
	cmds    []*redis.StringCmd
	trimCmd *redis.Cmd
	one     [1][]any
	oneCmd  [1]*redis.StringCmd

	// For PublishOnce: each entry is added by lua/xadd_once.lua, with
	// its mark's key (onceKeys, by fields) and the window in
	// milliseconds, instead of cmds.
	onceWindow int64
	onceKeys   []string
	onceCmds   []*redis.Cmd
}

// firstErr returns the error of the first command that failed, if any.
func (c *xaddCall) firstErr() error {
	for _, cmd := range c.cmds {
		if err := cmd.Err(); err != nil {
			return err
		}
	}
	for _, cmd := range c.onceCmds {
		if err := cmd.Err(); err != nil {
			return err
		}
	}
	return nil
}

// leaveOut notes that the i-th message of the call is not appended (it is
// scheduled, or a repeat), so that index maps the appended ones.
func (c *xaddCall) leaveOut(i int) {
	if c.indexes == nil {
		c.indexes = make([]int, 0, i+1)
		for j := range i {
			c.indexes = append(c.indexes, j)
		}
	}
}

// index returns the position in its Publish call of the i-th message
// appended.
func (c *xaddCall) index(i int) int {
	if c.indexes == nil {
		return i
	}
	return c.indexes[i]
}

// addTo adds an XADD per message, each sent at most once: see
// coalescer.send.
func (c *xaddCall) addTo(pipe redis.Pipeliner) {
	for i, f := range c.fields {
		if c.onceCmds != nil {
			// EVALSHA: a pipeline cannot fall back to EVAL by itself;
			// PublishOnce loads the script and sends the call again when
			// Redis answers NOSCRIPT.
			c.onceCmds[i] = redis.NewCmd(c.ctx, append([]any{"evalsha", xaddOnceScript.Hash(), 2, c.stream, c.onceKeys[i], c.onceWindow}, f...)...)
			_ = pipe.Process(c.ctx, sendonce.Cmd{Cmd: c.onceCmds[i]})
			continue
		}
		c.cmds[i] = redis.NewStringCmd(c.ctx, append([]any{"xadd", c.stream, "*"}, f...)...)
		_ = pipe.Process(c.ctx, sendonce.StringCmd{StringCmd: c.cmds[i]})
	}
	if c.trim != nil {
		// EVAL, not EVALSHA: a pipeline cannot fall back when the script is
		// not loaded, and this runs about once a second per topic.
		c.trimCmd = pipe.Eval(c.ctx, trimSource, []string{c.stream}, c.trim...)
	}
}

func (p *StreamsPublisher) trimFor(topic string) StreamTrim {
	if trim, ok := p.config.TopicTrim[topic]; ok {
		return trim
	}
	return p.config.Trim
}

// trimDue returns the trim script's arguments when the topic is due for
// a trim: once a second, or sooner when half a MaxLen was published since
// the last one, so that a cap holds within half its size.
func (p *StreamsPublisher) trimDue(topic string, published int) []any {
	trim := p.trimFor(topic)
	if trim.Unbounded {
		return nil
	}
	p.trimMu.Lock()
	defer p.trimMu.Unlock()
	state := p.trims[topic]
	if state == nil {
		state = &topicTrim{}
		p.trims[topic] = state
	}
	state.published += int64(published)
	now := time.Now()
	if now.Sub(state.last) < trimInterval && (trim.MaxLen == 0 || state.published < max(trim.MaxLen/2, 1)) {
		return nil
	}
	state.last, state.published = now, 0
	minID := ""
	if trim.MaxAge > 0 {
		minID = strconv.FormatInt(now.Add(-trim.MaxAge).UnixMilli(), 10) + "-0"
	}
	return []any{trim.MaxLen, minID}
}

// trimDone counts what a trim removed. A trim that failed is logged (at
// most every ten seconds) and tried again at the next interval; the
// entries it followed were stored all the same.
func (p *StreamsPublisher) trimDone(topic string, cmd *redis.Cmd) {
	result, err := cmd.Int64Slice()
	if err != nil || len(result) != 2 {
		if p.trimErrorLog.allow() {
			p.logger.Error("Cannot trim stream", err, watermill.LogFields{"topic": topic})
		}
		return
	}
	p.trimmed.Add(uint64(result[0]))
	if lost := result[1]; lost > 0 {
		total := p.trimmedUnconsumed.Add(uint64(lost))
		// Logged at most every ten seconds: a cap below a lagging group's
		// backlog cuts into it on every trim.
		if p.trimLossLog.allow() {
			cap := p.trimFor(topic)
			p.logger.Error("A trim cap removed entries that a consumer group had not consumed", errUnconsumedTrimmed, watermill.LogFields{
				"topic": topic, "entries": lost, "total_since_start": total, "max_len": cap.MaxLen, "max_age": cap.MaxAge.String(),
			})
		}
	}
}

var errUnconsumedTrimmed = errors.New("StreamTrim cap below a consumer group's backlog")

// Stats returns the publisher's counters.
func (p *StreamsPublisher) Stats() StreamsPublisherStats {
	return StreamsPublisherStats{Scheduled: p.scheduled.Load(), Trimmed: p.trimmed.Load(), TrimmedUnconsumed: p.trimmedUnconsumed.Load()}
}

// String names the publisher in logs and metrics (Watermill's
// components/metrics publisher_name label).
func (p *StreamsPublisher) String() string { return "redisbus.StreamsPublisher" }

// Close stops the publisher within CloseTimeout, whatever Redis does: it
// waits for publishes in progress until then, and those Redis has not
// answered by then fail with an error saying their entries may or may not
// be stored (the goroutine waiting on such a round trip exits when the
// client's ReadTimeout ends it). Later Publish calls fail with
// ErrPublisherClosed. It does not close the client and is idempotent: a
// second call waits for the first.
func (p *StreamsPublisher) Close() error {
	p.closeOnce.Do(func() {
		defer close(p.closed)
		deadline := time.Now().Add(p.config.CloseTimeout)
		p.closing.Store(true)
		p.coalescer.beginClose()
		p.coalescer.close(deadline)
		p.mu.Lock() // every publish has returned
		p.coalescer.drain()
		p.mu.Unlock()
		if n := p.coalescer.abandoned.Load(); n > 0 {
			p.closeErr = fmt.Errorf("redisbus: Close gave up on %d publishes Redis had not answered (their entries may or may not be stored)", n)
		}
	})
	<-p.closed
	return p.closeErr
}
