package main

// The views: what each command shows, as data. They print nothing, so a
// web page or another front end can show the same.

import (
	"context"
	"encoding/base64"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	redisbus "github.com/redisbus/watermill-redisbus"
)

// Message is a message decoded as a redisbus subscriber would see it.
type Message struct {
	// UUID is empty when the entry has none (it was not written by a
	// redisbus publisher), rather than one made up on every read.
	UUID     string            `json:"uuid"`
	Metadata map[string]string `json:"metadata"`
	// Payload is the payload when it is UTF-8 text, else PayloadBase64
	// holds it.
	Payload       *string `json:"payload,omitempty"`
	PayloadBase64 string  `json:"payload_base64,omitempty"`
	// DecodeError says why the entry is not a message (it has no payload
	// field, or its metadata is not MessagePack); then Fields has it raw.
	DecodeError string            `json:"decode_error,omitempty"`
	Fields      map[string]string `json:"fields,omitempty"`
}

func messageOf(msg *message.Message) Message {
	m := Message{UUID: msg.UUID, Metadata: map[string]string(msg.Metadata)}
	if m.Metadata == nil {
		m.Metadata = map[string]string{}
	}
	if utf8.Valid(msg.Payload) {
		text := string(msg.Payload)
		m.Payload = &text
	} else {
		m.PayloadBase64 = base64.StdEncoding.EncodeToString(msg.Payload)
	}
	return m
}

// decodeEntry decodes stream entry fields with DefaultStreamsMarshaler.
func decodeEntry(values map[string]any) Message {
	msg, err := redisbus.DefaultStreamsMarshaler{}.Unmarshal("", values)
	if err != nil {
		fields := make(map[string]string, len(values))
		for k, v := range values {
			fields[k] = fmt.Sprint(v)
		}
		return Message{Metadata: map[string]string{}, DecodeError: err.Error(), Fields: fields}
	}
	m := messageOf(msg)
	if _, ok := values[redisbus.StreamsFieldUUID]; !ok {
		m.UUID = "" // the marshaler made one up, differently on every read
	}
	return m
}

// decodePubSub decodes a Pub/Sub payload with EnvelopeMarshaler: what is
// not an envelope arrives raw, with a fresh UUID, as a Subscriber sees it.
func decodePubSub(data []byte) Message {
	msg, _ := redisbus.EnvelopeMarshaler{}.Unmarshal("", data) // never fails
	return messageOf(msg)
}

// Entry is a stream entry.
type Entry struct {
	ID    string `json:"id"`
	AgeMS int64  `json:"age_ms"` // since it was added, from its ID
	Message
}

// idTime is when an entry was added, from its ID (milliseconds-sequence).
func idTime(id string) time.Time {
	ms, _, _ := strings.Cut(id, "-")
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(n)
}

func ageMS(id string, now time.Time) int64 {
	t := idTime(id)
	if t.IsZero() {
		return 0
	}
	return max(now.Sub(t).Milliseconds(), 0)
}

// StreamSummary is one topic in the streams view: its stream and its
// dead-letter stream.
type StreamSummary struct {
	Stream string `json:"stream"`
	// Exists is false for a topic whose stream is gone (trimmed away or
	// deleted) while its dead-letter stream remains.
	Exists  bool    `json:"exists"`
	Length  int64   `json:"length"`
	Groups  []Group `json:"groups"`
	Lag     int64   `json:"lag"`     // the most any group lags (-1: Redis cannot tell)
	Pending int64   `json:"pending"` // of all groups
	// OldestPendingAgeMS is how long ago the oldest entry still pending
	// in any group was added (0 when none is pending).
	OldestPendingAgeMS int64  `json:"oldest_pending_age_ms"`
	DeadLetterStream   string `json:"dead_letter_stream"`
	DeadLetters        int64  `json:"dead_letters"`
}

// Group is a consumer group of a stream.
type Group struct {
	Name      string `json:"name"`
	Consumers int64  `json:"consumers"`
	Pending   int64  `json:"pending"`
	// Lag is how many entries the group has yet to read; -1 when Redis
	// cannot tell (after deletions in the stream).
	Lag                int64  `json:"lag"`
	LastDeliveredID    string `json:"last_delivered_id"`
	OldestPendingID    string `json:"oldest_pending_id,omitempty"`
	OldestPendingAgeMS int64  `json:"oldest_pending_age_ms"`
}

// StreamsView lists the streams whose names match pattern (SCAN MATCH),
// at most limit topics (truncated says when there were more). A stream
// named <topic><deadSuffix> is shown as the dead letters of its topic,
// not as a topic. Keys that are not streams, such as the consumer-name
// leases next to each stream, are not listed.
func StreamsView(ctx context.Context, client redis.UniversalClient, pattern, deadSuffix string, limit int) (topics []StreamSummary, truncated bool, err error) {
	names := map[string]bool{} // topic → its stream exists
	var mu sync.Mutex          // guards names: a cluster's masters are scanned at once
	scan := func(ctx context.Context, node redis.Cmdable) error {
		var cursor uint64
		for {
			keys, next, err := node.ScanType(ctx, cursor, pattern, 1000, "stream").Result()
			if err != nil {
				return err
			}
			mu.Lock()
			for _, key := range keys {
				if topic, ok := strings.CutSuffix(key, deadSuffix); ok && deadSuffix != "" {
					if _, seen := names[topic]; !seen {
						names[topic] = false
					}
					continue
				}
				names[key] = true
			}
			full := len(names) > limit // then the list is cut below
			mu.Unlock()
			if next == 0 || full {
				return nil
			}
			cursor = next
		}
	}
	if cluster, ok := client.(*redis.ClusterClient); ok {
		err = cluster.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error { return scan(ctx, node) })
	} else {
		err = scan(ctx, client)
	}
	if err != nil {
		return nil, false, err
	}
	topics = []StreamSummary{} // JSON [] when nothing matches
	sorted := make([]string, 0, len(names))
	for name := range names {
		sorted = append(sorted, name)
	}
	sort.Strings(sorted)
	if len(sorted) > limit {
		sorted, truncated = sorted[:limit], true
	}
	for _, name := range sorted {
		s, err := streamSummary(ctx, client, name, name+deadSuffix, names[name])
		if err != nil {
			return nil, false, err
		}
		topics = append(topics, s)
	}
	return topics, truncated, nil
}

func streamSummary(ctx context.Context, client redis.UniversalClient, stream, dead string, exists bool) (StreamSummary, error) {
	s := StreamSummary{Stream: stream, Exists: exists, DeadLetterStream: dead, Groups: []Group{}}
	if !exists { // the scan found only its dead letters; --match may have left it out
		kind, err := client.Type(ctx, stream).Result()
		if err != nil {
			return s, err
		}
		s.Exists = kind == "stream"
	}
	pipe := client.Pipeline()
	deadLen := pipe.XLen(ctx, dead)
	var length *redis.IntCmd
	var groups *redis.XInfoGroupsCmd
	if s.Exists {
		length = pipe.XLen(ctx, stream)
		groups = pipe.XInfoGroups(ctx, stream)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return s, err
	}
	s.DeadLetters = deadLen.Val()
	if !s.Exists {
		return s, nil
	}
	s.Length = length.Val()
	var err error
	s.Groups, err = groupsOf(ctx, client, stream, groups.Val())
	if err != nil {
		return s, err
	}
	for _, g := range s.Groups {
		s.Pending += g.Pending
		s.OldestPendingAgeMS = max(s.OldestPendingAgeMS, g.OldestPendingAgeMS)
		if g.Lag < 0 || s.Lag < 0 {
			s.Lag = -1
		} else {
			s.Lag = max(s.Lag, g.Lag)
		}
	}
	return s, nil
}

// groupsOf adds to XINFO GROUPS the oldest pending entry of each group.
func groupsOf(ctx context.Context, client redis.UniversalClient, stream string, infos []redis.XInfoGroup) ([]Group, error) {
	pipe := client.Pipeline()
	pending := make([]*redis.XPendingCmd, len(infos))
	for i, info := range infos {
		if info.Pending > 0 {
			pending[i] = pipe.XPending(ctx, stream, info.Name)
		}
	}
	if pipe.Len() > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	groups := make([]Group, len(infos))
	for i, info := range infos {
		groups[i] = Group{
			Name:            info.Name,
			Consumers:       info.Consumers,
			Pending:         info.Pending,
			Lag:             info.Lag,
			LastDeliveredID: info.LastDeliveredID,
		}
		if pending[i] != nil {
			groups[i].OldestPendingID = pending[i].Val().Lower
			groups[i].OldestPendingAgeMS = ageMS(groups[i].OldestPendingID, now)
		}
	}
	return groups, nil
}

// StreamDetail is the stream view: one topic with its groups, their
// consumers and its last entries.
type StreamDetail struct {
	StreamSummary
	FirstID   string     `json:"first_id"`
	LastID    string     `json:"last_id"`
	Consumers []Consumer `json:"consumers"`
	// LastEntries are the newest entries, newest first.
	LastEntries []Entry `json:"last_entries"`
}

// Consumer is a consumer of a group.
type Consumer struct {
	Group   string `json:"group"`
	Name    string `json:"name"`
	Pending int64  `json:"pending"`
	// IdleMS is the time since the consumer last read or claimed.
	IdleMS int64 `json:"idle_ms"`
}

// StreamView describes stream (which must exist) and the last entries of
// it, at most last.
func StreamView(ctx context.Context, client redis.UniversalClient, stream, dead string, last int64) (StreamDetail, error) {
	summary, err := streamSummary(ctx, client, stream, dead, true)
	if err != nil {
		return StreamDetail{}, err
	}
	d := StreamDetail{StreamSummary: summary, Consumers: []Consumer{}, LastEntries: []Entry{}}
	pipe := client.Pipeline()
	consumers := make([]*redis.XInfoConsumersCmd, len(summary.Groups))
	for i, g := range summary.Groups {
		consumers[i] = pipe.XInfoConsumers(ctx, stream, g.Name)
	}
	first := pipe.XRangeN(ctx, stream, "-", "+", 1)
	newest := pipe.XRevRangeN(ctx, stream, "+", "-", max(last, 1))
	if _, err := pipe.Exec(ctx); err != nil {
		return d, err
	}
	for i, g := range summary.Groups {
		for _, c := range consumers[i].Val() {
			d.Consumers = append(d.Consumers, Consumer{Group: g.Name, Name: c.Name, Pending: c.Pending, IdleMS: c.Idle.Milliseconds()})
		}
	}
	if entries := first.Val(); len(entries) > 0 {
		d.FirstID = entries[0].ID
	}
	now := time.Now()
	for i, e := range newest.Val() {
		if i == 0 {
			d.LastID = e.ID
		}
		if int64(i) < last {
			d.LastEntries = append(d.LastEntries, Entry{ID: e.ID, AgeMS: ageMS(e.ID, now), Message: decodeEntry(e.Values)})
		}
	}
	return d, nil
}

// DeadLetter is an entry of a dead-letter stream: the message as it was in
// its stream, and why and from where it was moved.
type DeadLetter struct {
	ID           string  `json:"id"`
	AgeMS        int64   `json:"age_ms"` // since it was dead-lettered
	Reason       string  `json:"reason"`
	OriginStream string  `json:"origin_stream"`
	OriginID     string  `json:"origin_id"`
	Group        string  `json:"group"`
	Consumer     string  `json:"consumer"`
	Deliveries   int     `json:"deliveries"`
	Message      Message `json:"message"`
}

// deadLetterFields are the fields a subscriber adds to an entry it moves
// to the dead-letter stream; a replay leaves them out.
var deadLetterFields = []string{
	redisbus.DeadLetterFieldReason,
	redisbus.DeadLetterFieldStream,
	redisbus.DeadLetterFieldID,
	redisbus.DeadLetterFieldGroup,
	redisbus.DeadLetterFieldConsumer,
	redisbus.DeadLetterFieldDeliveries,
}

func deadLetterOf(e redis.XMessage, now time.Time) DeadLetter {
	str := func(field string) string { s, _ := e.Values[field].(string); return s }
	d := DeadLetter{
		ID:           e.ID,
		AgeMS:        ageMS(e.ID, now),
		Reason:       str(redisbus.DeadLetterFieldReason),
		OriginStream: str(redisbus.DeadLetterFieldStream),
		OriginID:     str(redisbus.DeadLetterFieldID),
		Group:        str(redisbus.DeadLetterFieldGroup),
		Consumer:     str(redisbus.DeadLetterFieldConsumer),
	}
	d.Deliveries, _ = strconv.Atoi(str(redisbus.DeadLetterFieldDeliveries))
	original := make(map[string]any, len(e.Values))
	for k, v := range e.Values {
		original[k] = v
	}
	for _, field := range deadLetterFields {
		delete(original, field)
	}
	d.Message = decodeEntry(original)
	return d
}

// DeadView lists the dead letters of dead that sel selects, oldest first,
// at most limit (more says whether there were more).
func DeadView(ctx context.Context, client redis.UniversalClient, dead string, sel selection, limit int) (letters []DeadLetter, more bool, err error) {
	letters = []DeadLetter{}
	now := time.Now()
	err = sel.each(ctx, client, dead, "+", func(batch []redis.XMessage, _ int) error {
		for _, e := range batch {
			if len(letters) == limit {
				more = true
				return errStop
			}
			letters = append(letters, deadLetterOf(e, now))
		}
		return nil
	})
	return letters, more, err
}

// PendingEntry is an entry delivered to a consumer and not yet acked.
type PendingEntry struct {
	ID         string `json:"id"`
	Consumer   string `json:"consumer"`
	IdleMS     int64  `json:"idle_ms"`    // since it was last delivered
	Deliveries int64  `json:"deliveries"` // as Redis counts them
	AgeMS      int64  `json:"age_ms"`     // since it was added
}

// PendingView lists the pending entries of group, oldest first, at most
// limit: only consumer's when consumer is set, only those idle for minIdle
// or longer.
func PendingView(ctx context.Context, client redis.UniversalClient, stream, group, consumer string, minIdle time.Duration, limit int64) ([]PendingEntry, error) {
	list, err := client.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: stream, Group: group, Consumer: consumer, Idle: minIdle,
		Start: "-", End: "+", Count: limit,
	}).Result()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	entries := make([]PendingEntry, len(list))
	for i, p := range list {
		entries[i] = PendingEntry{ID: p.ID, Consumer: p.Consumer, IdleMS: p.Idle.Milliseconds(), Deliveries: p.RetryCount, AgeMS: ageMS(p.ID, now)}
	}
	return entries, nil
}
