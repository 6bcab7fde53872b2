package wsroute

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// HistoryConfig keeps what is sent to clients and rooms in Redis for a
// while, so that a client that drops and comes back, to any node, gets
// what it missed (see docs/wsroute-protocol.md). Only connections that
// speak the wsroute.v1 protocol (see Subprotocol) can recover; plain ones
// get the same messages, without offsets.
//
// Every message kept gets an offset, one more than the stream's last, and
// the stream's epoch, which changes when the history is lost (Redis
// restarted empty, or MetaTTL passed without a message or a connection).
// The history is a Redis stream per client or room, trimmed to Size
// messages; messages older than TTL are not recovered.
type HistoryConfig struct {
	// Clients keeps what SendToClient sends (per call: WithHistory,
	// WithoutHistory). KeepClient, if set, chooses the clients.
	Clients    bool
	KeepClient func(clientID string) bool

	// Rooms keeps what Broadcast sends to rooms (per call: WithHistory,
	// WithoutHistory). KeepRoom, if set, chooses the rooms.
	Rooms    bool
	KeepRoom func(room string) bool

	// Size bounds each client's and room's history, in messages: a client
	// that missed more is told it did not recover ("trimmed"). Zero means
	// 1,000.
	Size int

	// TTL is how long a message can be recovered: a client away longer is
	// told it did not recover. A history with nothing sent for TTL is
	// deleted. Zero means 5 minutes.
	TTL time.Duration

	// MetaTTL is how long a stream's offset and epoch outlive its last
	// message or connection: a client that comes back within it, after
	// nothing was sent, recovers (nothing); after it, the epoch is new and
	// the client is told it did not recover. At least TTL. Zero means 24
	// hours.
	MetaTTL time.Duration
}

const (
	defaultHistorySize    = 1000
	defaultHistoryTTL     = 5 * time.Minute
	defaultHistoryMetaTTL = 24 * time.Hour
)

func (c *HistoryConfig) setDefaults() {
	if c.Size == 0 {
		c.Size = defaultHistorySize
	}
	if c.TTL == 0 {
		c.TTL = defaultHistoryTTL
	}
	if c.MetaTTL == 0 {
		c.MetaTTL = max(defaultHistoryMetaTTL, c.TTL)
	}
}

func (c HistoryConfig) validate(field func(name, problem string) error) error {
	switch {
	case c.Size < 0:
		return field("History.Size", "must not be negative")
	case c.TTL < 0:
		return field("History.TTL", "must not be negative")
	case c.TTL > 0 && c.TTL < time.Millisecond:
		return field("History.TTL", "must be at least 1ms")
	case c.MetaTTL < 0:
		return field("History.MetaTTL", "must not be negative")
	case c.MetaTTL > 0 && c.MetaTTL < cmp.Or(c.TTL, defaultHistoryTTL):
		return field("History.MetaTTL", "must be at least History.TTL: the offsets of a history must outlive its messages")
	case c.KeepClient != nil && !c.Clients:
		return field("History.KeepClient", "is set, but History.Clients is off")
	case c.KeepRoom != nil && !c.Rooms:
		return field("History.KeepRoom", "is set, but History.Rooms is off")
	}
	return nil
}

// keeps reports whether a stream's messages are kept by default.
func (c HistoryConfig) keeps(kind, name string) bool {
	switch kind {
	case "client":
		return c.Clients && (c.KeepClient == nil || c.KeepClient(name))
	case "room":
		return c.Rooms && (c.KeepRoom == nil || c.KeepRoom(name))
	}
	return false
}

// SendOption changes how one message is sent.
type SendOption func(*sendOptions)

type sendOptions struct {
	history *bool // nil: Config.History decides
}

// WithHistory keeps this message in its client's or room's history,
// whatever Config.History says, so that a client that missed it can
// recover it.
func WithHistory() SendOption {
	return func(o *sendOptions) { keep := true; o.history = &keep }
}

// WithoutHistory leaves this message out of the history (a typing
// indicator, a cursor position): it has no offset and cannot be recovered,
// and a client that misses it is not told.
func WithoutHistory() SendOption {
	return func(o *sendOptions) { keep := false; o.history = &keep }
}

// MetadataHistory on a message given to Send (or produced through Deliver)
// is "true" or "false" (or another of strconv.ParseBool's spellings):
// WithHistory or WithoutHistory. Any other value is logged, and the
// message sent as Config.History says.
const MetadataHistory = "wsroute_history"

// Position is where a client is in a stream: the epoch of its history and
// the offset of the last message it got.
type Position struct {
	Epoch  string `json:"epoch"`
	Offset uint64 `json:"offset"`
}

// The history of a stream lives in Redis as
//
//	<prefix>history:<kind>:<name>       stream: ID "<offset>-0", fields d (payload), t (ms)
//	<prefix>history-meta:<kind>:<name>  hash: epoch, offset (the last given)
//
// both in the registry's slot on a cluster (the prefix's hash tag).
func (k keys) history(kind, name string) string { return k.prefix + "history:" + kind + ":" + name }
func (k keys) historyMeta(kind, name string) string {
	return k.prefix + "history-meta:" + kind + ":" + name
}

var (
	//go:embed lua/history_lib.lua
	historyLib string
	//go:embed lua/history_read.lua
	historyReadSource string
	historyReadScript = redis.NewScript(historyLib + historyReadSource)
)

// newEpoch names a new run of a stream's offsets: random, so that a
// history lost and started again never reuses an epoch.
func newEpoch() string { return uuid.NewString()[:8] }

// streamMessage is a message of a client's or room's stream, routed or
// read from its history; offset 0 if it is not kept.
type streamMessage struct {
	epoch  string
	offset uint64
	sentAt int64 // when it was kept, Unix ms, Redis' clock
	data   []byte
}

// historyPage is one read of a stream's history.
type historyPage struct {
	epoch   string
	top     uint64 // the stream's last offset
	now     int64  // Redis' clock, Unix ms
	entries []streamMessage
}

// readHistory returns the stream's epoch and last offset, and (after >= 0)
// up to count messages after the offset after. It starts a new epoch if
// the stream has none.
func (n *Node) readHistory(ctx context.Context, kind, name string, after int64, count int) (historyPage, error) {
	h := n.config.History
	raw, err := historyReadScript.Run(ctx, n.config.Client,
		[]string{n.keys.historyMeta(kind, name), n.keys.history(kind, name)},
		after, count, newEpoch(), ms(h.MetaTTL)).Slice()
	if err != nil {
		return historyPage{}, err
	}
	return parseHistoryPage(raw)
}

var errBadHistoryReply = errors.New("wsroute: unexpected reply from history_read.lua")

func parseHistoryPage(raw []any) (historyPage, error) {
	if len(raw) != 4 {
		return historyPage{}, errBadHistoryReply
	}
	epoch, ok1 := raw[0].(string)
	top, ok2 := raw[1].(int64)
	now, ok3 := raw[2].(int64)
	entries, ok4 := raw[3].([]any)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return historyPage{}, errBadHistoryReply
	}
	page := historyPage{epoch: epoch, top: uint64(top), now: now, entries: make([]streamMessage, 0, len(entries))}
	for _, e := range entries {
		entry, err := parseHistoryEntry(e)
		if err != nil {
			return historyPage{}, err
		}
		entry.epoch = epoch
		page.entries = append(page.entries, entry)
	}
	return page, nil
}

// parseHistoryEntry reads one XRANGE entry: {"<offset>-0", {field, value…}}.
func parseHistoryEntry(raw any) (streamMessage, error) {
	pair, ok := raw.([]any)
	if !ok || len(pair) != 2 {
		return streamMessage{}, errBadHistoryReply
	}
	id, _ := pair[0].(string)
	fields, _ := pair[1].([]any)
	var e streamMessage
	offset, _, found := strings.Cut(id, "-")
	o, err := strconv.ParseUint(offset, 10, 64)
	if !found || err != nil {
		return streamMessage{}, fmt.Errorf("%w: entry ID %q", errBadHistoryReply, id)
	}
	e.offset = o
	for i := 0; i+1 < len(fields); i += 2 {
		name, _ := fields[i].(string)
		value, _ := fields[i+1].(string)
		switch name {
		case "d":
			e.data = []byte(value)
		case "t":
			e.sentAt, _ = strconv.ParseInt(value, 10, 64)
		}
	}
	return e, nil
}
