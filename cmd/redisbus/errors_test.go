package main

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestErrorsSayWhatIsWrongWithTheirOwnExitCodes(t *testing.T) {
	e := newEnv(t)
	e.xadd("orders", "payload", "x")
	e.readGroup("orders", "workers", "w1", 1)
	require.NoError(t, e.client.Set(t.Context(), "config", "1", 0).Err())

	for _, c := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"stream", "nothing"}, exitNotFound, `no stream named "nothing"`},
		{[]string{"stream", "config"}, exitNotFound, `"config" is a string, not a stream`},
		{[]string{"pending", "config", "workers"}, exitNotFound, `"config" is a string, not a stream`},
		{[]string{"pending", "orders", "nobody"}, exitNotFound, `stream "orders" has no consumer group "nobody"`},
		{[]string{"claim", "orders", "nobody", "--to", "x", "--min-idle", "1s"}, exitNotFound, `stream "orders" has no consumer group "nobody"`},
		{[]string{"dead", "orders", "--dead-stream", "config"}, exitNotFound, `"config" is a string, not a stream`},
		{[]string{"replay", "orders", "--all", "--dead-stream", "config"}, exitNotFound, `"config" is a string, not a stream`},
		{[]string{"tail", "config"}, exitNotFound, `"config" is a string, not a stream`},
		{[]string{"tail", "nothing"}, exitNotFound, `no stream named "nothing" (for a Pub/Sub channel, add --pubsub)`},
		{[]string{"streams", "extra"}, exitUsage, `unknown command "extra"`},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"dead"}, exitUsage, "requires at least 1 arg"},
		{[]string{"streams", "--no-such-flag"}, exitUsage, "unknown flag: --no-such-flag"},
	} {
		r := e.run("", c.args...)
		assert.Equal(t, c.code, r.code, "%v: %s", c.args, r.stderr)
		assert.Contains(t, r.stderr, c.says, "%v", c.args)
		assert.Empty(t, r.stdout, "%v", c.args)
	}
}

func TestUnreachableRedisExitsWith3(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close()) // nothing listens there now

	r := runConsole(t, "", "--redis", "redis://"+addr+"/0", "streams")
	assert.Equal(t, exitUnreachable, r.code)
	assert.Equal(t, "redisbus: cannot reach Redis at "+addr+": dial tcp "+addr+": connect: connection refused\n", r.stderr)

	r = runConsole(t, "", "--redis", "redis://user:s3cret@"+addr+":notaport/0", "streams")
	assert.Equal(t, exitUsage, r.code, r.stderr)
	assert.NotContains(t, r.stderr, "s3cret", "the password stays out of errors")
}

func TestRedisURLComesFromTheEnvironmentOrDashRedis(t *testing.T) {
	e := newEnv(t)
	e.xadd("orders", "payload", "x")

	cmd := exec.Command(binary, "streams")
	cmd.Env = append(os.Environ(), "REDIS_URL="+e.url)
	out, err := cmd.Output()
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(strings.Split(string(out), "\n")[1], "orders "), string(out))

	r := runConsole(t, "", "-redis", e.url, "streams")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "orders ")
}
