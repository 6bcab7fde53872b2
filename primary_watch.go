package redisbus

import (
	"context"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

// primaryCheckInterval is how often a Subscriber or StreamsSubscriber on a
// Sentinel failover client checks where the primary is: each check asks a
// Sentinel and opens (and closes) a connection to the primary.
const primaryCheckInterval = time.Second

// primaryWatch notices when the primary behind a Sentinel failover client
// (redis.NewFailoverClient, or NewUniversalClient with MasterName) changes.
//
// go-redis moves the client's pooled connections to the new primary when
// Sentinel announces it, but not its Pub/Sub connections, nor those of
// the client a StreamsSubscriber derives from it for blocking reads. After
// a graceful failover (SENTINEL FAILOVER) the old primary stays a primary,
// answering PINGs, until Sentinel turns it into a replica about ten
// seconds later: subscriptions on it hear nothing published on the new
// one, and reads on it see no new entries, with no error to tell. The
// watch asks, as the client's own dialer does, where the primary is now.
type primaryWatch struct {
	dial          func(ctx context.Context, network, addr string) (net.Conn, error)
	network, addr string
	timeout       time.Duration
}

// newPrimaryWatch returns a watch of client's primary, or nil when client
// is not a Sentinel failover client.
func newPrimaryWatch(client redis.UniversalClient) *primaryWatch {
	c, ok := client.(*redis.Client)
	if !ok {
		return nil
	}
	opt := c.Options()
	if opt.Addr != "FailoverClient" || opt.Dialer == nil { // go-redis' mark of a failover client's options
		return nil
	}
	return &primaryWatch{dial: opt.Dialer, network: opt.Network, addr: opt.Addr, timeout: opt.DialTimeout}
}

// primary returns the address of the primary the client dials now: the
// failover client's dialer asks a Sentinel, then connects there. The
// connection is closed at once, before any command.
func (w *primaryWatch) primary(ctx context.Context) (string, error) {
	if w.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, w.timeout)
		defer cancel()
	}
	conn, err := w.dial(ctx, w.network, w.addr)
	if err != nil {
		return "", err
	}
	addr := conn.RemoteAddr().String()
	_ = conn.Close()
	return addr, nil
}

// run checks the primary every interval until done is closed, and calls
// moved when it changed since the last check, with the time of that check:
// since then, connections made before may be on the old primary.
func (w *primaryWatch) run(done <-chan struct{}, interval time.Duration, moved func(since time.Time)) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-done
		cancel()
	}()
	var last string
	lastChecked := time.Now()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		checked := time.Now()
		if addr, err := w.primary(ctx); err == nil { // no answer: the connections' own errors tell
			if last != "" && addr != last {
				moved(lastChecked)
			}
			last, lastChecked = addr, checked
		}
		select {
		case <-done:
			return
		case <-ticker.C:
		}
	}
}
