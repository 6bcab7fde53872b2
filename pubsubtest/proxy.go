package pubsubtest

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
)

// Proxy is a TCP proxy in front of a server that can make its open
// connections go silent, as a network partition or a dead load balancer
// does: nothing is closed and no error is seen, data just stops arriving.
type Proxy struct {
	listener net.Listener
	target   string

	mu     sync.Mutex
	links  []*proxyLink
	closed bool
	wg     sync.WaitGroup
}

type proxyLink struct {
	client, server net.Conn
	frozen         atomic.Bool
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
		link := &proxyLink{client: client, server: server}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = client.Close()
			_ = server.Close()
			return
		}
		p.links = append(p.links, link)
		p.wg.Go(func() { link.pipe(server, client) })
		p.wg.Go(func() { link.pipe(client, server) })
		p.mu.Unlock()
	}
}

// pipe copies from src to dst until either side closes; once frozen it
// swallows what it reads.
func (l *proxyLink) pipe(dst, src net.Conn) {
	defer func() {
		_ = dst.Close()
		_ = src.Close()
	}()
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 && !l.frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
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
