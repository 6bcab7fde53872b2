package redisbus_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/pubsubtest"
)

// patientSubscribe is a SubscribeTimeout longer than any test waits: an
// error that comes back says what Redis said, not that time ran out.
const patientSubscribe = time.Minute

// channelLimitedUser starts a private Redis and returns a client of its
// default user and one of an ACL user "app" that may use only the channels
// matching app:*.
func channelLimitedUser(t *testing.T) (admin, app *redis.Client) {
	t.Helper()
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	admin = server.Client(t)
	require.NoError(t, admin.Do(t.Context(), "ACL", "SETUSER", "app", "on", ">app-pw", "resetchannels", "&app:*", "~*", "+@all").Err())
	app = redis.NewClient(&redis.Options{Addr: server.Addr, Username: "app", Password: "app-pw"})
	t.Cleanup(func() { _ = app.Close() })
	return admin, app
}

// An ACL user limited to some channels subscribes to one it may not: that
// Subscribe fails at once with Redis' NOPERM, and the topics it may
// subscribe keep working, across reconnections too.
func TestForbiddenTopicDoesNotSilenceTheOthers(t *testing.T) {
	admin, app := channelLimitedUser(t)

	logger := pubsubtest.NewRecordingLogger()
	reconnects := make(chan redisbus.LossWindow, 10)
	sub := newSubscriber(t, redisbus.SubscriberConfig{
		Client: app, SubscribeTimeout: patientSubscribe,
		OnReconnect: func(w redisbus.LossWindow) { reconnects <- w },
	}, logger)
	pub := newPublisher(t, redisbus.PublisherConfig{Client: admin})
	news, err := sub.Subscribe(t.Context(), "app:news")
	require.NoError(t, err)

	_, err = sub.Subscribe(t.Context(), "other:news")
	require.ErrorContains(t, err, "NOPERM")
	assert.Equal(t, uint64(1), sub.Stats().Refused)
	assert.Empty(t, logger.Find(watermill.ErrorLogLevel, "connection lost"), "a refusal is not a lost connection")

	publish(t, pub, "app:news", "still here")
	assert.Equal(t, []string{"still here"}, receive(t, news, 1))

	// A reconnection subscribes app:news again and leaves other:news out.
	require.NoError(t, admin.Do(t.Context(), "CLIENT", "KILL", "USER", "app").Err())
	select {
	case <-reconnects:
	case <-time.After(waitTimeout):
		t.Fatal("the subscription did not come back")
	}
	publish(t, pub, "app:news", "after the reconnection")
	assert.Equal(t, []string{"after the reconnection"}, receive(t, news, 1))

	// Asking again gets the same answer, at once.
	_, err = sub.Subscribe(t.Context(), "other:news")
	require.ErrorContains(t, err, "NOPERM")
}

// Several topics refused at once, among allowed ones subscribed after a
// reconnection in one batch: each refused one is told apart.
func TestRefusedTopicsAmongManyAfterAReconnect(t *testing.T) {
	admin, app := channelLimitedUser(t)
	reconnects := make(chan redisbus.LossWindow, 10)
	sub := newSubscriber(t, redisbus.SubscriberConfig{
		Client: app, SubscribeTimeout: patientSubscribe,
		OnReconnect: func(w redisbus.LossWindow) { reconnects <- w },
	}, nil)
	pub := newPublisher(t, redisbus.PublisherConfig{Client: admin})
	topics := []string{"app:1", "app:2", "app:3", "app:4"}
	channels := map[string]<-chan *message.Message{}
	for _, topic := range topics {
		ch, err := sub.Subscribe(t.Context(), topic)
		require.NoError(t, err)
		channels[topic] = ch
	}
	// The user loses app:2 and app:4 while connected; the next reconnection
	// finds out.
	require.NoError(t, admin.Do(t.Context(), "ACL", "SETUSER", "app", "resetchannels", "&app:1", "&app:3").Err())
	require.NoError(t, admin.Do(t.Context(), "CLIENT", "KILL", "USER", "app").Err())
	select {
	case <-reconnects:
	case <-time.After(waitTimeout):
		t.Fatal("the subscription did not come back")
	}
	for _, topic := range []string{"app:1", "app:3"} {
		publish(t, pub, topic, "to "+topic)
		assert.Equal(t, []string{"to " + topic}, receive(t, channels[topic], 1))
	}
	for _, topic := range []string{"app:2", "app:4"} {
		select {
		case _, open := <-channels[topic]:
			assert.False(t, open, "a refused topic's Subscribe channel closes")
		case <-time.After(waitTimeout):
			t.Fatalf("%s's channel stayed open", topic)
		}
	}
	assert.Equal(t, uint64(2), sub.Stats().Refused)
}

// A wrong password is what Subscribe says, at once.
func TestSubscribeWithAWrongPasswordSaysSo(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	require.NoError(t, server.Client(t).Do(t.Context(), "ACL", "SETUSER", "app", "on", ">right", "allchannels", "~*", "+@all").Err())
	wrong := redis.NewClient(&redis.Options{Addr: server.Addr, Username: "app", Password: "wrong"})
	t.Cleanup(func() { _ = wrong.Close() })
	sub := newSubscriber(t, redisbus.SubscriberConfig{Client: wrong, SubscribeTimeout: patientSubscribe}, nil)
	_, err := sub.Subscribe(t.Context(), "app:news")
	require.ErrorContains(t, err, "WRONGPASS")
}

// A database the server does not have is what Subscribe says, at once.
func TestSubscribeToAMissingDatabaseSaysSo(t *testing.T) {
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{})
	missing := redis.NewClient(&redis.Options{Addr: server.Addr, DB: 99})
	t.Cleanup(func() { _ = missing.Close() })
	sub := newSubscriber(t, redisbus.SubscriberConfig{Client: missing, SubscribeTimeout: patientSubscribe}, nil)
	start := time.Now()
	_, err := sub.Subscribe(t.Context(), "news")
	require.ErrorContains(t, err, "DB index is out of range")
	assert.Less(t, time.Since(start), patientSubscribe/2, "it failed at once, not after SubscribeTimeout")
}

// A server certificate the client does not trust is what Subscribe says,
// at once.
func TestSubscribeToAnUntrustedServerSaysSo(t *testing.T) {
	files := selfSignedCertificate(t)
	server := pubsubtest.StartServer(t, pubsubtest.ServerOptions{TLS: &files})
	client := redis.NewClient(&redis.Options{Addr: server.Addr, TLSConfig: &tls.Config{ServerName: "127.0.0.1"}})
	t.Cleanup(func() { _ = client.Close() })
	sub := newSubscriber(t, redisbus.SubscriberConfig{Client: client, SubscribeTimeout: patientSubscribe}, nil)
	_, err := sub.Subscribe(t.Context(), "news")
	require.ErrorContains(t, err, "certificate")
}

// selfSignedCertificate writes a certificate for 127.0.0.1 that nobody
// trusts, and its key.
func selfSignedCertificate(t *testing.T) pubsubtest.TLSFiles {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	template := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "redisbus test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	dir := t.TempDir()
	files := pubsubtest.TLSFiles{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
	require.NoError(t, os.WriteFile(files.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(files.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	return files
}
