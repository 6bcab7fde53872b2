package main

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// startTail runs `redisbus tail` with args and returns once it says it is
// tailing; wait returns the lines it printed and its exit code.
func (e *env) startTail(args ...string) (wait func() ([]string, int)) {
	wait, _ = e.startTailProcess(args...)
	return wait
}

func (e *env) startTailProcess(args ...string) (wait func() ([]string, int), process *os.Process) {
	e.t.Helper()
	cmd := exec.Command(binary, append([]string{"--redis", e.url, "tail"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	require.NoError(e.t, err)
	stderr, err := cmd.StderrPipe()
	require.NoError(e.t, err)
	require.NoError(e.t, cmd.Start())
	e.t.Cleanup(func() { _ = cmd.Process.Kill() })
	first, err := bufio.NewReader(stderr).ReadString('\n')
	require.NoError(e.t, err)
	require.Contains(e.t, first, "Tailing")
	return func() ([]string, int) {
		lines := []string{}
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			lines = append(lines, scanner.Text())
		}
		_ = cmd.Wait()
		return lines, cmd.ProcessState.ExitCode()
	}, cmd.Process
}

func TestTailEndsOnInterruptWithExitCode0(t *testing.T) {
	e := newEnv(t)
	e.xadd("orders", "payload", "x")
	for _, args := range [][]string{{"orders"}, {"news", "--pubsub"}, {"news", "--sharded"}} {
		wait, process := e.startTailProcess(args...)
		require.NoError(t, process.Signal(os.Interrupt))
		lines, code := wait()
		assert.Equal(t, 0, code, "%v", args)
		assert.Empty(t, lines)
	}
}

func TestTailStreamDecodesNewEntries(t *testing.T) {
	e := newEnv(t)
	e.xadd("orders", "payload", "before")
	wait := e.startTail("orders", "--json", "--count", "2")

	pub, err := redisbus.NewStreamsPublisher(redisbus.StreamsPublisherConfig{Client: e.client}, watermill.NopLogger{})
	require.NoError(t, err)
	defer pub.Close()
	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"id":7}`))
	msg.Metadata.Set("tenant", "acme")
	require.NoError(t, pub.Publish("orders", msg))
	foreign := e.xadd("orders", "payload", "\xff\x00", "source", "php")

	lines, code := wait()
	assert.Equal(t, 0, code)
	require.Len(t, lines, 2)
	var got []TailMessage
	for _, line := range lines {
		var m TailMessage
		require.NoError(t, json.Unmarshal([]byte(line), &m), line)
		got = append(got, m)
	}
	assert.Equal(t, "orders", got[0].Stream)
	assert.Equal(t, msg.UUID, got[0].UUID)
	assert.Equal(t, map[string]string{"tenant": "acme"}, got[0].Metadata)
	assert.Equal(t, `{"id":7}`, *got[0].Payload)
	assert.Equal(t, foreign, got[1].ID)
	assert.Equal(t, map[string]string{"source": "php"}, got[1].Metadata, "other fields are metadata")
	assert.Nil(t, got[1].Payload)
	assert.Equal(t, "/wA=", got[1].PayloadBase64, "binary payloads in base64")

	wait = e.startTail("orders", "--from", "0", "--count", "1")
	lines, code = wait()
	assert.Equal(t, 0, code)
	require.Len(t, lines, 1)
	assert.True(t, strings.HasSuffix(lines[0], "  before"), lines[0])
}

func TestTailPubSubDecodesEnvelopesAndRawPayloads(t *testing.T) {
	e := newEnv(t)
	wait := e.startTail("news", "--pubsub", "--count", "2")

	pub, err := redisbus.NewPublisher(redisbus.PublisherConfig{Client: e.client}, watermill.NopLogger{})
	require.NoError(t, err)
	defer pub.Close()
	msg := message.NewMessage(watermill.NewUUID(), []byte("hello"))
	msg.Metadata.Set("lang", "en")
	require.NoError(t, pub.Publish("news", msg))
	require.NoError(t, e.client.Publish(t.Context(), "news", "plain text").Err())

	lines, code := wait()
	assert.Equal(t, 0, code)
	require.Len(t, lines, 2)
	assert.Regexp(t, `^\d\d:\d\d:\d\d\.\d{3}  uuid=`+msg.UUID+`  lang="en"  hello$`, lines[0])
	assert.Regexp(t, `^\d\d:\d\d:\d\d\.\d{3}  uuid=[0-9a-f-]{36}  plain text$`, lines[1], "raw, with a fresh UUID, as a Subscriber gets it")
}

func TestTailPubSubSaysWhenItReconnectedAndMayHaveMissedMessages(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	e := &env{t: t, url: server.URL, client: server.Client(t)}
	cmd := exec.Command(binary, "--redis", e.url, "tail", "news", "--pubsub", "--count", "1")
	var stderr pubsubtest.SyncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	require.Eventually(t, func() bool { return strings.Contains(stderr.String(), "Tailing") }, 10*time.Second, 10*time.Millisecond)

	server.Restart(t)
	require.Eventually(t, func() bool { return strings.Contains(stderr.String(), "reconnected to Redis") }, 15*time.Second, 10*time.Millisecond,
		"stderr: %s", stderr.String())
	assert.Regexp(t, `redisbus: reconnected to Redis; messages published between \d\d:\d\d:\d\d\.\d{3} and \d\d:\d\d:\d\d\.\d{3}, if any, were missed`, stderr.String())

	require.NoError(t, e.client.Publish(t.Context(), "news", "after").Err())
	out, err := io.ReadAll(stdout)
	require.NoError(t, err)
	require.NoError(t, cmd.Wait(), stderr.String())
	assert.Contains(t, string(out), "after", "it tails on")
}
