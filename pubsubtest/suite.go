package pubsubtest

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/subscriber"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// universalTests are the tests of Watermill's tests.TestPubSub, in its
// order. TestReconnect runs alone, as there.
var universalTests = []struct {
	name      string
	run       func(*testing.T, tests.TestContext, tests.PubSubConstructor)
	alone     bool
	reconnect bool
}{
	{name: "TestPublishSubscribe", run: tests.TestPublishSubscribe},
	{name: "TestConcurrentSubscribe", run: tests.TestConcurrentSubscribe},
	{name: "TestConcurrentSubscribeMultipleTopics", run: tests.TestConcurrentSubscribeMultipleTopics},
	{name: "TestResendOnError", run: tests.TestResendOnError},
	{name: "TestNoAck", run: tests.TestNoAck},
	{name: "TestContinueAfterSubscribeClose", run: tests.TestContinueAfterSubscribeClose},
	{name: "TestConcurrentClose", run: tests.TestConcurrentClose},
	{name: "TestContinueAfterErrors", run: tests.TestContinueAfterErrors},
	{name: "TestPublishSubscribeInOrder", run: tests.TestPublishSubscribeInOrder},
	{name: "TestPublisherClose", run: tests.TestPublisherClose},
	{name: "TestTopic", run: tests.TestTopic},
	{name: "TestMessageCtx", run: tests.TestMessageCtx},
	{name: "TestSubscribeCtx", run: tests.TestSubscribeCtx},
	{name: "TestNewSubscriberReceivesOldMessages", run: tests.TestNewSubscriberReceivesOldMessages},
	{name: "TestReconnect", run: tests.TestReconnect, alone: true, reconnect: true},
}

// RunUniversal runs Watermill's universal Pub/Sub test suite: every test of
// tests.TestPubSub, through the exported test functions, with the same
// names, parallelism and test contexts. Every Publisher and Subscriber the
// constructors create is closed when its test ends, as a user's would be,
// so a run leaves no goroutines behind; Close must be idempotent.
//
// One substitution: Watermill's TestReconnect appends the published
// messages in one goroutine and reads them in another without
// synchronisation. That is a data race in the test itself, which the race
// detector reports whatever the Pub/Sub does, and which makes it fail now
// and then: it checks the messages received against a list that the last
// published ones have not reached yet ("extra [<uuid>]"), or the other way
// round. RunUniversal runs ReconnectTest instead: the same procedure
// (10,000 messages from 100 publishers, Redis restarted at 1/3 and 1/2)
// with the list guarded and read once every publisher is done.
func RunUniversal(
	t *testing.T,
	features tests.Features,
	constructor tests.PubSubConstructor,
	groupConstructor tests.ConsumerGroupPubSubConstructor,
) {
	runUniversal(t, features, constructor, groupConstructor)
}

func runUniversal(
	t *testing.T,
	features tests.Features,
	constructor tests.PubSubConstructor,
	groupConstructor tests.ConsumerGroupPubSubConstructor,
) {
	constructor, groupConstructor = closing(constructor), closingGroup(groupConstructor)
	for _, test := range universalTests {
		run := test.run
		if test.reconnect {
			run = ReconnectTest
		}
		runTest(t, test.name, features, !test.alone, func(t *testing.T, tCtx tests.TestContext) {
			run(t, tCtx, constructor)
		})
	}
	runTest(t, "TestConsumerGroups", features, true, func(t *testing.T, tCtx tests.TestContext) {
		tests.TestConsumerGroups(t, tCtx, groupConstructor)
	})
}

// RunStress runs the suite ten times in parallel (STRESS_TEST_COUNT times
// when set), as Watermill's tests.TestPubSubStressTest does, with
// ReconnectTest for TestReconnect (see RunUniversal). setup is called once
// per run, so that each run can have a Redis of its own: a run's
// TestReconnect restarts Redis, which the other runs must not see.
func RunStress(
	t *testing.T,
	setup func(t *testing.T) (tests.Features, tests.PubSubConstructor, tests.ConsumerGroupPubSubConstructor),
) {
	count, _ := strconv.Atoi(os.Getenv("STRESS_TEST_COUNT"))
	if count <= 0 {
		count = 10
	}
	for i := range count {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			features, constructor, groupConstructor := setup(t)
			runUniversal(t, features, constructor, groupConstructor)
		})
	}
}

func runTest(t *testing.T, name string, features tests.Features, parallel bool, fn func(*testing.T, tests.TestContext)) {
	t.Run(name, func(t *testing.T) {
		if parallel {
			t.Parallel()
		}
		id := tests.NewTestID()
		t.Run(string(id), func(t *testing.T) {
			fn(t, tests.TestContext{TestID: id, Features: features})
		})
	})
}

// ReconnectTest is Watermill's TestReconnect procedure without its data
// race: 100 publishers send 10,000 messages while Redis is restarted at a
// third and at half of them, and every message whose Publish succeeded must
// be received.
func ReconnectTest(t *testing.T, tCtx tests.TestContext, constructor tests.PubSubConstructor) {
	if len(tCtx.Features.RestartServiceCommand) == 0 {
		t.Skip("no RestartServiceCommand provided, cannot test reconnect") // as tests.TestReconnect
	}
	const messagesCount, publishersCount = 10_000, 100
	pub, sub := constructor(t)
	topic := "topic-" + string(tCtx.TestID)
	if initializer, ok := sub.(message.SubscribeInitializer); ok {
		require.NoError(t, initializer.SubscribeInitialize(topic))
	}
	messages, err := sub.Subscribe(context.Background(), topic)
	require.NoError(t, err)

	var mu sync.Mutex
	var published message.Messages
	var restarts sync.WaitGroup
	turns := make(chan struct{})
	go func() {
		defer close(turns)
		for i := range messagesCount {
			turns <- struct{}{}
			if i == messagesCount/3 || i == messagesCount/2 {
				restarts.Go(func() { restart(t, tCtx.Features.RestartServiceCommand) })
			}
		}
	}()
	var publishers sync.WaitGroup
	for range publishersCount {
		publishers.Go(func() {
			for range turns {
				msg := message.NewMessage(watermill.NewUUID(), nil)
				for pub.Publish(topic, msg) != nil {
					time.Sleep(50 * time.Millisecond) // Redis is restarting
				}
				mu.Lock()
				published = append(published, msg)
				mu.Unlock()
			}
		})
	}

	received, all := subscriber.BulkReadWithDeduplication(messages, messagesCount, 60*time.Second)
	publishers.Wait()
	restarts.Wait()
	assert.True(t, all, "received %d of %d messages", len(received), messagesCount)
	mu.Lock()
	defer mu.Unlock()
	tests.AssertAllMessagesReceived(t, published, received)
}

func restart(t *testing.T, command []string) {
	out, err := exec.Command(command[0], command[1:]...).CombinedOutput()
	if err != nil {
		t.Errorf("restart %v: %v\n%s", command, err, out)
	}
}

func closing(constructor tests.PubSubConstructor) tests.PubSubConstructor {
	return func(t *testing.T) (message.Publisher, message.Subscriber) {
		pub, sub := constructor(t)
		closeAtEnd(t, pub, sub)
		return pub, sub
	}
}

func closingGroup(constructor tests.ConsumerGroupPubSubConstructor) tests.ConsumerGroupPubSubConstructor {
	if constructor == nil {
		return nil
	}
	return func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
		pub, sub := constructor(t, group)
		closeAtEnd(t, pub, sub)
		return pub, sub
	}
}

func closeAtEnd(t *testing.T, pub message.Publisher, sub message.Subscriber) {
	t.Cleanup(func() {
		if err := pub.Close(); err != nil {
			t.Errorf("closing publisher: %v", err)
		}
		if err := sub.Close(); err != nil {
			t.Errorf("closing subscriber: %v", err)
		}
	})
}
