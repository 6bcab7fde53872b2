package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTyposAndBadArgumentsAreNotMistakenForSuccess(t *testing.T) {
	e := newEnv(t)
	e.deadLetters("orders", 2)
	e.readGroup("orders", "audit", "a1", 1)
	empty := e.xadd("quiet:dead", "payload", "x")
	require.NoError(t, e.client.XDel(t.Context(), "quiet:dead", empty).Err()) // exists, and is empty

	for _, c := range []struct {
		args []string
		code int
		says string
	}{
		// Neither the topic nor its dead letters exist.
		{[]string{"dead", "odrers"}, exitNotFound, `no such stream: neither "odrers" nor its dead-letter stream "odrers:dead" exists`},
		{[]string{"purge", "nosuchtopic", "--all", "--yes"}, exitNotFound, "no such stream"},
		{[]string{"replay", "nosuchtopic", "--all"}, exitNotFound, "no such stream"},
		// IDs that are not there.
		{[]string{"purge", "orders", "1-0", "--yes"}, exitFailure, "1 of the IDs given are not dead letters in orders:dead"},
		{[]string{"claim", "orders", "audit", "--to", "a2", "9999999999999-0"}, exitFailure, "1 of the IDs given were not claimed"},
		{[]string{"replay", "orders", "1-0"}, exitFailure, "1 of the IDs given are not dead letters"},
		// IDs that are not IDs.
		{[]string{"claim", "orders", "audit", "--to", "x", "bogusid"}, exitUsage, `"bogusid" is not a stream entry ID`},
		{[]string{"purge", "orders", "notanid", "--yes"}, exitUsage, `"notanid" is not a stream entry ID`},
		{[]string{"replay", "orders", "notanid"}, exitUsage, `"notanid" is not a stream entry ID`},
		{[]string{"dead", "orders", "1-x"}, exitUsage, `"1-x" is not a stream entry ID`},
		// Counts below 1.
		{[]string{"dead", "orders", "--limit", "-1"}, exitUsage, "--limit must be at least 1"},
		{[]string{"dead", "orders", "--limit", "0"}, exitUsage, "--limit must be at least 1"},
		{[]string{"streams", "--limit", "0"}, exitUsage, "--limit must be at least 1"},
		{[]string{"stream", "orders", "--last", "-5"}, exitUsage, "--last must be at least 1"},
		{[]string{"pending", "orders", "audit", "--limit", "0"}, exitUsage, "--limit must be at least 1"},
	} {
		r := e.run("", c.args...)
		assert.Equal(t, c.code, r.code, "%v: %s", c.args, r.stderr)
		assert.Contains(t, r.stderr, c.says, "%v", c.args)
	}
	assert.EqualValues(t, 2, e.client.XLen(t.Context(), "orders:dead").Val(), "nothing deleted or replayed")

	r := e.run("", "dead", "quiet")
	assert.Equal(t, 0, r.code, "an empty dead-letter stream: %s", r.stderr)
	assert.Contains(t, r.stdout+r.stderr, "no dead letters in quiet:dead")

	var purged map[string]any
	r = e.run("", "purge", "orders", "1-0", "--yes", "--json")
	require.Equal(t, exitFailure, r.code, r.stderr)
	require.NoError(t, jsonUnmarshal(r.stdout, &purged))
	assert.Equal(t, []any{"1-0"}, purged["missing"])
}

func TestInvalidURLsNameTheirSource(t *testing.T) {
	r := runConsole(t, "", "--redis", "notaurl", "streams")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "--redis notaurl is not a valid Redis URL")

	cmd := exec.Command(binary, "streams")
	cmd.Env = append(os.Environ(), "REDIS_URL=notaurl")
	out, err := cmd.CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), "REDIS_URL notaurl is not a valid Redis URL")
}

func TestARedisThatCannotBeUsedExitsWith3(t *testing.T) {
	e := newEnv(t)
	r := runConsole(t, "", "--redis", strings.TrimSuffix(e.url, "/0")+"/99", "streams")
	assert.Equal(t, exitUnreachable, r.code, r.stderr)
	assert.Contains(t, r.stderr, "cannot use Redis at ")

	// An HTTP server on the port.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_, _ = bufio.NewReader(conn).ReadString('\n')
				_, _ = conn.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
			}()
		}
	}()
	r = runConsole(t, "", "--redis", "redis://"+l.Addr().String(), "streams")
	assert.Equal(t, exitUnreachable, r.code, r.stderr)
	assert.Contains(t, r.stderr, "Redis at "+l.Addr().String())
}

func TestJSONSaysWhatHappened(t *testing.T) {
	e := newEnv(t)
	e.xadd("orders", "payload", "x")
	assert.Equal(t, "[]\n", e.ok("streams", "--match", "zzz*", "--json"))

	// A dead letter that no redisbus publisher wrote: it has no UUID.
	e.xadd("orders:dead", "payload", "x", "redisbus_origin_stream", "orders")
	var letters []DeadLetter
	e.okJSON(&letters, "dead", "orders")
	require.Len(t, letters, 1)
	assert.Empty(t, letters[0].Message.UUID, "not a made-up one")
	assert.Contains(t, e.ok("dead", "orders"), " - ")
}

func TestReplayChecksWhereTheDeadLettersGoFirst(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.deadLetters("orders", 2)

	var r ReplayResult
	res := e.run("", "replay", "orders", "--all", "--to", "orders-retry", "--dry-run", "--json")
	require.Equal(t, 0, res.code, res.stderr)
	require.NoError(t, jsonUnmarshal(res.stdout, &r))
	assert.Equal(t, []string{"orders-retry does not exist: the replay creates it, and no consumer group reads it"}, r.Warnings)
	assert.Contains(t, res.stderr, "redisbus: warning: orders-retry does not exist")

	e.xadd("orders-retry", "payload", "x")
	res = e.run("", "replay", "orders", "--all", "--to", "orders-retry")
	require.Equal(t, 0, res.code, res.stderr)
	assert.Contains(t, res.stderr, "orders-retry has no consumer group: nothing will consume the replayed entries")
	assert.EqualValues(t, 3, e.client.XLen(ctx, "orders-retry").Val())

	// A dead letter whose origin is not a stream: nothing moves, not even
	// the others.
	e.deadLetters("invoices", 2)
	require.NoError(t, e.client.Set(ctx, "config", "1", 0).Err())
	e.xadd("invoices:dead", "payload", "x", "redisbus_origin_stream", "config")
	res = e.run("", "replay", "invoices", "--all")
	assert.Equal(t, exitNotFound, res.code, res.stderr)
	assert.Contains(t, res.stderr, `dead letters of invoices:dead go to "config", which is a string, not a stream: nothing was replayed`)
	assert.EqualValues(t, 3, e.client.XLen(ctx, "invoices:dead").Val())
}

func TestCommandsThatChangeDataSayWhenTheyUseTheDefaultRedis(t *testing.T) {
	// Nothing is written: the topic does not exist, wherever the default
	// Redis is (or is not).
	r := runConsole(t, "", "purge", "redisbus-console-test-no-such-topic", "--all", "--yes")
	assert.NotEqual(t, 0, r.code)
	assert.Contains(t, r.stderr, "redisbus: using Redis at 127.0.0.1:6379 (default; set REDIS_URL or --redis)")

	e := newEnv(t)
	r = e.run("", "purge", "nothing", "--all", "--yes")
	assert.NotContains(t, r.stderr, "using Redis at", "a Redis that was named")
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
