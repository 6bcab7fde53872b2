package redisbus_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
)

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

func TestEnvelopeRoundTripIsByteExact(t *testing.T) {
	cases := map[string]*message.Message{
		"empty payload":  message.NewMessage("id-1", nil),
		"binary":         message.NewMessage("id-2", []byte{0, 0xC1, 'R', 'B', 1, 0xff, 0}),
		"unicode":        message.NewMessage("ключ-🔑", []byte("zażółć gęślą jaźń — 日本語 🚀")),
		"large (8 MiB)":  message.NewMessage("id-3", randomBytes(t, 8<<20)),
		"empty uuid":     message.NewMessage("", []byte("x")),
		"nested payload": message.NewMessage("id-4", mustMarshal(t, message.NewMessage("inner", []byte("p")))),
	}
	withMetadata := message.NewMessage("id-5", []byte("payload"))
	withMetadata.Metadata.Set("", "empty key")
	withMetadata.Metadata.Set("empty value", "")
	withMetadata.Metadata.Set("unicode ✓", "wartość ✓")
	withMetadata.Metadata.Set("binary", "\x00\xff\xC1")
	cases["metadata"] = withMetadata

	for name, msg := range cases {
		t.Run(name, func(t *testing.T) {
			data := mustMarshal(t, msg)
			got, err := redisbus.EnvelopeMarshaler{}.Unmarshal("topic", data)
			require.NoError(t, err)
			assert.Equal(t, msg.UUID, got.UUID)
			assert.True(t, bytes.Equal(msg.Payload, got.Payload), "payload differs")
			assert.Equal(t, len(msg.Metadata), len(got.Metadata))
			for k, v := range msg.Metadata {
				assert.Equal(t, v, got.Metadata[k], k)
			}
		})
	}
}

func mustMarshal(t *testing.T, msg *message.Message) []byte {
	data, err := redisbus.EnvelopeMarshaler{}.Marshal("topic", msg)
	require.NoError(t, err)
	return data
}

func TestEnvelopeEncodingIsDeterministic(t *testing.T) {
	msg := message.NewMessage("id", []byte("p"))
	for _, k := range []string{"e", "d", "c", "b", "a"} {
		msg.Metadata.Set(k, k+k)
	}
	first := mustMarshal(t, msg)
	for range 20 {
		assert.Equal(t, first, mustMarshal(t, msg))
	}
}

func TestEnvelopeWireFormatAsDocumented(t *testing.T) {
	// The layout README.md documents for producers in other languages.
	msg := message.NewMessage("u1", []byte("hello"))
	msg.Metadata.Set("k", "v")

	var want []byte
	want = append(want, 0xC1, 'R', 'B', 0x01)
	want = binary.BigEndian.AppendUint32(want, 2)
	want = append(want, "u1"...)
	want = binary.BigEndian.AppendUint32(want, 1)
	want = binary.BigEndian.AppendUint32(want, 1)
	want = append(want, "k"...)
	want = binary.BigEndian.AppendUint32(want, 1)
	want = append(want, "v"...)
	want = append(want, "hello"...)

	assert.Equal(t, want, mustMarshal(t, msg))
}

func TestNonEnvelopesAreDeliveredRaw(t *testing.T) {
	valid := mustMarshal(t, message.NewMessage("u", []byte("payload")))
	for name, data := range map[string][]byte{
		"plain text":       []byte("hi from anywhere"),
		"json":             []byte(`{"uuid":"x","payload":"y"}`),
		"empty":            {},
		"magic only":       {0xC1, 'R', 'B', 0x01},
		"other version":    append([]byte{0xC1, 'R', 'B', 0x02}, valid[4:]...),
		"truncated":        valid[:9],
		"huge uuid length": {0xC1, 'R', 'B', 0x01, 0xff, 0xff, 0xff, 0xff, 'x'},
		"huge pair count":  {0xC1, 'R', 'B', 0x01, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff},
	} {
		t.Run(name, func(t *testing.T) {
			first, err := redisbus.EnvelopeMarshaler{}.Unmarshal("topic", data)
			require.NoError(t, err)
			second, err := redisbus.EnvelopeMarshaler{}.Unmarshal("topic", data)
			require.NoError(t, err)
			assert.Equal(t, string(data), string(first.Payload))
			assert.Empty(t, first.Metadata)
			assert.NotEmpty(t, first.UUID)
			assert.NotEqual(t, first.UUID, second.UUID, "each raw message gets a fresh UUID")
		})
	}
}

func TestRawMarshalerSendsThePayloadOnly(t *testing.T) {
	msg := message.NewMessage("u", []byte("bare"))
	msg.Metadata.Set("dropped", "yes")
	data, err := redisbus.RawMarshaler{}.Marshal("topic", msg)
	require.NoError(t, err)
	assert.Equal(t, []byte("bare"), data)

	got, err := redisbus.RawMarshaler{}.Unmarshal("topic", data)
	require.NoError(t, err)
	assert.Equal(t, []byte("bare"), []byte(got.Payload))
	assert.NotEmpty(t, got.UUID)
}

// FuzzEnvelopeUnmarshal checks that no input crashes the decoder or loses
// bytes: whatever it does not decode comes back whole as the payload, and
// whatever it decodes encodes back to the same bytes when its metadata keys
// were already sorted and unique.
func FuzzEnvelopeUnmarshal(f *testing.F) {
	seed := message.NewMessage("seed", []byte("payload"))
	seed.Metadata.Set("a", "1")
	seed.Metadata.Set("b", "2")
	data, _ := redisbus.EnvelopeMarshaler{}.Marshal("topic", seed)
	f.Add(data)
	f.Add([]byte("hi from anywhere"))
	f.Add([]byte{})
	f.Add([]byte{0xC1, 'R', 'B', 0x01, 0, 0, 0, 0, 0, 0, 0, 0})

	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := redisbus.EnvelopeMarshaler{}.Unmarshal("topic", data)
		if err != nil || msg == nil {
			t.Fatalf("Unmarshal must never fail, got %v", err)
		}
		if bytes.Equal(msg.Payload, data) && len(msg.Metadata) == 0 {
			return // delivered raw (or an envelope whose payload is itself)
		}
		again, err := redisbus.EnvelopeMarshaler{}.Marshal("topic", msg)
		if err != nil {
			t.Fatal(err)
		}
		decoded, _ := redisbus.EnvelopeMarshaler{}.Unmarshal("topic", again)
		if decoded.UUID != msg.UUID || !bytes.Equal(decoded.Payload, msg.Payload) || len(decoded.Metadata) != len(msg.Metadata) {
			t.Fatalf("re-encoding changed the message: %q -> %q", data, again)
		}
		if len(again) > len(data) {
			t.Fatalf("a decoded envelope re-encodes longer than it was: %d > %d", len(again), len(data))
		}
	})
}

// FuzzEnvelopeRoundTrip checks that any message survives the envelope.
func FuzzEnvelopeRoundTrip(f *testing.F) {
	f.Add("uuid", "key", "value", []byte("payload"))
	f.Add("", "", "", []byte{})
	f.Add("ü", "\xC1RB\x01", "\x00", []byte{0xC1, 'R', 'B', 0x01})

	f.Fuzz(func(t *testing.T, uuid, key, value string, payload []byte) {
		msg := message.NewMessage(uuid, payload)
		msg.Metadata.Set(key, value)
		data, err := redisbus.EnvelopeMarshaler{}.Marshal("topic", msg)
		if err != nil {
			t.Fatal(err)
		}
		got, err := redisbus.EnvelopeMarshaler{}.Unmarshal("topic", data)
		if err != nil {
			t.Fatal(err)
		}
		if got.UUID != uuid || !bytes.Equal(got.Payload, payload) || got.Metadata.Get(key) != value || len(got.Metadata) != 1 {
			t.Fatalf("round trip changed %q/%q=%q/%q into %q/%v/%q", uuid, key, value, payload, got.UUID, got.Metadata, got.Payload)
		}
	})
}
