package redisbus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// Marshaler turns Watermill messages into Redis payloads and back.
//
// Unmarshal should not fail on payloads it does not recognise: another
// program may publish to the same channel. When it does return an error, the
// Subscriber still delivers the bytes as a raw message (see
// MetadataDecodeError) rather than dropping them.
type Marshaler interface {
	Marshal(topic string, msg *message.Message) ([]byte, error)
	Unmarshal(topic string, data []byte) (*message.Message, error)
}

// MetadataDecodeError is the metadata key the Subscriber sets on a message
// whose payload its Marshaler could not decode. The message carries the
// undecoded bytes as its payload and a fresh UUID.
const MetadataDecodeError = "redisbus_decode_error"

// envelopeMagic opens every envelope. 0xC1 never occurs in UTF-8 text, so a
// plain string or JSON payload from another producer is never mistaken for
// an envelope; the last byte is the format version.
var envelopeMagic = [4]byte{0xC1, 'R', 'B', 0x01}

// EnvelopeMarshaler is the default Marshaler. It writes a compact binary
// envelope that carries the UUID, the metadata and the payload byte for byte:
//
//	magic     4 bytes   C1 52 42 01 ("\xC1RB" and format version 1)
//	uuid      uint32 big-endian length, then that many bytes
//	metadata  uint32 big-endian pair count, then for each pair:
//	          uint32 length + key bytes, uint32 length + value bytes
//	payload   every remaining byte (may be empty)
//
// Metadata keys are written in sorted order, so equal messages encode to
// equal bytes.
//
// Unmarshal never fails. Data that does not start with the magic bytes, or
// does not parse to its last byte, is not an envelope: it is delivered as a
// message whose payload is exactly that data, with a fresh UUID and no
// metadata. That is how a plain PUBLISH from PHP, Python or redis-cli
// arrives.
type EnvelopeMarshaler struct{}

// Marshal encodes msg as an envelope.
func (EnvelopeMarshaler) Marshal(_ string, msg *message.Message) ([]byte, error) {
	size := len(envelopeMagic) + 4 + len(msg.UUID) + 4 + len(msg.Payload)
	for k, v := range msg.Metadata {
		size += 8 + len(k) + len(v)
	}
	if len(msg.Metadata) > MaxMetadataPairs {
		return nil, errTooManyPairs
	}
	// Below 4 GiB in all, every length fits its uint32 field.
	if uint64(size) > math.MaxUint32 {
		return nil, errors.New("redisbus: message too large for an envelope (4 GiB or more)")
	}

	buf := make([]byte, 0, size)
	buf = append(buf, envelopeMagic[:]...)
	buf = appendString(buf, msg.UUID)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(msg.Metadata)))
	if len(msg.Metadata) == 1 {
		for k, v := range msg.Metadata {
			buf = appendString(appendString(buf, k), v)
		}
	} else if len(msg.Metadata) > 1 {
		for _, k := range slices.Sorted(maps.Keys(msg.Metadata)) {
			buf = appendString(appendString(buf, k), msg.Metadata[k])
		}
	}
	return append(buf, msg.Payload...), nil
}

// Unmarshal decodes an envelope, or wraps data that is not one as a raw
// message. The returned payload shares data's memory.
func (EnvelopeMarshaler) Unmarshal(_ string, data []byte) (*message.Message, error) {
	if msg, ok := decodeEnvelope(data); ok {
		return msg, nil
	}
	return message.NewMessage(watermill.NewUUID(), data), nil
}

func appendString(buf []byte, s string) []byte {
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(s)))
	return append(buf, s...)
}

// decodeEnvelope parses data as an envelope; ok is false when it is not one.
func decodeEnvelope(data []byte) (msg *message.Message, ok bool) {
	if len(data) < len(envelopeMagic) || [4]byte(data[:4]) != envelopeMagic {
		return nil, false
	}
	// A first pass checks the structure and finds where the payload starts,
	// allocating nothing: a pair count that the bytes do not back costs
	// nothing. The second copies the UUID and metadata into one string
	// that every key and value shares, instead of a string per field.
	scan := envelopeReader[[]byte]{rest: data[4:]}
	pairs, ok := scan.header()
	ok = ok && pairs <= MaxMetadataPairs
	for i := uint32(0); ok && i < pairs; i++ {
		_, ok = scan.field()
		if ok {
			_, ok = scan.field()
		}
	}
	if !ok {
		return nil, false
	}
	payloadStart := len(data) - len(scan.rest)

	head := envelopeReader[string]{rest: string(data[4:payloadStart])}
	uuid, _ := head.field()
	head.uint32()
	// The map grows with the pairs read rather than being sized by their
	// count: when every pair repeats one key, a map sized for all of them
	// would cost many times the bytes that claim them.
	metadata := make(message.Metadata, min(pairs, metadataSizeHint))
	for range pairs {
		k, _ := head.field()
		v, _ := head.field()
		metadata[k] = v
	}
	msg = message.NewMessage(uuid, data[payloadStart:])
	msg.Metadata = metadata
	return msg, true
}

// metadataSizeHint is the most pairs a decoder allocates room for before
// reading them: Watermill messages carry a handful.
const metadataSizeHint = 16

// MaxMetadataPairs is the most metadata pairs a message may carry. A Go map
// entry costs some 100 bytes while it grows, and a pair takes as little as
// 2 bytes on the wire: without a limit, a message of tiny distinct keys
// would cost its receiver 20 to 50 times its size. Publishers refuse a
// message with more (Marshal fails); a received one with more is not
// decoded (Pub/Sub delivers it raw, Streams dead-letters it).
const MaxMetadataPairs = 1024

var errTooManyPairs = fmt.Errorf("redisbus: message has more than %d metadata pairs (MaxMetadataPairs)", MaxMetadataPairs)

// envelopeReader reads an envelope's fields from a []byte or a string.
type envelopeReader[T string | []byte] struct{ rest T }

// header reads the UUID and the metadata pair count.
func (r *envelopeReader[T]) header() (pairs uint32, ok bool) {
	if _, ok = r.field(); !ok {
		return 0, false
	}
	return r.uint32()
}

func (r *envelopeReader[T]) uint32() (uint32, bool) {
	if len(r.rest) < 4 {
		return 0, false
	}
	n := uint32(r.rest[0])<<24 | uint32(r.rest[1])<<16 | uint32(r.rest[2])<<8 | uint32(r.rest[3])
	r.rest = r.rest[4:]
	return n, true
}

// field reads a length-prefixed field; the result shares r's memory.
func (r *envelopeReader[T]) field() (T, bool) {
	var zero T
	n, ok := r.uint32()
	if !ok || uint64(n) > uint64(len(r.rest)) {
		return zero, false
	}
	f := r.rest[:n]
	r.rest = r.rest[n:]
	return f, true
}

// RawMarshaler sends only the payload, for consumers that are not Watermill
// (a PHP or Node subscriber expecting the bare string). The UUID and the
// metadata are not sent; Unmarshal gives every message a fresh UUID.
type RawMarshaler struct{}

// Marshal returns the payload as it is.
func (RawMarshaler) Marshal(_ string, msg *message.Message) ([]byte, error) {
	return msg.Payload, nil
}

// Unmarshal wraps data in a message with a fresh UUID.
func (RawMarshaler) Unmarshal(_ string, data []byte) (*message.Message, error) {
	return message.NewMessage(watermill.NewUUID(), data), nil
}

// rawFallback wraps bytes that a Marshaler refused, so they are delivered
// instead of lost.
func rawFallback(data []byte, err error) *message.Message {
	msg := message.NewMessage(watermill.NewUUID(), data)
	msg.Metadata.Set(MetadataDecodeError, fmt.Sprint(err))
	return msg
}
