package redisbus_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
)

// Decoding hostile bytes may allocate at most maxCostPerByte times their
// size, plus maxCostFixed: what MaxMetadataPairs map entries cost.
const (
	maxCostPerByte = 3
	maxCostFixed   = 1 << 20
)

// allocated reports the bytes f allocates.
func allocated(f func()) uint64 {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func checkCost(t *testing.T, name string, size int, f func()) {
	t.Helper()
	if got := allocated(f); got > uint64(maxCostPerByte*size+maxCostFixed) {
		t.Errorf("%s: %d bytes of input allocated %d MiB (%.1f× its size; %d× + 1 MiB allowed)",
			name, size, got>>20, float64(got)/float64(size), maxCostPerByte)
	}
}

// hostileEnvelopes are 8 MiB envelopes built to make a decoder allocate:
// a pair count as large as the bytes allow, of pairs that are all the
// same key, of pairs that are not there, and of many distinct short keys.
func hostileEnvelopes() map[string][]byte {
	const size = 8 << 20
	header := func(pairs uint32) []byte {
		b := []byte{0xC1, 'R', 'B', 0x01, 0, 0, 0, 0}
		return binary.BigEndian.AppendUint32(b, pairs)
	}
	sameKey := append(header(size/8), make([]byte, size)...)
	missing := append(header(size/8), make([]byte, size/2)...) // claims twice what follows
	distinct := header(0)
	n := uint32(0)
	for len(distinct) < size {
		distinct = binary.BigEndian.AppendUint32(distinct, 4)
		distinct = binary.BigEndian.AppendUint32(distinct, n)
		distinct = binary.BigEndian.AppendUint32(distinct, 0)
		n++
	}
	binary.BigEndian.PutUint32(distinct[8:], n)
	return map[string][]byte{"one key repeated": sameKey, "pairs missing": missing, "distinct keys": distinct}
}

func TestHostileEnvelopesCostAFewTimesTheirSize(t *testing.T) {
	for name, data := range hostileEnvelopes() {
		checkCost(t, name, len(data), func() {
			if _, err := (redisbus.EnvelopeMarshaler{}).Unmarshal("t", data); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// msgpackMap writes a MessagePack map header claiming n pairs.
func msgpackMap(n uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{0xdf}, n)
}

func TestHostileStreamsMetadataCostsAFewTimesItsSize(t *testing.T) {
	const size = 8 << 20
	empty := append(msgpackMap(size/2), bytes.Repeat([]byte{0xa0}, size)...) // "" → "" over and over
	missing := append(msgpackMap(size/2), bytes.Repeat([]byte{0xa0}, size/2)...)
	var distinct []byte
	n := uint32(0)
	for len(distinct) < size {
		key := fmt.Sprintf("%x", n)
		distinct = append(append(distinct, 0xa0|byte(len(key))), key...)
		distinct = append(distinct, 0xa0)
		n++
	}
	distinct = append(msgpackMap(n), distinct...)
	for name, metadata := range map[string][]byte{"one key repeated": empty, "pairs missing": missing, "distinct keys": distinct} {
		values := map[string]any{redisbus.StreamsFieldPayload: "x", redisbus.StreamsFieldMetadata: string(metadata)}
		checkCost(t, name, len(metadata), func() {
			_, _ = (redisbus.DefaultStreamsMarshaler{}).Unmarshal("t", values)
		})
	}
}

// A message may carry MaxMetadataPairs pairs; a publisher refuses one with
// more, and a receiver gets one with more from another producer raw
// (Pub/Sub) or as an undecodable entry (Streams), never lost.
func TestMetadataPairsLimit(t *testing.T) {
	atLimit := message.NewMessage("id", []byte("p"))
	for i := range redisbus.MaxMetadataPairs {
		atLimit.Metadata.Set(fmt.Sprint(i), "v")
	}
	data, err := redisbus.EnvelopeMarshaler{}.Marshal("t", atLimit)
	require.NoError(t, err)
	got, err := redisbus.EnvelopeMarshaler{}.Unmarshal("t", data)
	require.NoError(t, err)
	assert.Equal(t, atLimit.Metadata, got.Metadata)
	fields, err := redisbus.DefaultStreamsMarshaler{}.Marshal("t", atLimit)
	require.NoError(t, err)
	values := map[string]any{}
	for i := 0; i < len(fields); i += 2 {
		values[fields[i].(string)] = fmt.Sprintf("%s", fields[i+1])
	}
	got, err = redisbus.DefaultStreamsMarshaler{}.Unmarshal("t", values)
	require.NoError(t, err)
	assert.Equal(t, atLimit.Metadata, got.Metadata)

	over := atLimit.Copy()
	over.Metadata.Set("one-more", "v")
	_, err = redisbus.EnvelopeMarshaler{}.Marshal("t", over)
	assert.ErrorContains(t, err, "MaxMetadataPairs")
	_, err = redisbus.DefaultStreamsMarshaler{}.Marshal("t", over)
	assert.ErrorContains(t, err, "MaxMetadataPairs")

	// Written by another producer: delivered raw, every byte kept.
	delete(over.Metadata, "one-more")
	data, _ = redisbus.EnvelopeMarshaler{}.Marshal("t", over)
	binary.BigEndian.PutUint32(data[4+4+len("id"):], redisbus.MaxMetadataPairs+1)
	data = append(data[:len(data)-1:len(data)-1], 0, 0, 0, 0, 0, 0, 0, 0, 'p')
	got, err = redisbus.EnvelopeMarshaler{}.Unmarshal("t", data)
	require.NoError(t, err)
	assert.Equal(t, data, []byte(got.Payload))
}
