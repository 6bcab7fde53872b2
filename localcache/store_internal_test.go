package localcache

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func testEntry(key string, cost int, tags ...string) *entry[string] {
	return &entry[string]{key: key, value: "v:" + key, tags: tags, cost: cost, expires: never}
}

func TestClockSparesWhatWasReadSinceTheHandPassed(t *testing.T) {
	s := newStore[string](3, -1)
	for _, key := range []string{"a", "b", "c"} {
		s.put(testEntry(key, 1), 0)
	}
	_, ok := s.lookup("a", 0)
	require.True(t, ok)

	evicted, expired := s.put(testEntry("d", 1), 0)
	assert.Equal(t, 1, evicted)
	assert.Equal(t, 0, expired)
	_, aKept := s.entries["a"]
	_, bKept := s.entries["b"]
	assert.True(t, aKept, "a was read: it keeps its place")
	assert.False(t, bKept, "b is the oldest not read")
	assert.Equal(t, 3, s.len())

	// a lost its bit as the hand passed: it goes next, unless read again.
	_, ok = s.lookup("c", 0)
	require.True(t, ok)
	s.put(testEntry("e", 1), 0)
	_, aKept = s.entries["a"]
	assert.False(t, aKept)
	assert.ElementsMatch(t, []string{"c", "d", "e"}, keys(s))
}

func TestStoreKeepsWithinMaxBytes(t *testing.T) {
	s := newStore[string](100, 250)
	for i := range 10 {
		s.put(testEntry(fmt.Sprint(i), 100), 0)
		assert.LessOrEqual(t, s.bytes, 250)
		assert.LessOrEqual(t, s.len(), 2)
	}
	assert.True(t, s.fits(250))
	assert.False(t, s.fits(251), "an entry larger than MaxBytes is never stored")
	assert.False(t, newStore[string](0, -1).fits(1), "MaxEntries 0 stores nothing")
}

func TestExpiredEntriesAreNotServedAndGoFirst(t *testing.T) {
	s := newStore[string](2, -1)
	short := testEntry("short", 1)
	short.expires = 10
	s.put(short, 0)
	s.put(testEntry("long", 1), 0)
	_, ok := s.lookup("short", 9)
	assert.True(t, ok)
	_, ok = s.lookup("short", 10)
	assert.False(t, ok, "served at its expiry")

	// short was read (bit set), long was not: expired goes first anyway.
	evicted, expired := s.put(testEntry("new", 1), 10)
	assert.Equal(t, 0, evicted)
	assert.Equal(t, 1, expired)
	assert.ElementsMatch(t, []string{"long", "new"}, keys(s))
	assert.False(t, s.removeExpired("long", 1000), "long has no TTL")
	soon := testEntry("soon", 1)
	soon.expires = 20
	s.put(soon, 10)
	assert.False(t, s.removeExpired("soon", 19))
	assert.True(t, s.removeExpired("soon", 20))
}

func TestTagAndPrefixRemovalKeepTheIndexExact(t *testing.T) {
	s := newStore[string](10, -1)
	s.put(testEntry("product:1", 1, "category:7", "brand:x"), 0)
	s.put(testEntry("product:2", 1, "category:7"), 0)
	s.put(testEntry("product:3", 1, "category:8", "brand:x"), 0)
	s.put(testEntry("user:1", 1), 0)

	assert.Equal(t, 2, s.removeTag("category:7"))
	assert.ElementsMatch(t, []string{"product:3", "user:1"}, keys(s))
	assert.NotContains(t, s.tags, "category:7")
	assert.Len(t, s.tags["brand:x"], 1, "product:1 left brand:x's set")

	assert.Equal(t, 1, s.removePrefix("product:"))
	assert.Empty(t, s.tags, "no tag is left on any entry")
	assert.Equal(t, 1, s.removePrefix(""))
	assert.Zero(t, s.len())
	assert.Zero(t, s.bytes)

	// Replacing an entry drops its old tags.
	s.put(testEntry("k", 1, "old"), 0)
	s.put(testEntry("k", 1, "new"), 0)
	assert.Zero(t, s.removeTag("old"))
	assert.Equal(t, 1, s.removeTag("new"))
}

func keys(s *store[string]) []string {
	var out []string
	for k := range s.entries {
		out = append(out, k)
	}
	return out
}

func TestWireFormatRoundTrips(t *testing.T) {
	for _, inv := range []invalidation{
		{kind: kindKey, name: "product:42"},
		{kind: kindKey, name: ""},
		{kind: kindPrefix, name: "product:"},
		{kind: kindTag, name: "category:7"},
		{kind: kindAll},
		{kind: kindSync, name: "3"},
		{kind: kindKey, name: "tag:not-a-tag"},
	} {
		got, ok := parse(inv.encode())
		require.True(t, ok, "%+v", inv)
		assert.Equal(t, inv, got)
	}
	for _, payload := range []string{"", "al", "ALL", "keys:x", "hello", "\xc1RB\x01"} {
		_, ok := parse([]byte(payload))
		assert.False(t, ok, "%q", payload)
	}
}

func TestInvalidationLogFindsTheFirstCoverSinceALoadBegan(t *testing.T) {
	var l invalidationLog
	l.add(record{seq: 1, invalidation: invalidation{kind: kindKey, name: "a"}})
	l.add(record{seq: 2, invalidation: invalidation{kind: kindTag, name: "t"}})
	l.add(record{seq: 3, invalidation: invalidation{kind: kindPrefix, name: "b"}})
	assert.Equal(t, uint64(1), l.firstCover(0, "a", nil))
	assert.Zero(t, l.firstCover(1, "a", nil), "before the load began")
	assert.Equal(t, uint64(2), l.firstCover(0, "z", []string{"t"}))
	assert.Equal(t, uint64(3), l.firstCover(0, "bz", nil))
	assert.Zero(t, l.firstCover(0, "z", []string{"u"}))
}

func TestInvalidationLogIsBoundedAndConservative(t *testing.T) {
	var l invalidationLog
	for seq := uint64(1); seq <= logRecords+10; seq++ {
		l.add(record{seq: seq, invalidation: invalidation{kind: kindKey, name: "k"}})
	}
	assert.Equal(t, logRecords, l.n)
	assert.Equal(t, uint64(10), l.floor)
	assert.Equal(t, uint64(5), l.firstCover(4, "other", nil),
		"a load older than the log cannot be vouched for")
	assert.Zero(t, l.firstCover(10, "other", nil))

	// Bytes: a few large names push the old ones out.
	big := strings.Repeat("x", logBytes/4)
	for seq := uint64(100); seq < 110; seq++ {
		l.add(record{seq: seq, invalidation: invalidation{kind: kindKey, name: big}})
		assert.LessOrEqual(t, l.bytes, logBytes)
	}
	assert.Equal(t, 4, l.n)

	// A name larger than the whole log is kept as "all".
	l.add(record{seq: 200, invalidation: invalidation{kind: kindKey, name: strings.Repeat("y", logBytes+1)}})
	assert.Equal(t, uint64(200), l.firstCover(199, "anything", nil))
	assert.LessOrEqual(t, l.bytes, logBytes)
}
