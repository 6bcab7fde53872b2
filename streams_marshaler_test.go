package redisbus_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
)

// entryValues turns XADD fields into what XRANGE returns: strings.
func entryValues(t *testing.T, fields []any) map[string]any {
	require.Zero(t, len(fields)%2)
	values := map[string]any{}
	for i := 0; i < len(fields); i += 2 {
		switch v := fields[i+1].(type) {
		case []byte:
			values[fields[i].(string)] = string(v)
		case string:
			values[fields[i].(string)] = v
		default:
			t.Fatalf("unexpected field type %T", v)
		}
	}
	return values
}

func TestStreamsMarshalerRoundTrip(t *testing.T) {
	msg := message.NewMessage("uuid-1", []byte("\x00binary\xff payload"))
	// Enough keys and long enough strings for every MessagePack size class:
	// fixmap/map16, fixstr/str8/str16/str32.
	for i := range 20 {
		msg.Metadata.Set("k"+strconv.Itoa(i), strings.Repeat("v", i))
	}
	msg.Metadata.Set("str8", strings.Repeat("x", 200))
	msg.Metadata.Set("str16", strings.Repeat("y", 70_000))
	msg.Metadata.Set(strings.Repeat("long key ", 5), "")

	fields, err := redisbus.DefaultStreamsMarshaler{}.Marshal("topic", msg)
	require.NoError(t, err)
	got, err := redisbus.DefaultStreamsMarshaler{}.Unmarshal("topic", entryValues(t, fields))
	require.NoError(t, err)
	assert.Equal(t, msg.UUID, got.UUID)
	assert.Equal(t, msg.Payload, got.Payload)
	assert.Equal(t, msg.Metadata, got.Metadata)
}

func TestStreamsMarshalerRejectsWhatItCannotRead(t *testing.T) {
	for name, values := range map[string]map[string]any{
		"no payload":          {"uuid": "x"},
		"metadata not a map":  {"payload": "p", "metadata": "\xa1k"},
		"metadata cut short":  {"payload": "p", "metadata": "\x81\xa1k"},
		"metadata with bytes": {"payload": "p", "metadata": "\x80junk"},
		"metadata int value":  {"payload": "p", "metadata": "\x81\xa1k\x01"},
	} {
		_, err := redisbus.DefaultStreamsMarshaler{}.Unmarshal("topic", values)
		assert.Error(t, err, name)
	}
	// A nil MessagePack map is no metadata.
	msg, err := redisbus.DefaultStreamsMarshaler{}.Unmarshal("topic", map[string]any{"payload": "p", "metadata": "\xc0"})
	require.NoError(t, err)
	assert.Empty(t, msg.Metadata)
}

// FuzzStreamsUnmarshal checks that no metadata bytes crash the decoder, and
// that whatever decodes encodes back to the same metadata.
func FuzzStreamsUnmarshal(f *testing.F) {
	f.Add([]byte("\x82\xa1a\xa11\xa1b\xd9\x012"))
	f.Add([]byte("\xde\x00\x01\xa1k\xc4\x01v"))
	f.Add([]byte("\xc0"))
	f.Fuzz(func(t *testing.T, metadata []byte) {
		msg, err := redisbus.DefaultStreamsMarshaler{}.Unmarshal("topic", map[string]any{"payload": "p", "metadata": string(metadata)})
		if err != nil {
			return
		}
		fields, err := redisbus.DefaultStreamsMarshaler{}.Marshal("topic", msg)
		if err != nil {
			t.Fatal(err)
		}
		again, err := redisbus.DefaultStreamsMarshaler{}.Unmarshal("topic", entryValues(t, fields))
		if err != nil {
			t.Fatalf("re-encoded metadata does not decode: %v", err)
		}
		if len(again.Metadata) != len(msg.Metadata) {
			t.Fatalf("metadata changed: %v -> %v", msg.Metadata, again.Metadata)
		}
		for k, v := range msg.Metadata {
			if again.Metadata[k] != v {
				t.Fatalf("metadata %q changed: %q -> %q", k, v, again.Metadata[k])
			}
		}
	})
}
