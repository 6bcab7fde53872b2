// Package pubsubtest is the test harness of redisbus: it finds or starts the
// Redis the tests talk to and runs Watermill's universal Pub/Sub test suite.
//
// Tests use REDIS_URL when it is set. Otherwise the first test that needs
// Redis starts a private redis-server on a free loopback port, shared by
// the package's tests and stopped by Main. Tests that restart Redis or need
// AOF always get a private server of their own from StartServer. When
// neither REDIS_URL nor redis-server is available the test fails (never
// skips) with a message that says what to install.
package pubsubtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/redisbus/watermill-redisbus/internal/redisurl"
)

// ServerOptions configures a private redis-server.
type ServerOptions struct {
	// AOF turns on the append-only file with fsync on every write, so data
	// acknowledged to a client survives a restart.
	AOF bool
	// AppendFsync, with AOF, sets appendfsync instead of "always":
	// "everysec" or "no". Redis writes every change to the file before it
	// replies, so either still keeps what a killed redis-server process
	// acknowledged; they differ when the machine itself fails.
	AppendFsync string
	// Cluster starts the server in cluster mode (see StartCluster).
	Cluster bool
	// ReplicaOf, a primary's host:port, starts the server as its replica.
	// The replica syncs after it starts: wait for master_link_status:up
	// (INFO replication), or for WAIT on the primary.
	ReplicaOf string
	// TLS, when set, makes the server speak TLS only, with this
	// certificate and key (PEM files); clients are not asked for one.
	TLS *TLSFiles

	// sentinelOf, when set, makes the process a Sentinel watching this
	// primary (see StartSentinels).
	sentinelOf string
}

// TLSFiles are a server's certificate and private key, as PEM files.
type TLSFiles struct {
	CertFile, KeyFile string
}

// Server is a Redis server the tests can reach.
type Server struct {
	// Addr is host:port.
	Addr string
	// URL is a redis:// URL for Addr (with the database REDIS_URL named).
	URL string

	opts     ServerOptions
	external bool // from REDIS_URL: never stopped or restarted
	dir      string
	ownDir   bool // started by NewServer, in a directory of its own
	port     int

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	logTail *tailBuffer
}

var shared struct {
	once   sync.Once
	server *Server
	err    error
}

// Redis returns the Redis server shared by the package's tests: REDIS_URL,
// or a private redis-server started on first use. Tests sharing it must use
// names of their own (see Topic); none may flush or restart it.
func Redis(t testing.TB) *Server {
	t.Helper()
	s, err := sharedServer()
	if err != nil {
		t.Fatalf("pubsubtest: %v", err)
	}
	return s
}

// SharedURL is Redis(t).URL for code without a testing.TB, such as Example
// functions.
func SharedURL() (string, error) {
	s, err := sharedServer()
	if err != nil {
		return "", err
	}
	return s.URL, nil
}

// SharedClient returns a new client of the shared Redis (see Redis) for
// code without a testing.TB, such as Example functions. The caller closes
// it.
func SharedClient() (*redis.Client, error) {
	s, err := sharedServer()
	if err != nil {
		return nil, err
	}
	opt, err := redisurl.Parse(s.URL)
	if err != nil {
		return nil, err
	}
	return redis.NewClient(opt), nil
}

func sharedServer() (*Server, error) {
	shared.once.Do(func() {
		if url := os.Getenv("REDIS_URL"); url != "" {
			opt, err := redisurl.Parse(url)
			if err != nil {
				shared.err = err
				return
			}
			shared.server = &Server{Addr: opt.Addr, URL: url, external: true}
			return
		}
		shared.server, shared.err = startServer(ServerOptions{}, "")
	})
	return shared.server, shared.err
}

// NewClient returns a client of the shared Redis, closed when t ends.
func NewClient(t testing.TB) *redis.Client {
	t.Helper()
	return Redis(t).Client(t)
}

// StartServer starts a private redis-server for t, stopped when t ends.
// Use it for tests that restart or stop Redis.
func StartServer(t testing.TB, opts ServerOptions) *Server {
	t.Helper()
	s, err := startServer(opts, t.TempDir())
	if err != nil {
		t.Fatalf("pubsubtest: %v", err)
	}
	t.Cleanup(s.stop)
	return s
}

// NewServer is StartServer for code without a testing.TB, such as the
// benchmark: the caller stops the server with Close.
func NewServer(opts ServerOptions) (*Server, error) {
	dir, err := os.MkdirTemp("", "redisbus-server-")
	if err != nil {
		return nil, err
	}
	s, err := startServer(opts, dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("pubsubtest: %w", err)
	}
	s.ownDir = true
	return s, nil
}

// Close stops a server NewServer started and removes its directory. It
// does nothing to other servers: the shared one is StopShared's to stop,
// and StartServer's stop with their test.
func (s *Server) Close() {
	if !s.ownDir {
		return
	}
	s.stop()
	_ = os.RemoveAll(s.dir)
}

// Main runs the tests and then stops the shared server. Call it from
// TestMain: func TestMain(m *testing.M) { pubsubtest.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	StopShared()
	os.Exit(code)
}

// StopShared stops the shared server if this process started it.
func StopShared() {
	if shared.server != nil && !shared.server.external {
		shared.server.stop()
		_ = os.RemoveAll(shared.server.dir)
	}
}

// Topic returns a name no other test uses, for topics, streams and groups.
func Topic(t testing.TB) string {
	name := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	return name + "-" + uuid.NewString()[:8]
}

// Client returns a client of s, closed when t ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	opt, err := redisurl.Parse(s.URL)
	if err != nil {
		t.Fatalf("pubsubtest: %v", err)
	}
	client := redis.NewClient(opt)
	t.Cleanup(func() { _ = client.Close() })
	return client
}

const installHint = "redis-server is not on PATH and REDIS_URL is not set: " +
	"install Redis (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) " +
	"or point REDIS_URL at one, e.g. REDIS_URL=redis://127.0.0.1:6379/0"

func startServer(opts ServerOptions, dir string) (*Server, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, fmt.Errorf("%s", installHint)
	}
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "redisbus-test-"); err != nil {
			return nil, err
		}
	}
	// A free port can be taken by someone else before redis-server binds
	// it; try a few.
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s := &Server{
			Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			URL:  fmt.Sprintf("%s://127.0.0.1:%d/0", map[bool]string{false: "redis", true: "rediss"}[opts.TLS != nil], port),
			opts: opts,
			dir:  dir,
			port: port,
		}
		if lastErr = s.start(); lastErr == nil {
			return s, nil
		}
	}
	return nil, lastErr
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) args() []string {
	if s.opts.sentinelOf != "" {
		return s.sentinelArgs()
	}
	appendonly, fsync := "no", "always"
	if s.opts.AOF {
		appendonly = "yes"
	}
	if s.opts.AppendFsync != "" {
		fsync = s.opts.AppendFsync
	}
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--appendonly", appendonly,
		"--appendfsync", fsync,
		"--daemonize", "no",
		"--logfile", "",
		"--enable-debug-command", "local",
	}
	if s.opts.TLS != nil {
		args[1] = "0" // no plain port
		args = append(args,
			"--tls-port", strconv.Itoa(s.port),
			"--tls-cert-file", s.opts.TLS.CertFile,
			"--tls-key-file", s.opts.TLS.KeyFile,
			"--tls-auth-clients", "no")
	}
	if s.opts.ReplicaOf != "" {
		host, port, _ := net.SplitHostPort(s.opts.ReplicaOf)
		args = append(args, "--replicaof", host, port)
	}
	if s.opts.Cluster {
		args = append(args,
			"--cluster-enabled", "yes",
			"--cluster-config-file", fmt.Sprintf("nodes-%d.conf", s.port),
			"--cluster-node-timeout", "5000")
	}
	return args
}

// start launches redis-server and returns when it accepts connections.
func (s *Server) start() error {
	// DEBUG RESTART re-executes the binary by its path, which must be
	// absolute.
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return fmt.Errorf("%s", installHint)
	}
	cmd := exec.Command(bin, s.args()...)
	// If the test binary dies, the server goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}

	tail := &tailBuffer{}
	ready := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		scanner := bufio.NewScanner(stdout)
		signalled := false
		for scanner.Scan() {
			tail.add(scanner.Text())
			if !signalled && strings.Contains(scanner.Text(), s.readyLine()) {
				signalled = true
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		close(exited)
	}()

	select {
	case <-ready:
	case <-exited:
		return fmt.Errorf("redis-server exited on start:\n%s", tail)
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("redis-server did not start within 15s:\n%s", tail)
	}
	s.mu.Lock()
	s.cmd, s.exited, s.logTail = cmd, exited, tail
	s.mu.Unlock()
	return nil
}

// Kill stops the server abruptly (SIGKILL), as a crash would. With AOF on,
// every write it acknowledged is on disk.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	s.mustBePrivate(t)
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// Start starts a killed server again on the same port and data directory.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	s.mustBePrivate(t)
	if err := s.start(); err != nil {
		t.Fatalf("pubsubtest: restart redis-server: %v", err)
	}
}

// Restart kills the server and starts it again.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Kill(t)
	s.Start(t)
}

// RestartCommand is a shell command that restarts the server in place and
// returns once it answers again, for Watermill's
// tests.Features.RestartServiceCommand. DEBUG RESTART keeps the process, its
// port and, with AOF, its data; redis-cli reports the connection it loses
// as an error, so the command checks PING instead.
func (s *Server) RestartCommand() []string {
	port := strconv.Itoa(s.port)
	script := "redis-cli -p " + port + " DEBUG RESTART >/dev/null 2>&1; " +
		"for i in $(seq 300); do redis-cli -p " + port + " PING 2>/dev/null | grep -q PONG && exit 0; sleep 0.05; done; exit 1"
	return []string{"sh", "-c", script}
}

// Log returns the last lines the server printed.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logTail == nil {
		return ""
	}
	return s.logTail.String()
}

func (s *Server) mustBePrivate(t testing.TB) {
	if s.external {
		t.Fatalf("pubsubtest: the shared server (REDIS_URL) cannot be stopped; use StartServer")
	}
}

func (s *Server) stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	if s.opts.TLS != nil { // no client here trusts its certificate
		_ = cmd.Process.Kill()
		<-exited
		return
	}
	// SHUTDOWN NOSAVE is quick and clean; SIGKILL if the server does not go.
	client := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = client.ShutdownNoSave(ctx).Err()
	cancel()
	_ = client.Close()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// tailBuffer keeps the last lines of a server's log for error messages.
type tailBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (b *tailBuffer) add(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, line)
	if len(b.lines) > 50 {
		b.lines = b.lines[len(b.lines)-50:]
	}
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}
