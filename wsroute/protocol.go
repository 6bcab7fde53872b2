package wsroute

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Subprotocol is the WebSocket subprotocol of connections that get their
// messages in JSON envelopes with offsets, and can recover what they
// missed: see docs/wsroute-protocol.md and the JavaScript client. Handler
// speaks it with clients that ask for it; other clients get raw payloads.
const Subprotocol = "wsroute.v1"

// ServeOptions are a connection's protocol options (see ServeWith).
type ServeOptions struct {
	// Framed writes wsroute.v1 frames (JSON envelopes with offsets and
	// position frames) instead of raw payloads.
	Framed bool
	// Recover holds the client's positions, by stream ("client",
	// "room:<name>"), as ParseRecover reads them: the node sends what the
	// client missed since, or tells it that it cannot. Only with Framed.
	Recover map[string]Position
}

// Limits of a recover parameter: more would cost the node more to read
// than a client deserves to ask at once.
const (
	maxRecoverSize    = 8 << 10
	maxRecoverStreams = 64
	maxEpochSize      = 64
)

// ParseRecover reads the positions a client presents on connecting (the
// "recover" query parameter of docs/wsroute-protocol.md): a JSON object
// from stream name to {"epoch", "offset"}, at most 64 streams and 8 KiB.
func ParseRecover(s string) (map[string]Position, error) {
	if s == "" {
		return nil, nil
	}
	if len(s) > maxRecoverSize {
		return nil, fmt.Errorf("recover: %d bytes, at most %d", len(s), maxRecoverSize)
	}
	var positions map[string]Position
	if err := json.Unmarshal([]byte(s), &positions); err != nil {
		return nil, fmt.Errorf("recover: want a JSON object of stream to {\"epoch\", \"offset\"}: %w", err)
	}
	if len(positions) > maxRecoverStreams {
		return nil, fmt.Errorf("recover: %d streams, at most %d", len(positions), maxRecoverStreams)
	}
	for stream, p := range positions {
		room, isRoom := strings.CutPrefix(stream, "room:")
		if stream != "client" && (!isRoom || room == "") {
			return nil, fmt.Errorf("recover: stream %q: want \"client\" or \"room:<name>\"", stream)
		}
		if p.Epoch == "" || len(p.Epoch) > maxEpochSize {
			return nil, fmt.Errorf("recover: stream %q: epoch must have 1 to %d bytes", stream, maxEpochSize)
		}
	}
	return positions, nil
}

// messageFrame is a routed or recovered message on a framed connection.
type messageFrame struct {
	Type       string  `json:"type"` // "message"
	Stream     string  `json:"stream"`
	Epoch      string  `json:"epoch,omitempty"`
	Offset     uint64  `json:"offset,omitempty"`
	SentAt     int64   `json:"sent_at,omitempty"`
	Recovered  bool    `json:"recovered,omitempty"`
	Data       *string `json:"data,omitempty"`
	DataBase64 []byte  `json:"data_base64,omitempty"` // encoding/json writes []byte in base64
}

func encodeMessage(stream string, m streamMessage, recovered bool) []byte {
	f := messageFrame{Type: "message", Stream: stream, Epoch: m.epoch, Offset: m.offset, SentAt: m.sentAt, Recovered: recovered}
	if utf8.Valid(m.data) {
		s := string(m.data)
		f.Data = &s
	} else {
		f.DataBase64 = m.data
	}
	return mustMarshal(f)
}

// positionFrame tells a framed connection where a stream it follows is,
// and whether it recovered what it missed (see docs/wsroute-protocol.md).
type positionFrame struct {
	Type      string `json:"type"` // "position"
	Stream    string `json:"stream"`
	Epoch     string `json:"epoch"`
	Offset    uint64 `json:"offset"`
	Recovered *bool  `json:"recovered,omitempty"` // nil: the client gave no position
	Reason    string `json:"reason,omitempty"`
	Replayed  *int   `json:"replayed,omitempty"` // with recovered: true
}

// encodePing is a ping frame: the node pings every interval.
func encodePing(interval time.Duration) []byte {
	return mustMarshal(struct {
		Type     string `json:"type"`
		Interval int64  `json:"interval"` // ms
	}{"ping", interval.Milliseconds()})
}

// encodeLeft tells a framed connection that it left a room.
func encodeLeft(stream string) []byte {
	return mustMarshal(struct {
		Type   string `json:"type"`
		Stream string `json:"stream"`
	}{"left", stream})
}

// Reasons a stream did not recover.
const (
	reasonEpoch   = "epoch"   // the history was lost and started again
	reasonTrimmed = "trimmed" // it no longer reaches back to the client's offset
	reasonAhead   = "ahead"   // the client's offset is beyond the stream's
)

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only strings and numbers: cannot fail
	}
	return b
}
