package redisbus

import (
	"encoding/binary"
	"errors"
	"maps"
	"slices"

	"github.com/ThreeDotsLabs/watermill/message"
)

// The metadata field of watermill-redisstream entries is a MessagePack map
// of strings. These two functions read and write exactly that much of
// MessagePack, so entries move between the two libraries in both directions
// without a MessagePack dependency.

var errMsgpack = errors.New("metadata is not a MessagePack map of strings")

// encodeMsgpackMetadata encodes metadata as a MessagePack map, keys sorted.
func encodeMsgpackMetadata(md message.Metadata) []byte {
	size := 5
	for k, v := range md {
		size += 10 + len(k) + len(v)
	}
	buf := make([]byte, 0, size)
	switch n := len(md); {
	case n < 16:
		buf = append(buf, 0x80|byte(n))
	case n <= 0xffff:
		buf = binary.BigEndian.AppendUint16(append(buf, 0xde), uint16(n))
	default:
		buf = binary.BigEndian.AppendUint32(append(buf, 0xdf), uint32(n))
	}
	for _, k := range slices.Sorted(maps.Keys(md)) {
		buf = appendMsgpackString(appendMsgpackString(buf, k), md[k])
	}
	return buf
}

func appendMsgpackString(buf []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		buf = append(buf, 0xa0|byte(n))
	case n <= 0xff:
		buf = append(buf, 0xd9, byte(n))
	case n <= 0xffff:
		buf = binary.BigEndian.AppendUint16(append(buf, 0xda), uint16(n))
	default:
		buf = binary.BigEndian.AppendUint32(append(buf, 0xdb), uint32(n))
	}
	return append(buf, s...)
}

// decodeMsgpackMetadata decodes a MessagePack map whose keys and values are
// strings (or binary, or nil for an empty map), and nothing after it.
func decodeMsgpackMetadata(data []byte) (message.Metadata, error) {
	r := msgpackReader{rest: data}
	n, ok := r.mapLen()
	// Each pair takes at least two bytes; a larger count is corrupt.
	if !ok || n > len(r.rest)/2 {
		return nil, errMsgpack
	}
	if n > MaxMetadataPairs {
		return nil, errTooManyPairs
	}
	md := make(message.Metadata, min(n, metadataSizeHint)) // see decodeEnvelope
	for range n {
		k, ok1 := r.str()
		v, ok2 := r.str()
		if !ok1 || !ok2 {
			return nil, errMsgpack
		}
		md[k] = v
	}
	if len(r.rest) != 0 {
		return nil, errMsgpack
	}
	return md, nil
}

type msgpackReader struct{ rest []byte }

func (r *msgpackReader) take(n int) ([]byte, bool) {
	if n < 0 || n > len(r.rest) {
		return nil, false
	}
	b := r.rest[:n]
	r.rest = r.rest[n:]
	return b, true
}

func (r *msgpackReader) length(size int) (int, bool) {
	b, ok := r.take(size)
	if !ok {
		return 0, false
	}
	switch size {
	case 1:
		return int(b[0]), true
	case 2:
		return int(binary.BigEndian.Uint16(b)), true
	default:
		return int(binary.BigEndian.Uint32(b)), true
	}
}

func (r *msgpackReader) mapLen() (int, bool) {
	b, ok := r.take(1)
	if !ok {
		return 0, false
	}
	switch t := b[0]; {
	case t&0xf0 == 0x80:
		return int(t & 0x0f), true
	case t == 0xc0: // nil
		return 0, true
	case t == 0xde:
		return r.length(2)
	case t == 0xdf:
		return r.length(4)
	}
	return 0, false
}

func (r *msgpackReader) str() (string, bool) {
	b, ok := r.take(1)
	if !ok {
		return "", false
	}
	var n int
	switch t := b[0]; {
	case t&0xe0 == 0xa0:
		n = int(t & 0x1f)
	case t == 0xd9 || t == 0xc4:
		n, ok = r.length(1)
	case t == 0xda || t == 0xc5:
		n, ok = r.length(2)
	case t == 0xdb || t == 0xc6:
		n, ok = r.length(4)
	default:
		return "", false
	}
	if !ok {
		return "", false
	}
	s, ok := r.take(n)
	return string(s), ok
}
