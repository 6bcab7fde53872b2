package pubsubtest

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Proxy is a TCP proxy in front of a server that can make its open
// connections go silent, as a network partition or a dead load balancer
// does (nothing is closed and no error is seen, data just stops arriving),
// and delay the server's replies, as a slow server does.
type Proxy struct {
	listener net.Listener
	target   string

	blackhole  atomic.Bool  // every connection, open or new, is frozen
	replyDelay atomic.Int64 // nanoseconds, for new connections: DelayReplies

	mu     sync.Mutex
	links  []*proxyLink
	closed bool
	wg     sync.WaitGroup
}

type proxyLink struct {
	proxy          *Proxy
	client, server net.Conn
	frozen         atomic.Bool
	replyDelay     atomic.Int64 // nanoseconds
}

// NewProxy starts a proxy to target on a free loopback port, closed when t
// ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pubsubtest: proxy: %v", err)
	}
	p := &Proxy{listener: l, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// Addr is the address clients connect to.
func (p *Proxy) Addr() string { return p.listener.Addr().String() }

// DelayOpenConnections holds back everything the server sends on the
// connections open now by d; zero stops delaying. New connections are
// served at once, as when one connection's replies are stuck behind a slow
// command or a congested path. Requests are not delayed, so the server
// runs a command at once and its reply is late, which is what a client's
// read timeout cannot tell from a lost command.
func (p *Proxy) DelayOpenConnections(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, link := range p.links {
		link.replyDelay.Store(int64(d))
	}
}

// DelayReplies holds back everything the server sends by d, on every
// connection, open and new, as a distant or loaded server does; zero stops
// delaying.
func (p *Proxy) DelayReplies(d time.Duration) {
	p.mu.Lock()
	p.replyDelay.Store(int64(d))
	p.mu.Unlock()
	p.DelayOpenConnections(d)
}

// Blackhole freezes every connection, open and new: new ones are accepted
// and then hear nothing, as behind a partition.
func (p *Proxy) Blackhole() {
	p.blackhole.Store(true)
	p.FreezeOpenConnections()
}

// Heal ends a Blackhole: new connections are served again. The
// connections frozen so far stay frozen, as connections broken by a
// partition stay broken: a client must notice and connect again.
func (p *Proxy) Heal() {
	p.blackhole.Store(false)
}

// FreezeOpenConnections stops forwarding on every connection open now, in
// both directions, without closing them. New connections work normally.
func (p *Proxy) FreezeOpenConnections() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, link := range p.links {
		link.frozen.Store(true)
	}
}

func (p *Proxy) accept() {
	for {
		client, err := p.listener.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		link := &proxyLink{proxy: p, client: client, server: server}
		link.frozen.Store(p.blackhole.Load())
		p.mu.Lock()
		link.replyDelay.Store(p.replyDelay.Load()) // under mu, to see DelayReplies' every call
		if p.closed {
			p.mu.Unlock()
			_ = client.Close()
			_ = server.Close()
			return
		}
		p.links = append(p.links, link)
		p.wg.Go(func() { link.pipe(server, client, nil) })
		p.wg.Go(func() { link.pipe(client, server, &link.replyDelay) })
		p.mu.Unlock()
	}
}

// pipe copies from src to dst until either side closes, holding each chunk
// back by delay when set; once frozen it swallows what it reads.
func (l *proxyLink) pipe(dst, src net.Conn, delay *atomic.Int64) {
	type chunk struct {
		data []byte
		due  time.Time
	}
	// The writer keeps each chunk's own due time, so a delay holds every
	// reply back by the same amount instead of adding up.
	chunks := make(chan chunk, 1024)
	var writer sync.WaitGroup
	writer.Go(func() {
		defer func() { _ = dst.Close() }()
		failed := false
		for c := range chunks { // drained to the end, so the reader never blocks
			if failed || l.frozen.Load() {
				continue
			}
			time.Sleep(time.Until(c.due))
			if _, err := dst.Write(c.data); err != nil {
				failed = true
				_ = src.Close()
			}
		}
	})
	defer func() {
		close(chunks)
		writer.Wait()
		_ = src.Close()
	}()
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 && !l.frozen.Load() {
			c := chunk{data: append([]byte(nil), buf[:n]...), due: time.Now()}
			if delay != nil {
				c.due = c.due.Add(time.Duration(delay.Load()))
			}
			chunks <- c
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) close() {
	p.mu.Lock()
	p.closed = true
	_ = p.listener.Close()
	for _, link := range p.links {
		_ = link.client.Close()
		_ = link.server.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// ClientFor returns a client of the server at addr, closed when t ends.
func ClientFor(t testing.TB, addr string) *redis.Client {
	client := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = client.Close() })
	return client
}
