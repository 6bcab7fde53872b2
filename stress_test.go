//go:build stress

package redisbus_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// Run with: go test -tags stress -run Stress -timeout 30m .
func TestPubSubStress(t *testing.T) {
	pubsubtest.RunStress(t, pubSubFeatures,
		func(t *testing.T) (message.Publisher, message.Subscriber) { return newPubSub(t, false) },
		nil)
}
