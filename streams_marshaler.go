package redisbus

import (
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// StreamsMarshaler turns messages into stream entry fields and back.
type StreamsMarshaler interface {
	// Marshal returns the entry's fields as XADD takes them: name, value,
	// name, value...
	Marshal(topic string, msg *message.Message) ([]any, error)
	// Unmarshal decodes an entry read from the stream. An error sends the
	// entry to the dead-letter stream.
	Unmarshal(topic string, values map[string]any) (*message.Message, error)
}

// Stream entry fields of DefaultStreamsMarshaler. They are the fields
// watermill-redisstream uses, so both libraries read each other's entries.
const (
	StreamsFieldUUID     = "_watermill_message_uuid"
	StreamsFieldMetadata = "metadata"
	StreamsFieldPayload  = "payload"
)

// DefaultStreamsMarshaler writes three fields per entry:
//
//	_watermill_message_uuid  the message UUID
//	metadata                 the metadata as a MessagePack map of strings ("" when empty)
//	payload                  the payload bytes
//
// This is watermill-redisstream's layout, so entries written by either
// library are read by the other. Unmarshal also accepts the plain entries
// other languages write: only payload is required; without a UUID the
// message gets a fresh one, and any field besides the three becomes
// metadata (XADD orders * payload '{"id":42}' source php).
type DefaultStreamsMarshaler struct{}

// Marshal encodes msg as entry fields.
func (DefaultStreamsMarshaler) Marshal(_ string, msg *message.Message) ([]any, error) {
	if len(msg.Metadata) > MaxMetadataPairs {
		return nil, errTooManyPairs
	}
	var metadata []byte
	if len(msg.Metadata) > 0 {
		metadata = encodeMsgpackMetadata(msg.Metadata)
	}
	return []any{
		StreamsFieldUUID, msg.UUID,
		StreamsFieldMetadata, metadata,
		StreamsFieldPayload, []byte(msg.Payload),
	}, nil
}

var errNoPayload = errors.New(`entry has no "payload" field`)

// Unmarshal decodes entry fields.
func (DefaultStreamsMarshaler) Unmarshal(_ string, values map[string]any) (*message.Message, error) {
	payload, ok := fieldBytes(values[StreamsFieldPayload])
	if !ok {
		return nil, errNoPayload
	}
	uuid, _ := values[StreamsFieldUUID].(string)
	if uuid == "" {
		uuid = watermill.NewUUID()
	}
	msg := message.NewMessage(uuid, payload)
	if raw, _ := fieldBytes(values[StreamsFieldMetadata]); len(raw) > 0 {
		md, err := decodeMsgpackMetadata(raw)
		if err != nil {
			return nil, err
		}
		msg.Metadata = md
	}
	if len(values) > MaxMetadataPairs+3 { // extra fields become metadata
		return nil, errTooManyPairs
	}
	for k, v := range values {
		switch k {
		case StreamsFieldUUID, StreamsFieldMetadata, StreamsFieldPayload:
			continue
		}
		if _, taken := msg.Metadata[k]; !taken {
			msg.Metadata[k] = fmt.Sprint(v)
		}
	}
	return msg, nil
}

// fieldBytes reads a field value as go-redis returns it (a string).
func fieldBytes(v any) ([]byte, bool) {
	switch v := v.(type) {
	case string:
		return []byte(v), true
	case []byte:
		return v, true
	}
	return nil, false
}
