package redisbus

import (
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"sync"
)

// leaseKey is where the lease on a consumer name lives (see lua/lease.lua).
// It is in the stream's hash slot, so that one script can check the lease
// and the stream's pending entries together on Redis Cluster. The group's
// length keeps "g:x" + "c" apart from "g" + "x:c".
func leaseKey(stream, group, consumer string) string {
	return sameSlotPrefix(stream) + ":redisbus:consumer:" + strconv.Itoa(len(group)) + ":" + group + ":" + consumer
}

// maxDedupUUID is the longest message UUID that a dedup mark's key holds
// as it is; a longer one is hashed, so that a hostile UUID cannot make the
// keys big. Watermill's UUIDs have 36 bytes.
const maxDedupUUID = 128

// dedupKey is where StreamsPublisher.PublishOnce marks a message it stored
// (see lua/xadd_once.lua): in the stream's hash slot, so that one script
// can read the mark and write both on Redis Cluster.
func dedupKey(stream, uuid string) string {
	if len(uuid) > maxDedupUUID {
		sum := sha256.Sum256([]byte(uuid))
		uuid = "sha256:" + base64.RawURLEncoding.EncodeToString(sum[:])
	}
	return sameSlotPrefix(stream) + ":redisbus:dedup:" + uuid
}

// sameSlotPrefix returns a key prefix that Redis Cluster puts in the same
// hash slot as stream: the stream itself when it has a hash tag, the stream
// in braces when that makes it its own tag, and otherwise (a name with "}"
// but no tag) a short tag found to hash to the stream's slot.
func sameSlotPrefix(stream string) string {
	if hashTag(stream) != stream {
		return stream // "{orders}:eu" and everything after it share "orders"
	}
	if stream != "" && !strings.Contains(stream, "}") {
		return "{" + stream + "}"
	}
	return "{" + tagForSlot(hashSlot(stream)) + "}"
}

// hashTag returns the part of key that Redis Cluster hashes: the first
// non-empty {…} section, or the whole key.
func hashTag(key string) string {
	start := strings.IndexByte(key, '{')
	if start < 0 {
		return key
	}
	end := strings.IndexByte(key[start+1:], '}')
	if end <= 0 {
		return key
	}
	return key[start+1 : start+1+end]
}

func hashSlot(key string) uint16 { return crc16(hashTag(key)) % 16384 }

var slotTags sync.Map // slot → tag

// tagForSlot finds a short string that hashes to slot.
func tagForSlot(slot uint16) string {
	if tag, ok := slotTags.Load(slot); ok {
		return tag.(string)
	}
	for i := 0; ; i++ {
		tag := strconv.Itoa(i)
		if crc16(tag)%16384 == slot {
			slotTags.Store(slot, tag)
			return tag
		}
	}
}

// crc16 is CRC-16/XMODEM, the checksum Redis Cluster assigns slots by.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
