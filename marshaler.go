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
	r := envelopeReader{rest: data[4:]}
	uuid, ok := r.string()
	if !ok {
		return nil, false
	}
	pairs, ok := r.uint32()
	// Every pair takes at least 8 bytes: a count larger than that is corrupt,
	// and checking it first keeps garbage from allocating a huge map.
	if !ok || uint64(pairs) > uint64(len(r.rest))/8 {
		return nil, false
	}
	metadata := make(message.Metadata, pairs)
	for range pairs {
		k, ok1 := r.string()
		v, ok2 := r.string()
		if !ok1 || !ok2 {
			return nil, false
		}
		metadata[k] = v
	}
	msg = message.NewMessage(uuid, r.rest)
	msg.Metadata = metadata
	return msg, true
}

type envelopeReader struct{ rest []byte }

func (r *envelopeReader) uint32() (uint32, bool) {
	if len(r.rest) < 4 {
		return 0, false
	}
	n := binary.BigEndian.Uint32(r.rest)
	r.rest = r.rest[4:]
	return n, true
}

func (r *envelopeReader) string() (string, bool) {
	n, ok := r.uint32()
	if !ok || uint64(n) > uint64(len(r.rest)) {
		return "", false
	}
	s := string(r.rest[:n])
	r.rest = r.rest[n:]
	return s, true
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
