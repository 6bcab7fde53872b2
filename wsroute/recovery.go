package wsroute

import (
	"context"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/redisbus/watermill-redisbus/internal/slotmap"
)

// A framed connection (see Subprotocol) follows the streams whose messages
// are kept in a history: its client's, and each room it joins. In each it
// gets every kept message once, in offset order, whatever happened in
// between: it starts from the position the client presented (the messages
// after it are read from the history, then the live ones that arrived
// meanwhile), and a gap in the live messages (the node's subscription
// dropped some) is filled from the history too. One filler goroutine at a
// time owns a stream while it reads the history; live messages wait for
// it in the stream's pending list, so that none is lost at the seam and
// none is sent twice.

// followed is a framed connection's state in one stream.
type followed struct {
	epoch string
	last  uint64 // the offset of the last message queued
	// filling is set while a filler owns the stream: live messages wait in
	// pending, in the order they came, at most Config.SendQueueSize of
	// them; a kept one beyond sets overflow, and it and every message after
	// it are dropped until pending is out: the kept ones are read from the
	// history, where they are too, the others lost.
	filling  bool
	pending  []streamMessage
	overflow bool
}

// replayBatch is how many kept messages one history read returns.
const replayBatch = 100

// streamName names a stream as the protocol does.
func streamName(kind, name string) string {
	switch kind {
	case "client":
		return "client"
	case "room":
		return "room:" + name
	}
	return "all"
}

// streamKey is the kind and name of one of c's streams.
func (c *localConn) streamKey(stream string) (kind, name string) {
	if room, ok := strings.CutPrefix(stream, "room:"); ok {
		return "room", room
	}
	return "client", c.clientID
}

// follows reports whether a framed connection should follow a stream from
// its start: the stream is kept by default, or the client has seen kept
// messages in it before (it presented a position).
func (c *localConn) follows(kind, name string) bool {
	if !c.framed {
		return false
	}
	c.mu.Lock()
	_, presented := c.recover[streamName(kind, name)]
	c.mu.Unlock()
	return presented || c.node.config.History.keeps(kind, name)
}

// followedStreams lists the streams the connection follows.
func (c *localConn) followedStreams() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Collect(maps.Keys(c.streams))
}

// startFollowing marks a stream filling before the connection can receive
// its live messages (c.mu held, or c not yet shared); startFilling then
// sends it from the client's position.
func (c *localConn) startFollowing(stream string) *followed {
	st := &followed{filling: true}
	c.streams[stream] = st
	return st
}

// startFilling sends a stream from the client's position (taken: a later
// join of the same room starts afresh), then hands it to live delivery.
func (c *localConn) startFilling(stream string, st *followed) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.streams[stream] != st {
		return
	}
	var from *Position
	if p, ok := c.recover[stream]; ok {
		from = &p
		delete(c.recover, stream)
	}
	c.fillers.Add(1)
	go c.fill(stream, st, from, fillStart)
}

// receiveFramed hands a live message to a framed connection.
func (c *localConn) receiveFramed(stream string, m streamMessage, frame []byte) {
	n := c.node
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	st := c.streams[stream]
	if m.offset == 0 {
		// Not kept. While its stream catches up it waits behind the
		// kept messages before it, so that one sender's messages keep
		// their order; it is lost if pending overflows, as under
		// DropOldest.
		if st != nil && st.filling {
			if !st.overflow && len(st.pending) < n.config.SendQueueSize {
				st.pending = append(st.pending, m)
			} else {
				n.stats.dropped.Add(1) // behind kept ones that overflowed into the history
			}
			c.mu.Unlock()
			return
		}
		n.stats.delivered.Add(1)
		disconnect := c.queueLocked(frame, false)
		c.mu.Unlock()
		if disconnect {
			c.disconnectSlow()
		}
		return
	}
	if st == nil {
		// Kept by WithHistory in a stream not kept by default: the
		// connection follows it from here.
		st = &followed{epoch: m.epoch, last: m.offset - 1}
		c.streams[stream] = st
	}
	if st.filling {
		// Once one overflowed, the ones after it wait in the history too:
		// pending must not hold messages from after a hole.
		if !st.overflow && len(st.pending) < n.config.SendQueueSize {
			st.pending = append(st.pending, m)
		} else {
			st.overflow = true
		}
		c.mu.Unlock()
		return
	}
	c.handOn(stream, st, m, frame)
	c.mu.Unlock()
}

// handOn queues a live message that follows st.last, drops one it sent
// already, and otherwise hands the stream to a filler. c.mu held.
func (c *localConn) handOn(stream string, st *followed, m streamMessage, frame []byte) {
	switch {
	case m.epoch == st.epoch && m.offset <= st.last:
		c.node.stats.duplicates.Add(1) // replayed already, or routed twice
		return
	case m.epoch == st.epoch && m.offset == st.last+1 && len(c.queue) < c.node.config.SendQueueSize:
		st.last = m.offset
		c.node.stats.delivered.Add(1)
		c.queueLocked(frame, true)
		return
	}
	// Messages before this one did not reach the node (its subscription
	// dropped them); or the queue is full: kept messages are not dropped
	// for a slow client, they wait in the history (for want of room,
	// pending overflows into it), and the client falls behind by more than
	// History.Size only if it is that slow; or the history was lost and
	// started again (Redis restarted), which the filler finds and tells.
	st.filling = true
	st.pending = append(st.pending[:0], m)
	c.fillers.Add(1)
	go c.fill(stream, st, &Position{Epoch: st.epoch, Offset: st.last}, fillPending)
}

// catchUpAll makes every framed connection check the streams it follows
// against their histories, and get what they lack: after the node's
// subscription dropped, messages routed meanwhile were lost on the way
// here, and a stream that gets no further message would never show the
// gap. A stream with nothing new costs one read.
func (n *Node) catchUpAll() {
	for _, c := range n.localConns() {
		if !c.framed {
			continue
		}
		c.mu.Lock()
		for stream, st := range c.streams {
			if !c.closed && !st.filling {
				st.filling = true
				c.fillers.Add(1)
				go c.fill(stream, st, &Position{Epoch: st.epoch, Offset: st.last}, fillCheck)
			}
		}
		c.mu.Unlock()
	}
}

// fillMode says how a filler starts.
type fillMode int

const (
	// fillStart: the connection starts following the stream (connected,
	// joined): the history after the client's position (nil: none) is
	// read first, and a position frame ends the replay.
	fillStart fillMode = iota
	// fillCheck: the node may have missed messages (its subscription
	// dropped): the history after the stream's position is read first.
	fillCheck
	// fillPending: live messages wait (a gap before them, or a full
	// queue): they are sent first, in order, and the history read only
	// for a gap among them, so that a message sent without history is not
	// overtaken by kept ones that came after it.
	fillPending
)

// fill owns a filling stream: it queues the kept messages after from,
// marked recovered, and the live ones that waited in pending, reading the
// history for any gap among them, and hands the stream back to live
// delivery (see fillMode for how it starts).
func (c *localConn) fill(stream string, st *followed, from *Position, mode fillMode) {
	defer c.fillers.Done()
	n := c.node
	kind, name := c.streamKey(stream)
	start := mode == fillStart
	var (
		page      historyPage
		ok        bool
		epoch     string
		since     uint64
		recovered *bool
		reason    string
		replayed  int
	)
	if mode == fillPending {
		epoch, since = from.Epoch, from.Offset
	} else {
		after := int64(-1)
		if from != nil {
			after = int64(from.Offset)
		}
		if page, ok = c.read(kind, name, after); !ok {
			return
		}
		epoch, since = page.epoch, page.top
		if from != nil {
			switch {
			case from.Epoch != page.epoch:
				reason = reasonEpoch
			case from.Offset > page.top:
				reason = reasonAhead
			default:
				since = from.Offset
				if page, since, replayed, reason, ok = c.catchUp(stream, page, epoch, since); !ok {
					return
				}
				if reason != "" {
					since = page.top
				}
			}
			recovered = boolPtr(reason == "")
		}
		if !start && reason != "" {
			// Missed messages the history no longer covers: say so, as
			// for a start.
			start, recovered = true, boolPtr(false)
		}
	}

	for {
		c.mu.Lock()
		if c.closed || c.streams[stream] != st {
			c.mu.Unlock()
			return
		}
		if start && len(c.queue) >= n.config.SendQueueSize {
			// Behind the replayed messages, which must not be dropped
			// to make room for it.
			c.mu.Unlock()
			if !c.awaitSpace() {
				return
			}
			continue
		}
		if start && (recovered == nil || !*recovered) && len(st.pending) > 0 {
			// Not replaying, the stream starts at the position frame: the
			// live messages that reached the connection before it are
			// after it, so that none is dropped as one the client had.
			if i := slices.IndexFunc(st.pending, func(p streamMessage) bool { return p.offset > 0 }); i >= 0 {
				if p := st.pending[i]; p.epoch == epoch && p.offset <= since {
					since = p.offset - 1
				}
			}
		}
		if start {
			start = false
			c.queueLocked(encodePosition(stream, epoch, since, recovered, reason, replayed), true)
			switch {
			case recovered == nil:
			case *recovered:
				n.stats.recovered.Add(1)
			default:
				n.stats.recoveryFailed.Add(1)
			}
		}
		gap, full := false, false
		for !gap && len(st.pending) > 0 {
			m := st.pending[0]
			switch {
			case m.offset == 0: // not kept: in its place
				if full = len(c.queue) >= n.config.SendQueueSize; full {
					break
				}
				c.queueLocked(encodeMessage(stream, m, false), false)
				n.stats.delivered.Add(1)
			case m.epoch != epoch || m.offset > since+1:
				gap = true
			case m.offset <= since:
				n.stats.duplicates.Add(1)
			default:
				if full = len(c.queue) >= n.config.SendQueueSize; full {
					break
				}
				c.queueLocked(encodeMessage(stream, m, false), true)
				n.stats.delivered.Add(1)
				since = m.offset
			}
			if gap || full {
				break
			}
			st.pending[0] = streamMessage{}
			st.pending = st.pending[1:]
		}
		if !gap && !full && len(st.pending) == 0 && st.overflow {
			// Pending is out; what overflowed it is in the history.
			gap, st.overflow = true, false
		}
		done := !gap && !full && len(st.pending) == 0
		if done {
			st.filling, st.pending = false, nil
			st.epoch, st.last = epoch, since
		}
		c.mu.Unlock()
		if done {
			return
		}
		if full {
			if !c.awaitSpace() {
				return
			}
			continue
		}
		// A gap among the live messages, or some were dropped: the
		// history has them.
		if page, ok = c.read(kind, name, int64(since)); !ok {
			return
		}
		if page.epoch != epoch {
			// Lost and started again since: the client is told, and goes
			// on from the new epoch's last offset.
			epoch, since, reason, replayed, start, recovered = page.epoch, page.top, reasonEpoch, 0, true, boolPtr(false)
			continue
		}
		c.dropOtherEpochs(st, epoch)
		var missed string
		if page, since, _, missed, ok = c.catchUp(stream, page, epoch, since); !ok {
			return
		}
		if missed != "" {
			since, reason, replayed, start, recovered = page.top, missed, 0, true, boolPtr(false)
		}
	}
}

// catchUp queues the kept messages after since, from page on (reading
// more as needed), marked recovered, until it reaches the stream's last
// offset as of its last read. It returns that read, where it got to, how
// many it queued, and why it stopped short, if it did: the history lost
// messages after since ("trimmed": trimmed, expired, or too old) or
// started a new epoch. It reports false if the connection closed.
func (c *localConn) catchUp(stream string, page historyPage, epoch string, since uint64) (historyPage, uint64, int, string, bool) {
	n := c.node
	kind, name := c.streamKey(stream)
	oldest := page.now - n.config.History.TTL.Milliseconds()
	replayed := 0
	for {
		if page.epoch != epoch {
			return page, since, replayed, reasonEpoch, true
		}
		for _, m := range page.entries {
			if m.offset <= since {
				continue
			}
			if m.offset != since+1 || m.sentAt < oldest {
				return page, since, replayed, reasonTrimmed, true
			}
			if !c.queueWait(encodeMessage(stream, m, true)) {
				return page, since, replayed, "", false
			}
			n.stats.replayed.Add(1)
			since = m.offset
			replayed++
		}
		if since >= page.top {
			return page, since, replayed, "", true
		}
		if len(page.entries) == 0 {
			return page, since, replayed, reasonTrimmed, true
		}
		var ok bool
		if page, ok = c.read(kind, name, int64(since)); !ok {
			return page, since, replayed, "", false
		}
	}
}

// dropOtherEpochs drops the pending messages of an epoch the history has
// left behind: routed before it started again.
func (c *localConn) dropOtherEpochs(st *followed, epoch string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	kept := st.pending[:0]
	for _, m := range st.pending {
		if m.epoch == epoch || m.offset == 0 {
			kept = append(kept, m)
		}
	}
	clear(st.pending[len(kept):])
	st.pending = kept
}

// read reads a stream's history, trying again while Redis fails, until
// the connection closes.
func (c *localConn) read(kind, name string, after int64) (historyPage, bool) {
	n := c.node
	backoff := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(c.ctx, n.config.NodeTTL)
		page, err := n.readHistory(ctx, kind, name, after, replayBatch)
		cancel()
		if err == nil {
			return page, true
		}
		if c.ctx.Err() != nil {
			return historyPage{}, false
		}
		slotmap.Refresh(err, n.config.Client)
		if attempt == 0 {
			n.logger.Error("Cannot read a history to recover; trying again", err,
				watermill.LogFields{"client": c.clientID, "stream": streamName(kind, name)})
		}
		select {
		case <-time.After(backoff):
		case <-c.done:
			return historyPage{}, false
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func encodePosition(stream, epoch string, offset uint64, recovered *bool, reason string, replayed int) []byte {
	f := positionFrame{Type: "position", Stream: stream, Epoch: epoch, Offset: offset, Recovered: recovered, Reason: reason}
	if recovered != nil && *recovered {
		f.Replayed = &replayed
	}
	return mustMarshal(f)
}

func boolPtr(b bool) *bool { return &b }
