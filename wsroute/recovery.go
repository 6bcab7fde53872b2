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
	// pending, at most Config.SendQueueSize of them; more set overflow and
	// are dropped, to be read from the history, where they are too.
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
	go c.fill(stream, st, from, true)
}

// receiveKept hands a live message kept in the history to the connection.
func (c *localConn) receiveKept(stream string, m streamMessage, frame []byte) {
	n := c.node
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	st := c.streams[stream]
	if st == nil {
		// Kept by WithHistory in a stream not kept by default: the
		// connection follows it from here.
		st = &followed{epoch: m.epoch, last: m.offset - 1}
		c.streams[stream] = st
	}
	if st.filling {
		if len(st.pending) < n.config.SendQueueSize {
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
	go c.fill(stream, st, &Position{Epoch: st.epoch, Offset: st.last}, false)
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
				go c.fill(stream, st, &Position{Epoch: st.epoch, Offset: st.last}, false)
			}
		}
		c.mu.Unlock()
	}
}

// fill owns a filling stream: it queues the kept messages after from (nil:
// the client gave no position; it starts at the stream's last offset),
// marked recovered, then the live ones that waited in pending, reading the
// history again for any gap among them, and hands the stream back to live
// delivery. When it starts following the stream (start), it queues a
// position frame between the recovered messages and the live ones.
func (c *localConn) fill(stream string, st *followed, from *Position, start bool) {
	defer c.fillers.Done()
	n := c.node
	kind, name := c.streamKey(stream)
	after := int64(-1)
	if from != nil {
		after = int64(from.Offset)
	}
	page, ok := c.read(kind, name, after)
	if !ok {
		return
	}
	epoch, since := page.epoch, page.top
	var recovered *bool
	reason, replayed := "", 0
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
		// A gap the history no longer covers: say so, as for a start.
		start, recovered = true, boolPtr(false)
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
			if p := st.pending[0]; p.epoch == epoch && p.offset <= since {
				since = p.offset - 1
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
		gap, full := st.overflow, false
		st.overflow = false
		for !gap && len(st.pending) > 0 {
			m := st.pending[0]
			if m.epoch != epoch || m.offset > since+1 {
				gap = true
				break
			}
			if m.offset <= since {
				n.stats.duplicates.Add(1)
			} else {
				if full = len(c.queue) >= n.config.SendQueueSize; full {
					break
				}
				c.queueLocked(encodeMessage(stream, m, false), true)
				n.stats.delivered.Add(1)
				since = m.offset
			}
			st.pending[0] = streamMessage{}
			st.pending = st.pending[1:]
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
		if m.epoch == epoch {
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
