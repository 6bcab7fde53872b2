package pubsubtest

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
)

// RunUniversal runs Watermill's universal Pub/Sub test suite
// (tests.TestPubSub). Every Publisher and Subscriber the constructors create
// is closed when its test ends, as a user's would be, so a suite run leaves
// no goroutines behind; Close must therefore be idempotent.
func RunUniversal(
	t *testing.T,
	features tests.Features,
	constructor tests.PubSubConstructor,
	groupConstructor tests.ConsumerGroupPubSubConstructor,
) {
	tests.TestPubSub(t, features, closing(constructor), closingGroup(groupConstructor))
}

// RunStress runs Watermill's stress variant of the suite
// (tests.TestPubSubStressTest): the suite ten times in parallel, or
// STRESS_TEST_COUNT times.
func RunStress(
	t *testing.T,
	features tests.Features,
	constructor tests.PubSubConstructor,
	groupConstructor tests.ConsumerGroupPubSubConstructor,
) {
	tests.TestPubSubStressTest(t, features, closing(constructor), closingGroup(groupConstructor))
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
